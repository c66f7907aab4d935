"""The ``grpo:`` and ``sft:`` sections of an experiment YAML, and the checks run before any model loads.

Defaults are the authors' settings (listed in docs/training.md); every field can be overridden
from YAML or the command line (``grpo.beta=0.02``). :meth:`GRPOStageConfig.validate` catches what
is wrong in the values alone; :func:`check_batch_divisibility` and the stage functions' preflight
catch what depends on the launch (number of processes, dataset, DeepSpeed), still before a model
is loaded, and each error is one line saying what to change.

>>> cfg = GRPOStageConfig()
>>> cfg.num_generations, cfg.beta, cfg.learning_rate, cfg.max_completion_length, cfg.max_steps
(8, 0.04, 1e-06, 256, 200)
>>> from vrft.config import from_dict
>>> from_dict(GRPOStageConfig, {"learning_rate": 0})
Traceback (most recent call last):
...
vrft.config.ConfigError: grpo.learning_rate: must be > 0, got 0.0
>>> check_batch_divisibility(GRPOStageConfig(per_device_train_batch_size=1, gradient_accumulation_steps=3), 1)
Traceback (most recent call last):
...
vrft.config.ConfigError: grpo: the generation batch (per_device_train_batch_size 1 × gradient_accumulation_steps 3 × 1 process = 3 completions) must be divisible by num_generations 8, so that each prompt's 8 completions are scored together: set per_device_train_batch_size to 8, or gradient_accumulation_steps to 8, or num_generations to 3
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from vrft.config import ConfigError, read_config_text

#: The language-model projections of Qwen2-VL / Qwen2.5-VL: LoRA's usual targets for these models.
QWEN_VL_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: Shipped DeepSpeed configs, by the short name the ``deepspeed`` field accepts.
DEEPSPEED_PRESETS = ("zero2", "zero3")
#: transformers' ``SchedulerType`` values (the pinned version's; tests/train/test_config.py checks that
#: they agree). Listed here because importing ``transformers.trainer_utils`` also imports torch and peft:
#: seconds in every process that only validates a config (the CLI, the dataset, evaluation and report stages).
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)
#: The task each built-in reward scores (``format`` scores any task); plugins are not checked.
REWARD_TASKS: dict[str, tuple[str, ...]] = {
    "detection": ("detection",),
    "detection_hardened": ("detection",),
    "classification": ("classification",),
    "classification_containment": ("classification",),
    "grounding_iou": ("grounding",),
    "grounding_giou": ("grounding",),
    "format": ("detection", "classification", "grounding"),
}


@dataclass
class LoraSettings:
    """LoRA adapters (peft). Off by default in GRPO (the authors trained all weights).

    ``target_modules`` are module-name suffixes inside the language model; the vision tower gets
    adapters too only when the stage's ``freeze_vision_tower`` is explicitly ``false``.

    Parameters:
        enabled: Train LoRA adapters instead of all weights; the other fields may only be set then.
        r: Rank of the adapter matrices.
        alpha: LoRA's scaling numerator (the update is scaled by alpha / r).
        dropout: Dropout on the adapters' input.
        target_modules: Module-name suffixes that get adapters (default: the attention and MLP
            projections of Qwen2-VL / Qwen2.5-VL's language model).
    """

    enabled: bool = False
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(QWEN_VL_LORA_TARGETS))


@dataclass
class StageConfig:
    """Settings shared by GRPO and the SFT baseline; the subclasses set the authors' defaults.

    Parameters:
        max_steps: Optimizer steps to train.
        learning_rate: AdamW's peak learning rate.
        lr_scheduler_type: transformers' learning-rate schedule (``linear``, ``cosine``, ...).
        warmup_steps: Steps of linear warm-up to ``learning_rate``.
        weight_decay: AdamW's weight decay.
        max_grad_norm: Gradients are clipped to this norm (1.0 is the authors').
        per_device_train_batch_size: Samples per device per micro-step (GRPO: completions, not prompts).
        gradient_accumulation_steps: Micro-steps per optimizer step.
        seed: The training seed (initialisation of adapters, data order, sampling).
        freeze_vision_tower: Keep the vision tower (patch embedding, blocks and merger) frozen;
            ``null``: train it under full fine-tuning (the authors), keep it frozen under LoRA.
        gradient_checkpointing: Recompute activations in the backward pass (less memory, more time).
        lora: LoRA adapters instead of full fine-tuning.
        deepspeed: ``""`` (none), ``zero2``, ``zero3`` (the shipped ``configs/deepspeed/*.json``) or
            the path of a DeepSpeed JSON.
        logging_steps: Log metrics every this many steps.
        save_steps: Save a checkpoint every this many steps.
        save_total_limit: Checkpoints kept (each holds optimizer state: about 8 bytes per trained
            parameter); ``null`` keeps all.
        prompt_style: Prompts (and, for SFT, targets) trained on: ``vrft`` or ``authors``, which
            differs for LISA only: GRPO's prompt has no "." after the instruction; SFT's prompt has no
            think instruction and its target is the bare box ``(x1,y1),(x2,y2)`` (the authors').
        resume: ``auto``: continue from the newest complete ``checkpoint-N`` in the output directory,
            if any; ``never``: start fresh (refused when checkpoints exist); otherwise a checkpoint
            directory to continue from.
    """

    section: ClassVar[str] = "train"

    max_steps: int = 200
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 2
    seed: int = 0
    freeze_vision_tower: bool | None = None
    gradient_checkpointing: bool = True
    lora: LoraSettings = field(default_factory=LoraSettings)
    deepspeed: str = ""
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int | None = 2
    prompt_style: Literal["vrft", "authors"] = "vrft"
    resume: str = "auto"

    def validate(self) -> None:
        s = self.section
        positive_ints = (
            "max_steps",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "save_steps",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"{s}.{name}: must be a positive integer, got {value}")
        if not self.learning_rate > 0:
            raise ConfigError(f"{s}.learning_rate: must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ConfigError(f"{s}.warmup_steps: must be >= 0, got {self.warmup_steps}")
        if self.weight_decay < 0:
            raise ConfigError(f"{s}.weight_decay: must be >= 0, got {self.weight_decay}")
        if not self.max_grad_norm > 0:
            raise ConfigError(
                f"{s}.max_grad_norm: must be > 0 (1.0 is the authors'), got {self.max_grad_norm}"
            )
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(
                f"{s}.save_total_limit: must be >= 1 or null (keep all), got {self.save_total_limit}"
            )
        if not self.resume:
            raise ConfigError(f"{s}.resume: use 'auto', 'never' or a checkpoint directory")
        if self.lr_scheduler_type not in LR_SCHEDULERS:
            raise ConfigError(
                f"{s}.lr_scheduler_type: {self.lr_scheduler_type!r} is not one of {', '.join(LR_SCHEDULERS)}"
            )
        self._validate_lora()
        if (
            self.deepspeed
            and Path(self.deepspeed).suffix != ".json"
            and self.deepspeed not in DEEPSPEED_PRESETS
        ):
            raise ConfigError(
                f"{s}.deepspeed: {self.deepspeed!r} is neither {' nor '.join(DEEPSPEED_PRESETS)} "
                "nor a .json file"
            )

    def _validate_lora(self) -> None:
        s = self.section
        lora = self.lora
        if not lora.enabled:
            defaults = LoraSettings()
            changed = [
                f.name
                for f in dataclasses.fields(lora)
                if f.name != "enabled" and getattr(lora, f.name) != getattr(defaults, f.name)
            ]
            if changed:
                raise ConfigError(
                    f"{s}.lora.{changed[0]} is set but {s}.lora.enabled is false: set "
                    f"{s}.lora.enabled=true to train LoRA adapters, or remove {s}.lora.{changed[0]}"
                )
            return
        if lora.r < 1 or lora.alpha < 1:
            raise ConfigError(
                f"{s}.lora.r and {s}.lora.alpha: must be positive, got {lora.r} and {lora.alpha}"
            )
        if not 0 <= lora.dropout < 1:
            raise ConfigError(f"{s}.lora.dropout: must be in [0, 1), got {lora.dropout}")
        if not lora.target_modules:
            raise ConfigError(f"{s}.lora.target_modules: empty; the default is {QWEN_VL_LORA_TARGETS}")
        if "lm_head" in lora.target_modules:
            raise ConfigError(
                f"{s}.lora.target_modules: remove 'lm_head': adapters go into the language model's "
                "layers (and trl's GRPO reads lm_head's weight directly, so an adapter would never train)"
            )

    @property
    def vision_tower_frozen(self) -> bool:
        """Whether the vision tower (patch embedding, blocks and merger) gets no updates."""
        return self.lora.enabled if self.freeze_vision_tower is None else self.freeze_vision_tower


@dataclass
class GRPOStageConfig(StageConfig):
    """Stage 2: GRPO with verifiable visual rewards (Visual-RFT §3).

    trl counts ``per_device_train_batch_size`` in *completions*, not prompts: the default 8 is one
    prompt's group of ``num_generations`` 8 per device per micro-step, so with gradient accumulation
    2 a step trains on 2 prompts per process (16 on 8 GPUs, as the authors).

    Parameters:
        num_generations: Completions sampled per prompt (the group GRPO compares; G in the paper).
        beta: Weight of the KL term to the frozen starting model; 0 drops the reference model.
        temperature: Rollout sampling temperature.
        max_completion_length: Tokens a rollout may generate.
        loss_type: trl's token aggregation: ``grpo`` (mean per sequence, then over sequences; the
            authors'), ``dr_grpo``, ``dapo`` or ``bnpo``.
        top_k: Rollout sampling's top-k: the authors' rollouts had transformers' old default 50
            (trl's is 0 = off).
        use_bias_correction_kl: trl >= 1.x adds beta·k3·∇logπ to the authors' beta·∇k3 unless this
            is false (false: the authors' gradient).
        reward: ``""``: the task's reward (detection, classification, grounding_iou); a registered
            name such as ``grounding_giou``; or a plugin ``package.module:function``.
        reward_options: Keyword options for the reward's constructor, e.g.
            ``{tau: 0.5, iou_normalization: predictions}``.
        think_prefilled: The chat template already ends the prompt with ``<think>``: the format
            check adds it back.
        completions_per_step: Completions written to ``completions.jsonl`` per step (the first
            prompt's group); 0: none.
    """

    section: ClassVar[str] = "grpo"

    per_device_train_batch_size: int = 8
    num_generations: int = 8
    beta: float = 0.04
    temperature: float = 1.0
    max_completion_length: int = 256
    loss_type: str = "grpo"
    top_k: int = 50
    use_bias_correction_kl: bool = False
    reward: str = ""
    reward_options: dict[str, Any] = field(default_factory=dict)
    think_prefilled: bool = False
    completions_per_step: int = 8

    def validate(self) -> None:
        super().validate()
        s = self.section
        if self.num_generations < 2:
            raise ConfigError(
                f"{s}.num_generations: GRPO compares completions within a group, so it needs at "
                f"least 2, got {self.num_generations}"
            )
        if self.beta < 0:
            raise ConfigError(f"{s}.beta: must be >= 0 (0 disables the KL term), got {self.beta}")
        if not self.temperature > 0:
            raise ConfigError(f"{s}.temperature: must be > 0, got {self.temperature}")
        if self.max_completion_length < 1:
            raise ConfigError(
                f"{s}.max_completion_length: must be positive, got {self.max_completion_length}"
            )
        if self.completions_per_step < 0:
            raise ConfigError(f"{s}.completions_per_step: must be >= 0, got {self.completions_per_step}")
        known_losses = ("grpo", "dr_grpo", "dapo", "bnpo")
        if self.loss_type not in known_losses:
            raise ConfigError(f"{s}.loss_type: {self.loss_type!r} is not one of {', '.join(known_losses)}")
        if self.reward:
            self.reward_functions("")  # resolves the name now: an unknown reward fails here, not at step 1

    def reward_name(self, task: str) -> str:
        """The configured reward, or the task's default one."""
        from vrft.tasks import reward_name

        return self.reward or reward_name(task)

    def reward_functions(self, task: str) -> list[Any]:
        """trl's ``reward_funcs``: one function per part of the reward (their sum is the reward)."""
        from vrft.rewards import reward_functions_for_trainer

        options = dict(self.reward_options)
        if self.think_prefilled:
            options["think_prefilled"] = True
        name = self.reward_name(task) if task else self.reward
        try:
            return reward_functions_for_trainer(name, **options)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{self.section}.reward: {exc}") from None


@dataclass
class SFTStageConfig(StageConfig):
    """Stage 3: the SFT baseline on the same rows, the answer as the target (loss on the answer only).

    Defaults are the paper's SFT baseline: LoRA, warmup 100, weight decay 0.1, batch 1 × accumulation
    8, and the same 200 steps as GRPO (a matched budget in optimizer steps).

    Parameters:
        max_length: Token budget per sequence; ``null`` never truncates (truncation would cut image
            tokens).
    """

    section: ClassVar[str] = "sft"

    learning_rate: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    gradient_accumulation_steps: int = 8
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(enabled=True))
    max_length: int | None = None

    def validate(self) -> None:
        super().validate()
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"{self.section}.max_length: must be positive or null, got {self.max_length}")


def world_size() -> int:
    """Processes of this launch: torchrun / accelerate set ``WORLD_SIZE``; a plain run is one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _smallest_multiple(start: int, unit: int, divisor: int) -> int:
    """The smallest ``n >= start`` with ``n * unit`` divisible by ``divisor``."""
    step = divisor // math.gcd(unit, divisor)
    return -(-start // step) * step


def check_batch_divisibility(config: GRPOStageConfig, processes: int) -> None:
    """trl 1.16 rule: per-device batch × accumulation steps × processes, counted in completions, must be
    a multiple of ``num_generations`` (each generation batch holds whole prompt groups)."""
    per_device, accumulation, generations = (
        config.per_device_train_batch_size,
        config.gradient_accumulation_steps,
        config.num_generations,
    )
    total = per_device * accumulation * processes
    if total % generations == 0:
        return
    fixes = [
        f"per_device_train_batch_size to {_smallest_multiple(per_device, accumulation * processes, generations)}",
        f"gradient_accumulation_steps to {_smallest_multiple(accumulation, per_device * processes, generations)}",
    ]
    divisors = [d for d in range(2, total + 1) if total % d == 0]
    if divisors:
        fixes.append(f"num_generations to {min(divisors, key=lambda d: (abs(d - generations), d))}")
    s = config.section
    plural = "process" if processes == 1 else "processes"
    raise ConfigError(
        f"{s}: the generation batch (per_device_train_batch_size {per_device} × gradient_accumulation_steps "
        f"{accumulation} × {processes} {plural} = {total} completions) must be divisible by num_generations "
        f"{generations}, so that each prompt's {generations} completions are scored together: set "
        + ", or ".join(fixes)
    )


def check_prompts_per_step(config: GRPOStageConfig, processes: int, rows: int) -> None:
    """A step's generation batch must fit in the train split: trl's sampler only yields full batches,
    so with fewer rows than prompts per step an epoch is empty and training silently stops at step 0."""
    prompts = (
        config.per_device_train_batch_size
        * config.gradient_accumulation_steps
        * processes
        // config.num_generations
    )
    if prompts > rows:
        plural = "process" if processes == 1 else "processes"
        raise ConfigError(
            f"{config.section}: a step trains on {prompts} prompts (per_device_train_batch_size "
            f"{config.per_device_train_batch_size} × gradient_accumulation_steps {config.gradient_accumulation_steps} "
            f"× {processes} {plural} / num_generations {config.num_generations}) but the train split has {rows} rows: "
            "lower gradient_accumulation_steps or use fewer processes, or build the dataset with more shots"
        )


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def deepspeed_config_path(config: StageConfig, *, launched: bool = True) -> Path | None:
    """The DeepSpeed JSON named by ``config.deepspeed`` (a preset or a path), checked; None without one.

    Presets live in ``configs/deepspeed/`` of the source tree (or of the working directory).
    A ZeRO-3 config must gather the 16-bit weights on save, or the final model would be shards.
    ``launched=False`` checks the file only, not this process's DeepSpeed package and launch
    (the pipeline's compile-time check, for the pod that will train).
    """
    name = config.deepspeed
    s = config.section
    if not name:
        return None
    if name in DEEPSPEED_PRESETS:
        roots = [Path(__file__).resolve().parents[2], Path.cwd()]
        candidates = [root / "configs" / "deepspeed" / f"{name}.json" for root in roots]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise ConfigError(
                f"{s}.deepspeed: preset {name!r} not found at {candidates[0]}; run from the vrft "
                "source tree or give the JSON file's path"
            )
    else:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"{s}.deepspeed: {path} does not exist")
    try:
        ds = json.loads(read_config_text(path))
    except ConfigError as exc:  # unreadable, not a regular file, or too large
        raise ConfigError(f"{s}.deepspeed: {exc}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"{s}.deepspeed: {path} is not readable JSON ({exc})") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"{s}.deepspeed: {path} is not a DeepSpeed config (expected a JSON object)")
    zero = ds.get("zero_optimization", {})
    if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save", False):
        raise ConfigError(
            f"{s}.deepspeed: {path} is ZeRO-3 without stage3_gather_16bit_weights_on_model_save: "
            "set it to true so the final model is saved whole (loadable with from_pretrained)"
        )
    if not launched:
        return path
    if not deepspeed_installed():
        raise ConfigError(
            f"{s}.deepspeed: the deepspeed package is not installed: "
            "DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed==0.19.8"
        )
    if "WORLD_SIZE" not in os.environ:
        raise ConfigError(
            f"{s}.deepspeed: DeepSpeed needs a distributed launch: run through `accelerate launch "
            "--num_processes N -m vrft.cli train ...` or `torchrun --nproc_per_node N -m vrft.cli "
            "train ...`"
        )
    return path
