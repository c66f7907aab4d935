"""Resumable checkpoints and the final Hugging Face model directory.

``output_dir/checkpoint-N`` are the Trainer's own checkpoints: weights, optimizer, scheduler, RNG
states and ``trainer_state.json`` (with ``save_only_model`` off, so a resume restores everything).
``trainer_state.json`` is written last, so a checkpoint whose state file parses and names step N
is complete; one cut short by a kill is skipped by :func:`latest_checkpoint`.

``output_dir/final`` is what evaluation and users load with ``from_pretrained``: safetensors weights,
config, generation config and processor, plus a ``manifest.json`` (:mod:`vrft.io`) saying how it was
trained. With LoRA it holds the adapter merged into the base weights and the adapter itself is kept
in ``output_dir/adapter``. Under DeepSpeed ZeRO-3 the Trainer gathers the sharded 16-bit weights on
save (``stage3_gather_16bit_weights_on_model_save``, required by :mod:`vrft.train.config`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from vrft.config import ConfigError
from vrft.io import atomic_directory, write_manifest
from vrft.models.config import ModelConfig

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
CHECKPOINT_URI_ENV = "VRFT_CHECKPOINT_URI"
"""The store prefix a training run mirrors its checkpoints to (:mod:`vrft.train.remote_checkpoints`);
unset: checkpoints stay local."""
FINAL_DIR = "final"
ADAPTER_DIR = "adapter"
MODEL_FORMAT = "vrft.model/1"


def is_complete_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds a full training state: a readable ``trainer_state.json`` for its step,
    optimizer state (``optimizer.pt``, or DeepSpeed's ``global_stepN/``), and no file cut short.

    ``trainer_state.json`` is written last, but a checkpoint can still be truncated afterwards (a
    partial copy or download, a file system that lost unflushed pages): every safetensors file's
    header must cover the file (:func:`truncated_file`), and every torch ``.pt``/``.pth`` file
    (a zip archive) must end with its central directory.
    """
    return incomplete_reason(path) == ""


def incomplete_reason(path: Path) -> str:
    """Why ``path`` is not a complete checkpoint, or ``""`` (see :func:`is_complete_checkpoint`)."""
    match = CHECKPOINT_PATTERN.match(path.name)
    if match is None:
        return "not named checkpoint-N"
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "no readable trainer_state.json"
    if not isinstance(state, dict) or state.get("global_step") != int(match.group(1)):
        return f"trainer_state.json is not the state of step {match.group(1)}"
    if not (path / "optimizer.pt").is_file() and not any(p.is_dir() for p in path.glob("global_step*")):
        return "no optimizer state (optimizer.pt or global_step*/)"
    for file in sorted(path.rglob("*")):
        problem = truncated_file(file) if file.is_file() else ""
        if problem:
            return f"{file.relative_to(path)} {problem}"
    return ""


def truncated_file(file: Path) -> str:
    """Why a safetensors or torch-pickle file is cut short or unreadable, or ``""`` (others: ``""``).

    Only headers are read: the safetensors header names every tensor's byte range, a torch zip
    archive ends with its central directory, so a truncated file is caught without loading it.
    """
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt"):
                return ""
        except Exception as exc:  # SafetensorError and OSError alike: the file cannot be loaded
            return f"is not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if file.suffix in (".pt", ".pth"):
        import zipfile

        return "" if zipfile.is_zipfile(file) else "is cut short (no zip central directory)"
    return ""


def checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-N`` directories in ``output_dir``, newest step first, complete or not."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: -int(CHECKPOINT_PATTERN.match(p.name).group(1)))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``output_dir``, or None."""
    for path in checkpoints(Path(output_dir)):
        reason = incomplete_reason(path)
        if not reason:
            return path
        logger.warning(
            "skipping %s: incomplete, %s (the run was probably killed while saving it)", path, reason
        )
    return None


def resolve_resume(resume: str, output_dir: Path, section: str) -> Path | None:
    """The checkpoint to resume from for ``resume`` = ``auto`` | ``never`` | a checkpoint directory."""
    if resume == "auto":
        return latest_checkpoint(output_dir)
    if resume == "never":
        existing = checkpoints(output_dir)
        if existing:
            raise ConfigError(
                f"{section}.resume: 'never', but {output_dir} already holds {existing[0].name}: "
                "use resume=auto to continue that run, or another output directory"
            )
        return None
    path = Path(resume)
    reason = incomplete_reason(path)
    if reason:
        raise ConfigError(
            f"{section}.resume: {path} is not a complete checkpoint-N directory: {reason} (it needs "
            "trainer_state.json, the optimizer state and whole weight files)"
        )
    return path


def load_checkpoint_weights(model: Any, checkpoint: Path) -> None:
    """Load a checkpoint's full weights into ``model``, every parameter or an error.

    ``save_pretrained`` writes Qwen-VL weights under their original checkpoint names
    (``model.layers.*``, ``visual.*``) while the module has ``model.language_model.*`` and
    ``model.visual.*``; the Trainer's resume loads them with a non-strict ``load_state_dict``, so
    all but a few weights would silently keep their initial values. ``from_pretrained`` maps the
    names; the strict copy proves nothing was missed.
    """
    dtype = next(model.parameters()).dtype
    saved = type(model).from_pretrained(str(checkpoint), dtype=dtype, config=model.config)
    model.load_state_dict(saved.state_dict(), strict=True)


class CheckpointWeightsMixin:
    """For Trainer subclasses: resume full-weight checkpoints with :func:`load_checkpoint_weights`.

    Adapter checkpoints (peft) and DeepSpeed checkpoints (its own format, loaded strictly by the
    Trainer) keep the Trainer's loading.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        from peft import PeftModel

        target = model if model is not None else self.model  # type: ignore[attr-defined]
        path = Path(resume_from_checkpoint)
        full_weights = (path / "model.safetensors").is_file() or (
            path / "model.safetensors.index.json"
        ).is_file()
        if isinstance(target, PeftModel) or not full_weights:
            super()._load_from_checkpoint(resume_from_checkpoint, model)  # type: ignore[misc]
            return
        load_checkpoint_weights(target, path)


def _move_contents(source: Path, target: Path) -> None:
    for entry in source.iterdir():
        os.replace(entry, target / entry.name)


def merge_adapter(base: ModelConfig, adapter_dir: Path) -> Any:
    """The base model with the LoRA adapter in ``adapter_dir`` merged into its weights.

    The base is loaded afresh rather than merged in the trained model, which under ZeRO-3 is sharded.
    """
    from peft import PeftModel

    model = base.load_model()
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def _save_in_base_format(base: ModelConfig, staging: Path, target: Path) -> None:
    """Re-save DeepSpeed-gathered weights under the base checkpoint's parameter names.

    The gathered ZeRO-3 state dict is written under shifted names (``model.model.*``) that
    ``from_pretrained`` maps back but other tools would not, and transformers saves a model in the
    format it was loaded from: so the weights go into a copy of the base model, then are saved.
    """
    model = base.load_model()
    trained = type(model).from_pretrained(str(staging), dtype=model.dtype)
    model.load_state_dict(trained.state_dict(), strict=True)
    model.save_pretrained(target)


def save_final(
    trainer: Any, output_dir: Path, *, base: ModelConfig, lora: bool, info: dict[str, Any]
) -> tuple[Path, Path | None]:
    """Write ``output_dir/final`` (and ``output_dir/adapter`` with LoRA); return their paths.

    Every process must call this (the DeepSpeed gather is collective); only the main one writes.
    Each directory appears complete or not at all, replacing an earlier one.
    """
    final = output_dir / FINAL_DIR
    adapter = output_dir / ADAPTER_DIR if lora else None
    staging = output_dir / ".final-staging"
    accelerator = trainer.accelerator
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return final, adapter
    # A pickle of the TrainingArguments; output_dir/config.json records the settings in plain JSON.
    (staging / "training_args.bin").unlink(missing_ok=True)
    if trainer.is_deepspeed_enabled:
        # Training is over: drop the ZeRO-3 hook that would shard the models loaded below.
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    manifest = {"format": MODEL_FORMAT, "lora_merged": lora, **info}
    if adapter is not None:
        with atomic_directory(adapter, overwrite=True) as tmp:
            _move_contents(staging, tmp)
        merged = merge_adapter(base, adapter)
        with atomic_directory(final, overwrite=True) as tmp:
            merged.save_pretrained(tmp)
            trainer.processing_class.save_pretrained(tmp)
            write_manifest(tmp, manifest)
    else:
        with atomic_directory(final, overwrite=True) as tmp:
            if trainer.is_deepspeed_enabled:
                _save_in_base_format(base, staging, tmp)
                trainer.processing_class.save_pretrained(tmp)
            else:
                _move_contents(staging, tmp)
            write_manifest(tmp, manifest)
    shutil.rmtree(staging, ignore_errors=True)
    return final, adapter
