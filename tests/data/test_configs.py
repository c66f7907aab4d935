"""The example configs in configs/datasets load, and the synthetic ones build."""

from __future__ import annotations

from pathlib import Path

import pytest

from vrft.config import load_config
from vrft.data import DatasetConfig, build_dataset

CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "datasets").glob("*.yaml"))


def test_there_is_an_example_per_source_kind():
    kinds = set()
    for path in CONFIGS:
        cfg = load_config(DatasetConfig, path, section="dataset")
        kinds |= {cfg.train.kind} | ({cfg.eval.kind} if cfg.eval else set())
    assert kinds == {
        "coco",
        "lvis",
        "lisa",
        "image_folder",
        "manifest",
        "hf",
        "shapes",
        "shapes_classification",
    }


@pytest.mark.parametrize("name", ["shapes", "shapes_classification"])
def test_synthetic_examples_build(tmp_path, name):
    path = next(p for p in CONFIGS if p.stem == name)
    cfg = load_config(
        DatasetConfig,
        path,
        [f"train.path={tmp_path / 'train'}", f"eval.path={tmp_path / 'eval'}"],
        section="dataset",
    )
    result = build_dataset(cfg, tmp_path / "out", progress=False)
    assert result.num_rows["train"] > 0 and result.num_rows["eval"] > 0
