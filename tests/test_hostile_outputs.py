"""Every output-writing stage refuses an output that is, contains or sits inside one of its inputs
(issue 14: `--overwrite` would delete the input), before anything is read or written."""

from __future__ import annotations

import pytest

from vrft.evaluate import evaluate_checkpoint
from vrft.evaluate.config import EvaluateConfig
from vrft.io import OutputOverlapError
from vrft.models.config import ModelConfig
from vrft.report import build_report
from vrft.report.config import ReportConfig
from vrft.train import GRPOStageConfig
from vrft.train.runtime import preflight

pytestmark = pytest.mark.timeout(60)


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("output", ["dataset", "dataset/inner", ".", "model"])
def test_evaluate_refuses_the_dataset_or_checkpoint_as_output(tmp_path, output):
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "manifest.json").write_text("{}")
    (tmp_path / "model").mkdir()
    before = _files(tmp_path)
    with pytest.raises(OutputOverlapError, match="choose an output outside every input"):
        evaluate_checkpoint(
            EvaluateConfig(),
            tmp_path / "dataset",
            tmp_path / output,
            model=ModelConfig(name_or_path=str(tmp_path / "model")),
            overwrite=True,
        )
    assert _files(tmp_path) == before


def test_report_refuses_an_output_holding_the_mlflow_store(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"SQLite format 3\x00")
    with pytest.raises(OutputOverlapError, match="output contains the MLflow store"):
        build_report(
            ReportConfig(),
            tmp_path,
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            experiment="x",
            overwrite=True,
        )
    assert (tmp_path / "mlflow.db").read_bytes() == b"SQLite format 3\x00"


def test_training_refuses_to_write_into_its_dataset(tmp_path):
    (tmp_path / "dataset").mkdir()
    with pytest.raises(OutputOverlapError, match="output is inside the dataset"):
        preflight(
            GRPOStageConfig(),
            tmp_path / "dataset",
            tmp_path / "dataset" / "run",
            ModelConfig(name_or_path="m"),
        )
    assert _files(tmp_path) == ["dataset"]
