"""The default run's small pre-trained base as shipped in vrft/resources/models/ (made by
tools/pretrain_tiny.py, tested in tests/tools/)."""

from __future__ import annotations

import json

import pytest

from vrft.cli import DEFAULT_CONFIG
from vrft.config import ConfigError
from vrft.data.shapes import COLOUR_NAMES
from vrft.evaluate import evaluate_checkpoint
from vrft.evaluate.config import EvaluateConfig
from vrft.experiment import load_experiment
from vrft.models.config import ModelConfig, shipped_model_dir
from vrft.models.loading import load_model
from vrft.models.tiny import build_tiny_model

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VRFT_CACHE_DIR", str(tmp_path / "cache"))


def test_base_size_is_the_documented_1_2_m_parameters(tmp_path):
    model = load_model(build_tiny_model(tmp_path / "base", size="base"), "float32")
    assert sum(p.numel() for p in model.parameters()) == 1_162_112
    with pytest.raises(ValueError, match="unknown size"):
        build_tiny_model(tmp_path / "x", size="huge")


def test_the_default_names_the_shipped_base_and_it_answers_the_colour(tmp_path):
    """The shipped base: well-formed answers, right well above chance (1 in 8) on the default's eval set."""
    config = load_experiment(DEFAULT_CONFIG, ["dataset.eval.n_images=3"])
    model = config.model.materialized()
    assert model.name_or_path == str(shipped_model_dir("qwen2_vl-colours"))
    assert (
        json.loads((shipped_model_dir("qwen2_vl-colours") / "recipe.json").read_text())["validation"][
            "accuracy"
        ]
        > 0.5
    )
    from vrft.data.build import build_dataset

    data = build_dataset(config.dataset, tmp_path / "data", progress=False)
    result = evaluate_checkpoint(
        EvaluateConfig(batch_size=8, max_new_tokens=48, progress=False),
        data.output_dir,
        tmp_path / "eval",
        model=model,
        label="base",
    )
    assert result.summary["dataset"]["images"] == 3 * len(COLOUR_NAMES)
    assert result.metrics["format_rate"] == 1.0
    assert result.metrics["accuracy"] >= 0.5


def test_unknown_tiny_names_are_one_clear_error():
    with pytest.raises(ConfigError, match="qwen2_vl-colours"):
        ModelConfig(name_or_path="tiny://qwen2_vl-colour").materialized()
