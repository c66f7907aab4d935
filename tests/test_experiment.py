"""Every shipped experiment config loads and validates; the config round-trips through JSON."""

from pathlib import Path

import pytest

from vrft.config import ConfigError
from vrft.experiment import experiment_from_json, load_experiment

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
PAPER_TABLES = {
    "cls_flowers102": "table2",
    "cls_pets37": "table2",
    "cls_aircraft100": "table2",
    "cls_cars196": "table2",
    "coco_8cat": "table3",
    "lvis_6rare": "table4",
    "mg": "table5",
    "lisa": "table6",
    "ovd_coco": "table7",
    "ovd_lvis": "table8",
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_round_trips(path):
    config = load_experiment(path)
    assert config.experiment.name == path.stem
    assert experiment_from_json(config.to_json()) == config
    assert config.report.paper_table == PAPER_TABLES.get(path.stem, "")


def test_every_paper_table_has_a_config():
    assert {p.stem for p in CONFIGS} >= set(PAPER_TABLES) | {"default"}
    assert set(PAPER_TABLES.values()) == {f"table{i}" for i in range(2, 9)}


def test_default_is_small_and_offline():
    config = load_experiment(CONFIGS[[p.stem for p in CONFIGS].index("default")])
    assert config.model.name_or_path.startswith("tiny://")
    assert config.dataset.train.kind == "shapes_classification" and config.dataset.train.label == "colour"
    assert config.grpo.max_steps <= 10 and config.sft.max_steps == config.grpo.max_steps


def test_overrides_and_errors(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("experiment: {name: x}\ngrpo: {max_steps: 5}\n")
    assert load_experiment(path, ["grpo.beta=0.02"]).grpo.beta == 0.02
    with pytest.raises(ConfigError, match="exp.yaml: pipeline.artifact_root"):
        load_experiment(path, ["pipeline.artifact_root=/no/scheme"])
    with pytest.raises(ConfigError, match="not valid JSON"):
        experiment_from_json("{")
