"""A real MLflow store (sqlite + local artifacts in a temporary directory) for the report tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``(tracking_uri, experiment name)``; the experiment's artifacts live in the temporary directory."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    experiment = "vrft-report-test"
    MlflowClient(tracking_uri=uri).create_experiment(
        experiment, artifact_location=(root / "artifacts").as_uri()
    )
    return uri, experiment


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vrft.config import from_dict
    from vrft.data import DatasetConfig, build_dataset

    tmp = tmp_path_factory.mktemp("shapes")
    out = tmp / "dataset"
    config = from_dict(
        DatasetConfig,
        {
            "train": {"kind": "shapes", "path": str(tmp / "src"), "n_images": 24},
            "shots": 2,
            "categories": ["circle", "square"],
            "eval_max_per_category": 3,
        },
    )
    build_dataset(config, out, progress=False)
    return out
