"""The grpo: / sft: configs: the authors' defaults, YAML + overrides, and every error raised before a
model loads, each one line that says what to change."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vrft.config import ConfigError, from_dict, load_config
from vrft.models.config import PAPER_MAX_PIXELS, ModelConfig
from vrft.train import GRPOStageConfig, SFTStageConfig, runtime, train_grpo, train_sft
from vrft.train import config as train_config
from vrft.train.config import check_batch_divisibility, deepspeed_config_path

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_authors_settings() -> None:
    grpo = GRPOStageConfig()
    assert (
        grpo.num_generations,
        grpo.beta,
        grpo.learning_rate,
        grpo.lr_scheduler_type,
        grpo.warmup_steps,
        grpo.weight_decay,
        grpo.max_grad_norm,
        grpo.temperature,
        grpo.max_completion_length,
        grpo.max_steps,
    ) == (8, 0.04, 1e-6, "linear", 0, 0.0, 1.0, 1.0, 256, 200)
    # trl counts the per-device batch in completions: 8 = one prompt's group, x 2 accumulation steps.
    assert (grpo.per_device_train_batch_size, grpo.gradient_accumulation_steps) == (8, 2)
    assert not grpo.lora.enabled and not grpo.vision_tower_frozen and grpo.resume == "auto"
    # The authors' gradient β∇k3 (trl's default adds a bias-correction term) and rollouts with top_k 50.
    assert (grpo.use_bias_correction_kl, grpo.top_k) == (False, 50)
    sft = SFTStageConfig()
    assert (
        sft.lora.enabled,
        sft.warmup_steps,
        sft.weight_decay,
        sft.per_device_train_batch_size,
        sft.gradient_accumulation_steps,
        sft.max_steps,
    ) == (True, 100, 0.1, 1, 8, grpo.max_steps)
    assert sft.vision_tower_frozen and sft.max_length is None
    assert ModelConfig().max_pixels == PAPER_MAX_PIXELS == 401408


def test_loads_its_section_of_an_experiment_yaml_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("grpo:\n  max_steps: 25\n  reward: grounding_giou\nsft:\n  learning_rate: 2.0e-5\n")
    grpo = load_config(
        GRPOStageConfig, path, ["grpo.beta=0.02", "lora.enabled=true", "lora.r=16"], section="grpo"
    )
    assert (grpo.max_steps, grpo.beta, grpo.reward, grpo.lora.enabled, grpo.lora.r) == (
        25,
        0.02,
        "grounding_giou",
        True,
        16,
    )
    assert grpo.vision_tower_frozen, "LoRA leaves the vision tower frozen unless asked"
    assert load_config(SFTStageConfig, path, ["sft.max_steps=25"], section="sft").learning_rate == 2e-5


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (GRPOStageConfig, {"learning_rate": 0}, "grpo.learning_rate: must be > 0, got 0.0"),
        (SFTStageConfig, {"learning_rate": -1e-5}, "sft.learning_rate: must be > 0"),
        (GRPOStageConfig, {"max_steps": 0}, "grpo.max_steps: must be a positive integer"),
        (
            GRPOStageConfig,
            {"num_generations": 1},
            "grpo.num_generations: GRPO compares completions within a group",
        ),
        (GRPOStageConfig, {"beta": -0.1}, "grpo.beta: must be >= 0"),
        (GRPOStageConfig, {"temperature": 0}, "grpo.temperature: must be > 0"),
        (GRPOStageConfig, {"reward": "detectoin"}, "grpo.reward: unknown reward 'detectoin': use one of"),
        (
            GRPOStageConfig,
            {"reward": "no_such_module:f"},
            "grpo.reward: reward 'no_such_module:f': cannot import",
        ),
        (GRPOStageConfig, {"reward": "detection", "reward_options": {"tua": 0.3}}, "grpo.reward:"),
        (
            GRPOStageConfig,
            {"lora": {"r": 16}},
            "grpo.lora.r is set but grpo.lora.enabled is false: set grpo.lora.enabled=true",
        ),
        (
            SFTStageConfig,
            {"lora": {"enabled": False, "target_modules": ["q_proj"]}},
            "sft.lora.target_modules is set but sft.lora.enabled is false",
        ),
        (
            GRPOStageConfig,
            {"lora": {"enabled": True, "target_modules": ["q_proj", "lm_head"]}},
            "remove 'lm_head'",
        ),
        (GRPOStageConfig, {"loss_type": "ppo"}, "grpo.loss_type: 'ppo' is not one of"),
        (GRPOStageConfig, {"lr_scheduler_type": "linaer"}, "grpo.lr_scheduler_type: 'linaer' is not one of"),
        (
            GRPOStageConfig,
            {"deepspeed": "zero4"},
            "grpo.deepspeed: 'zero4' is neither zero2 nor zero3 nor a .json",
        ),
        (GRPOStageConfig, {"num_generatons": 8}, "num_generatons: unknown key"),
    ],
)
def test_invalid_values_are_one_line_errors(cls: type, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        from_dict(cls, data)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_the_scheduler_names_are_the_ones_transformers_accepts() -> None:
    from transformers.trainer_utils import SchedulerType

    assert train_config.LR_SCHEDULERS == tuple(t.value for t in SchedulerType)


def test_validating_a_config_does_not_import_transformers() -> None:
    # The CLI and the dataset/evaluation/report stages validate every section at start: seconds each if
    # that imported transformers (and with it torch and peft).
    code = (
        "import sys; from vrft.config import from_dict; from vrft.train import GRPOStageConfig, SFTStageConfig; "
        "from_dict(GRPOStageConfig, {}); from_dict(SFTStageConfig, {}); "
        "print(sorted(m for m in ('transformers', 'torch', 'peft', 'trl') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_divisibility_error_names_trls_rule_and_working_fixes() -> None:
    config = GRPOStageConfig(per_device_train_batch_size=1, gradient_accumulation_steps=3)
    with pytest.raises(ConfigError) as error:
        check_batch_divisibility(config, 1)
    assert str(error.value) == (
        "grpo: the generation batch (per_device_train_batch_size 1 × gradient_accumulation_steps 3 × 1 process = "
        "3 completions) must be divisible by num_generations 8, so that each prompt's 8 completions are scored "
        "together: set per_device_train_batch_size to 8, or gradient_accumulation_steps to 8, or num_generations to 3"
    )
    # Every suggested value makes the batch valid, whatever the launch.
    for per_device in (1, 2, 3, 5, 8):
        for accumulation in (1, 2, 3):
            for processes in (1, 2, 3, 8):
                for generations in (2, 4, 6, 8, 16):
                    base = {
                        "per_device_train_batch_size": per_device,
                        "gradient_accumulation_steps": accumulation,
                        "num_generations": generations,
                    }
                    try:
                        check_batch_divisibility(GRPOStageConfig(**base), processes)
                        continue
                    except ConfigError as exc:
                        fixes = str(exc).split(": set ")[1].split(", or ")
                    for fix in fixes:
                        name, value = fix.split(" to ")
                        check_batch_divisibility(GRPOStageConfig(**{**base, name: int(value)}), processes)


def test_deepspeed_presets_and_their_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_config, "deepspeed_installed", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("zero2", "zero3"):
        path = deepspeed_config_path(GRPOStageConfig(deepspeed=name))
        assert path == REPO / "configs" / "deepspeed" / f"{name}.json"
        stage = json.loads(path.read_text())["zero_optimization"]["stage"]
        assert stage == int(name[-1])
    assert (
        json.loads((REPO / "configs/deepspeed/zero3.json").read_text())["zero_optimization"][
            "stage3_gather_16bit_weights_on_model_save"
        ]
        is True
    )

    sharded = tmp_path / "sharded.json"
    sharded.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(ConfigError, match="stage3_gather_16bit_weights_on_model_save: set it to true"):
        deepspeed_config_path(GRPOStageConfig(deepspeed=str(sharded)))
    with pytest.raises(ConfigError, match="does not exist"):
        deepspeed_config_path(GRPOStageConfig(deepspeed=str(tmp_path / "missing.json")))
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ConfigError, match="needs a distributed launch: run through `accelerate launch"):
        deepspeed_config_path(SFTStageConfig(deepspeed="zero2"))
    monkeypatch.setattr(train_config, "deepspeed_installed", lambda: False)
    with pytest.raises(ConfigError, match="DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed"):
        deepspeed_config_path(SFTStageConfig(deepspeed="zero2"))


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything loads a model or processor."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model or processor was loaded before the configuration was checked")

    monkeypatch.setattr(runtime, "load_model", refuse)
    monkeypatch.setattr(ModelConfig, "load_processor", refuse)


@pytest.mark.usefixtures("no_model_loads")
def test_run_errors_come_before_any_model_loads(
    tiny_model: ModelConfig, shapes_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def error(
        train: Any,
        config: Any,
        dataset: Path,
        model: ModelConfig = tiny_model,
        output: Path = tmp_path / "out",
    ) -> str:
        with pytest.raises(ConfigError) as caught:
            train(config, dataset, output, model=model)
        assert "\n" not in str(caught.value)
        return str(caught.value)

    grpo, sft = GRPOStageConfig(), SFTStageConfig()
    assert "dataset_dir" in error(train_grpo, grpo, tmp_path / "missing") and "vrft dataset build" in error(
        train_sft, sft, tmp_path / "missing"
    )
    (tmp_path / "empty").mkdir()
    assert "not a saved dataset" in error(train_sft, sft, tmp_path / "empty")
    assert "model.name_or_path: empty" in error(train_grpo, grpo, shapes_dataset, model=ModelConfig())
    assert "'classification' scores classification answers but" in error(
        train_grpo, GRPOStageConfig(reward="classification"), shapes_dataset
    )
    small_batch = GRPOStageConfig(per_device_train_batch_size=4, gradient_accumulation_steps=1)
    assert "must be divisible by num_generations 8" in error(train_grpo, small_batch, shapes_dataset)
    too_many_prompts = GRPOStageConfig(gradient_accumulation_steps=8)  # 8 prompts per step, 4 train rows
    assert "a step trains on 8 prompts" in error(train_grpo, too_many_prompts, shapes_dataset)
    monkeypatch.setenv("WORLD_SIZE", "4")  # 8 x 2 x 4 is fine, 3 x 1 x 4 is not
    assert "× 4 processes = 12 completions" in error(
        train_grpo,
        GRPOStageConfig(per_device_train_batch_size=3, gradient_accumulation_steps=1),
        shapes_dataset,
    )
    monkeypatch.delenv("WORLD_SIZE")

    (tmp_path / "out" / "checkpoint-4").mkdir(parents=True)
    assert "'never', but" in error(train_sft, SFTStageConfig(resume="never"), shapes_dataset)
    assert "is not a complete checkpoint-N directory" in error(
        train_grpo, GRPOStageConfig(resume=str(tmp_path / "out" / "checkpoint-4")), shapes_dataset
    )
    shutil.rmtree(tmp_path / "out")
