"""Airflow reads its configuration once, when first imported: point it at a private AIRFLOW_HOME
(sqlite, no examples) before any test here imports it, so nothing is written to ~/airflow."""

import os
from pathlib import Path

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


def failing_dataset_task_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a dataset task that cannot be built (more shots than the source has), its
    store and MLflow under ``tmp_path``: what the task entry point runs with, fresh or forked."""
    from tests.pipelines.local_sweep import DEFAULT
    from vrft.experiment import load_experiment
    from vrft.pipelines.airflow.task import SPEC_ENV, encode_spec, task_spec
    from vrft.pipelines.plan import build_plan

    config = load_experiment(
        DEFAULT,
        [
            "dataset.shots=1000",
            f"pipeline.artifact_root=file://{tmp_path / 'store'}",
            f"pipeline.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
    )
    spec = task_spec(build_plan(config), "shots-1000/dataset", {}, "manual__2026-12-05")
    return {**os.environ, SPEC_ENV: encode_spec(spec), "VRFT_CACHE_DIR": str(tmp_path / "cache")}
