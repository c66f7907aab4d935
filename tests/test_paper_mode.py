"""Paper mode (issue 22): one switch sets every point to the authors' value; keep_ours keeps vrft's;
a third value is an error; the stages' partial views stay consistent; seeds can vary the sample."""

from pathlib import Path

import pytest

from vrft.config import ConfigError
from vrft.experiment import experiment_from_json, load_experiment
from vrft.paper_mode import POINT_NAMES, POINTS, training_objective

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIGS = ["cls_aircraft100", "cls_cars196", "cls_flowers102", "cls_pets37", "coco_8cat", "lvis_6rare"]
PAPER_CONFIGS += ["mg", "lisa", "ovd_coco", "ovd_lvis"]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_every_paper_config_is_in_paper_mode(name):
    config = load_experiment(ROOT / "configs" / f"{name}.yaml")
    assert config.experiment.paper_mode
    task = config.dataset.task
    for point in POINTS:
        value = point.authors(task)
        if value is not None and point.name not in config.experiment.keep_ours:
            section, key = point.field.split(".")
            assert getattr(getattr(config, section), key) == value, (name, point.name)
    if task == "classification":  # the authors' fixed test list, named by the config
        assert config.dataset.eval.annotations.startswith("paper:test_lists/")
    if name in ("coco_8cat", "ovd_coco"):
        assert config.evaluate.gate_file == "paper:gates/exist_map_coco_Qwen2_vl_2B_baseline.json.gz"


def test_paper_mode_off_keeps_vrfts_stricter_defaults():
    config = load_experiment(ROOT / "configs" / "cls_cars196.yaml", ["experiment.paper_mode=false"])
    assert (config.grpo.reward, config.dataset.class_names, config.evaluate.max_pixels) == ("", "vrft", None)
    assert training_objective(config, "rft") == "reward:classification"  # strict stays the default
    on = load_experiment(ROOT / "configs" / "cls_cars196.yaml")
    assert training_objective(on, "rft") == "reward:classification_containment"
    assert training_objective(on, "base") == ""


def test_keep_ours_and_conflicts():
    path = ROOT / "configs" / "cls_cars196.yaml"
    kept = load_experiment(path, ["experiment.keep_ours=[training_reward,eval_max_pixels]"])
    assert (
        kept.grpo.reward == "" and kept.evaluate.max_pixels is None and kept.dataset.class_names == "authors"
    )
    with pytest.raises(
        ConfigError, match=r"grpo.reward: 'classification' under experiment.paper_mode.*keep_ours"
    ):
        load_experiment(path, ["grpo.reward=classification"])
    assert load_experiment(path, ["grpo.reward=classification", "experiment.keep_ours=[training_reward]"])
    with pytest.raises(ConfigError, match="keep_ours: 'reward' is not a paper-mode point"):
        load_experiment(path, ["experiment.keep_ours=[reward]"])
    with pytest.raises(ConfigError, match="only read with experiment.paper_mode"):
        load_experiment(path, ["experiment.paper_mode=false", "experiment.keep_ours=[gate]"])
    assert set(POINT_NAMES) >= {"training_reward", "class_names", "gate", "lvis_ap", "eval_max_pixels"}


def test_detection_paper_mode_needs_the_authors_gate_list():
    with pytest.raises(ConfigError, match="coco_8cat.yaml: evaluate.gate_file: paper mode gates detection"):
        load_experiment(ROOT / "configs" / "coco_8cat.yaml", ["evaluate.gate_file="])
    mg = load_experiment(ROOT / "configs" / "mg.yaml")  # no list published: kept ours, said so
    assert mg.evaluate.gate_source == "base_model" and mg.experiment.keep_ours == ["gate"]


def test_stage_views_and_sweeps_keep_the_paper_values():
    from vrft.components.runtime import stage_config_json
    from vrft.pipelines.plan import sweep_configs

    config = load_experiment(ROOT / "configs" / "coco_8cat.yaml", ["experiment.seeds=[1,2]"])
    for stage in ("dataset", "grpo", "sft", "evaluate"):
        view = experiment_from_json(stage_config_json(config, stage))  # the other sections hold defaults
        assert view.experiment.paper_mode
    evaluate = experiment_from_json(stage_config_json(config, "evaluate")).evaluate
    assert (evaluate.gate_source, evaluate.lvis_ap_average, evaluate.max_pixels) == (
        "authors_file",
        "area_ranges",
        12845056,
    )
    swept = sweep_configs(config)
    assert {c.dataset.seed for c in swept} == {0}  # by default the few-shot sample stays the same
    assert all(c.evaluate.gate_source == "authors_file" for c in swept)
    varied = sweep_configs(
        load_experiment(
            ROOT / "configs" / "coco_8cat.yaml",
            ["experiment.seeds=[1,2]", "experiment.seeds_vary_sample=true"],
        )
    )
    assert [(c.dataset.shots, c.grpo.seed, c.dataset.seed) for c in varied][:2] == [(1, 1, 1), (1, 2, 2)]
