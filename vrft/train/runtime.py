"""What GRPO and SFT runs share: preflight, model preparation, trainer arguments, logs, the final save.

The order matters for users: everything that can be checked without weights (config, launch,
dataset, DeepSpeed, resume) is checked by :func:`preflight` before :func:`load_policy` spends
minutes loading a model.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch

from vrft.config import ConfigError, flatten, to_dict
from vrft.io import atomic_write_text, check_output_apart, dumps_deterministic, sha256_file
from vrft.models.config import ModelConfig
from vrft.models.loading import check_checkpoint, load_model, resolve_dtype
from vrft.train.callbacks import (
    COMPLETIONS_LOG,
    SAMPLES_LOG,
    TRAIN_LOG,
    JsonlLogCallback,
    MlflowCallback,
    MlflowTarget,
    truncate_jsonl,
)
from vrft.train.checkpoints import resolve_resume, save_final
from vrft.train.config import StageConfig, deepspeed_config_path, world_size
from vrft.train.data import load_train_split

logger = logging.getLogger(__name__)

RUN_CONFIG = "config.json"


@dataclass
class TrainResult:
    """Where a finished run put its outputs, and how far it got."""

    method: str
    output_dir: Path
    final_dir: Path  # Hugging Face model + processor (LoRA merged)
    adapter_dir: Path | None  # the LoRA adapter alone, when LoRA was used
    global_step: int
    resumed_from: Path | None
    metrics: dict[str, float]  # the trainer's summary: train_runtime, train_loss, ...


@dataclass
class RunPlan:
    """What :func:`preflight` settled before any model is loaded."""

    train: datasets.Dataset
    task: str
    output_dir: Path
    resume_from: Path | None
    deepspeed: Path | None
    is_main_process: bool
    checkpoints_kept: int | None = None  # the stage's save_total_limit: also how many mirrored ones stay


def preflight(
    config: StageConfig, dataset_dir: str | Path, output_dir: str | Path, model: ModelConfig
) -> RunPlan:
    """Check the launch, dataset, DeepSpeed config and resume point; raise a one-line ConfigError."""
    if not model.name_or_path:
        raise ConfigError(
            "model.name_or_path: empty: give a hub id (Qwen/Qwen2-VL-2B-Instruct) or a local "
            "checkpoint directory (e.g. one built by `vrft tiny-model DIR`)"
        )
    check_output_apart(output_dir, {"dataset": dataset_dir, "model": model.local_dir()})
    deepspeed = deepspeed_config_path(config)
    train, task = load_train_split(dataset_dir)
    check_checkpoint(model.name_or_path)  # a damaged model fails here, before any output is written
    output = Path(output_dir).absolute()
    resume_from = resolve_resume(config.resume, output, config.section)
    return RunPlan(
        train,
        task,
        output,
        resume_from,
        deepspeed,
        int(os.environ.get("RANK", "0")) == 0,
        config.save_total_limit,
    )


def training_dtype(config: StageConfig, model: ModelConfig, deepspeed: Path | None) -> torch.dtype:
    """The dtype the weights are loaded in for training.

    ``model.dtype: auto`` picks bf16 on CUDA, but full fine-tuning in pure bf16 without DeepSpeed
    would lose AdamW's updates (at lr 1e-6 an update is far below bf16's resolution of a weight),
    so then the weights stay fp32 and bf16 is used as mixed precision; DeepSpeed keeps fp32 master
    weights itself, and LoRA trains fp32 adapters on a frozen base.
    """
    dtype = resolve_dtype(model.dtype)
    full_bf16 = dtype == torch.bfloat16 and not config.lora.enabled and deepspeed is None
    if full_bf16 and model.dtype == "auto":
        return torch.float32
    if full_bf16:
        logger.warning(
            "model.dtype bfloat16 with full fine-tuning and no DeepSpeed: AdamW updates below bf16 "
            "resolution are lost; use model.dtype=auto (fp32 weights, bf16 compute)"
        )
    return dtype


def _component(model: torch.nn.Module, attribute: str) -> str:
    """The dotted name of the shallowest sub-module called ``attribute`` (``visual``, ``language_model``)."""
    names = [name for name, _ in model.named_modules() if name.split(".")[-1] == attribute]
    if not names:
        raise ConfigError(
            f"model: {type(model).__name__} has no '{attribute}' part; vrft trains Qwen2-VL and "
            "Qwen2.5-VL models"
        )
    return min(names, key=lambda n: n.count("."))


def lora_target_pattern(model: torch.nn.Module, config: StageConfig) -> str:
    """peft's ``target_modules`` regex: the configured module names inside the language model, and
    inside the vision tower too when it is not frozen. Fails if either part would get no adapter."""
    hints = {
        "language_model": "its layers have q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
        "visual": "e.g. Qwen2-VL's vision blocks have qkv, proj, fc1, fc2",
    }
    parts = ["language_model"] + ([] if config.vision_tower_frozen else ["visual"])
    scopes = [_component(model, part) for part in parts]
    names = "|".join(re.escape(t) for t in config.lora.target_modules)
    modules = [name for name, _ in model.named_modules()]
    for part, scope in zip(parts, scopes):
        pattern = rf"^{re.escape(scope)}\..*\.(?:{names})$"
        if not any(re.fullmatch(pattern, name) for name in modules):
            raise ConfigError(
                f"{config.section}.lora.target_modules: {config.lora.target_modules} match no module "
                f"in {scope}; {hints[part]}"
            )
    return rf"^(?:{'|'.join(re.escape(s) for s in scopes)})\..*\.(?:{names})$"


def load_policy(config: StageConfig, model: ModelConfig, deepspeed: Path | None) -> tuple[Any, Any]:
    """The model to train, with the vision tower frozen if configured, and the peft config (or None)."""
    policy = load_model(
        model.name_or_path,
        training_dtype(config, model, deepspeed),
        None,
        model.attn_implementation,
        trust_remote_code=model.trust_remote_code,
    )
    if config.lora.enabled:
        from peft import LoraConfig

        lora = config.lora
        return policy, LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora_target_pattern(policy, config),
        )
    if config.vision_tower_frozen:
        policy.get_submodule(_component(policy, "visual")).requires_grad_(False)
    return policy, None


def trainer_arguments(config: StageConfig, plan: RunPlan, model: ModelConfig) -> dict[str, Any]:
    """Keyword arguments shared by trl's GRPOConfig and SFTConfig.

    bf16 follows the device (never trl's bf16 default on a CPU); optimizer state is always saved so
    a resume restores it; reporting goes through vrft's own callbacks.
    """
    cuda = torch.cuda.is_available()
    return {
        "output_dir": str(plan.output_dir),
        "max_steps": config.max_steps,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler_type,
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "save_only_model": False,
        "bf16": resolve_dtype(model.dtype) == torch.bfloat16,
        "fp16": False,
        # DeepSpeed brings its own CPU accelerator; use_cpu would bypass its distributed setup.
        "use_cpu": not cuda and plan.deepspeed is None,
        "gradient_checkpointing": config.gradient_checkpointing,
        "deepspeed": str(plan.deepspeed) if plan.deepspeed else None,
        "report_to": [],
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "trust_remote_code": model.trust_remote_code,
    }


def run_record(
    method: str, config: StageConfig, model: ModelConfig, dataset_dir: str | Path, plan: RunPlan
) -> dict[str, Any]:
    """The run's parameters as written to ``config.json`` (and, flattened, to MLflow)."""
    import transformers
    import trl

    manifest = Path(dataset_dir) / "manifest.json"
    return {
        "method": method,
        config.section: to_dict(config),
        "model": to_dict(model),
        "dataset_dir": str(Path(dataset_dir).absolute()),
        "dataset_manifest_sha256": sha256_file(manifest) if manifest.is_file() else "",
        "task": plan.task,
        "train_rows": len(plan.train),
        "world_size": world_size(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
    }


def start_logs(plan: RunPlan, record: dict[str, Any]) -> None:
    """Write ``config.json``, and cut the JSONL logs back to the resumed step (to nothing on a fresh start).

    A resume with different settings is allowed (e.g. more steps) but the differences are logged.
    """
    if not plan.is_main_process:
        return
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    path = plan.output_dir / RUN_CONFIG
    if plan.resume_from is not None and path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        before, after = flatten(previous), flatten(record)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if changed:
            logger.warning("resuming %s with changed settings: %s", plan.resume_from, ", ".join(changed))
    atomic_write_text(path, dumps_deterministic(record))
    step = 0
    if plan.resume_from is not None:
        step = json.loads((plan.resume_from / "trainer_state.json").read_text(encoding="utf-8"))[
            "global_step"
        ]
    for name in (TRAIN_LOG, SAMPLES_LOG, COMPLETIONS_LOG):
        truncate_jsonl(plan.output_dir / name, step)


def callbacks(plan: RunPlan, tracking: MlflowTarget | None, record: dict[str, Any]) -> list[Any]:
    """The local JSONL log always; MLflow when a tracking URI is configured; the checkpoint upload
    when ``$VRFT_CHECKPOINT_URI`` names a store prefix (:mod:`vrft.train.remote_checkpoints`)."""
    from vrft.train.remote_checkpoints import uploader_from_env

    result: list[Any] = [JsonlLogCallback(plan.output_dir)]
    tracking = tracking or MlflowTarget()
    if tracking.resolved_uri():
        result.append(MlflowCallback(tracking, flatten(record), plan.output_dir))
    uploader = uploader_from_env(plan.checkpoints_kept)
    if uploader is not None:  # after the logs: the upload carries them up to the saved step
        result.append(uploader)
    return result


def train_and_save(
    trainer: Any, method: str, config: StageConfig, model: ModelConfig, plan: RunPlan
) -> TrainResult:
    """Train (resuming if planned), then write the final model directory."""
    try:
        output = trainer.train(resume_from_checkpoint=str(plan.resume_from) if plan.resume_from else None)
    except BaseException as exc:  # transformers' callbacks have no exception event: end tracked runs FAILED
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, MlflowCallback):
                callback.on_exception(exc)
        raise
    step = trainer.state.global_step
    info = {
        "method": method,
        "base_model": model.name_or_path,
        "family": model.resolved_family(),
        "global_step": step,
        "min_pixels": model.min_pixels,
        "max_pixels": model.max_pixels,
    }
    final, adapter = save_final(trainer, plan.output_dir, base=model, lora=config.lora.enabled, info=info)
    metrics = {k: float(v) for k, v in output.metrics.items() if isinstance(v, (int, float))}
    return TrainResult(method, plan.output_dir, final, adapter, step, plan.resume_from, metrics)
