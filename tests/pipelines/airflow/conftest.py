"""Airflow reads its configuration once, when first imported: point it at a private AIRFLOW_HOME
(sqlite, no examples) before any test here imports it, so nothing is written to ~/airflow."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-home")
    saved = {key: os.environ.get(key) for key in ("AIRFLOW_HOME", "AIRFLOW__CORE__LOAD_EXAMPLES")}
    os.environ.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    import airflow  # noqa: F401  (reads the configuration now)

    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
