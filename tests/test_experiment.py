"""Every shipped experiment config loads and validates; the config round-trips through JSON."""

from pathlib import Path

import pytest

from vrft.config import ConfigError
from vrft.experiment import experiment_from_json, load_experiment

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
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


def test_a_grpo_batch_that_is_not_whole_groups_is_refused_with_the_config():
    """trl refuses it only when GRPO starts, minutes into a run (issue 21): the config load refuses it."""
    config = str(ROOT / "configs" / "default.yaml")
    with pytest.raises(
        ConfigError,
        match=r"default.yaml: grpo: the generation batch .* = 8 completions\) must be divisible by num_generations 3",
    ):
        load_experiment(config, ["grpo.num_generations=3"])
    # With the processes the pipeline launches: 8 x 1 x 3 GPUs = 24 completions are whole groups of 3.
    load_experiment(config, ["grpo.num_generations=3", "pipeline.train_resources.gpus=3"])


def test_each_shot_count_of_a_sweep_is_checked_with_its_own_overrides():
    config = str(ROOT / "configs" / "default.yaml")
    sweep = ["experiment.shots=[1,2]", "grpo.num_generations=3", "grpo.gradient_accumulation_steps=3"]
    load_experiment(config, sweep)
    with pytest.raises(ConfigError, match=r"shots 2: grpo: the generation batch"):
        load_experiment(
            config, [*sweep, "experiment.shot_overrides={2: [grpo.gradient_accumulation_steps=1]}"]
        )
