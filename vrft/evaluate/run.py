"""Stage 4 entry point: :func:`evaluate_checkpoint` scores one checkpoint on a dataset's eval split.

Output directory (written atomically: complete or absent):

* ``metrics.json`` — the metrics (fractions in [0, 1]), per-category numbers, the detection mode and
  metric, model and dataset identity, timing, and the config;
* ``predictions.jsonl`` — one parsed prediction per evaluated unit (detection: per image and
  category, boxes in original pixels; classification/grounding: per row);
* ``completions.jsonl`` — every raw completion with its prompt and step (``existence``, ``boxes``,
  ``classification``, ``grounding``);
* detection: ``coco_results.json`` (COCO results format, original pixels, source category ids),
  ``coco_gt.json`` / ``lvis_gt.json`` (the ground truth the numbers were computed against) and, in
  ``existence_gated`` mode, ``gate.json`` (the shared gate this evaluation used, see
  :mod:`vrft.evaluate.gate`);
* ``manifest.json`` — SHA-256 of every file.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vrft.config import ConfigError, to_dict
from vrft.evaluate.classification import evaluate_classification
from vrft.evaluate.common import TaskOutput
from vrft.evaluate.config import EvaluateConfig
from vrft.evaluate.data import load_eval_split
from vrft.evaluate.detection import evaluate_detection
from vrft.evaluate.gate import Gate, load_gate
from vrft.evaluate.grounding import MaskPredictor, evaluate_grounding, sam_predictor
from vrft.evaluate.inference import make_generator
from vrft.io import (
    atomic_directory,
    atomic_write_text,
    check_output_apart,
    dumps_deterministic,
    write_manifest,
)
from vrft.models.config import ModelConfig
from vrft.models.loading import check_checkpoint
from vrft.paper_files import is_paper_name
from vrft.paper_mode import recorded_training

RESULT_FORMAT = "vrft.evaluation/1"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
COMPLETIONS_FILE = "completions.jsonl"


@dataclass
class EvalResult:
    """What :func:`evaluate_checkpoint` wrote; ``metrics`` is the flat, MLflow-ready dict."""

    output_dir: Path
    label: str
    task: str
    metrics: dict[str, float]
    summary: dict[str, Any]  # the content of metrics.json

    @property
    def primary_metric(self) -> str:
        """The paper's headline number for the task: mAP, accuracy or mIoU."""
        return {"detection": "mAP", "classification": "accuracy", "grounding": "mIoU"}[self.task]


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)


def evaluation_model(config: EvaluateConfig, model: ModelConfig) -> ModelConfig:
    """``model`` at the evaluation's resolution: ``evaluate.max_pixels`` when set (the authors
    evaluated at the processor default, 12.8 MP, and trained at 401,408 pixels).

    >>> evaluation_model(EvaluateConfig(max_pixels=12845056), ModelConfig(max_pixels=401408)).max_pixels
    12845056
    """
    if config.max_pixels is None:
        return model
    if config.max_pixels < model.min_pixels:
        raise ConfigError(
            f"evaluate.max_pixels: {config.max_pixels} is below model.min_pixels {model.min_pixels}"
        )
    return replace(model, max_pixels=config.max_pixels)


def checkpoint_training(checkpoint: Path | None) -> str:
    """What trained ``checkpoint`` (``reward:<name>``, ``sft:<style>``), read from the ``config.json``
    its training run wrote beside it (``<output>/final`` -> ``<output>/config.json``); ``""`` for a
    base model or a checkpoint without that record."""
    if checkpoint is None:
        return ""
    for record_path in (checkpoint / "config.json", checkpoint.parent / "config.json"):
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("method") in ("grpo", "sft"):
            return recorded_training(record)
    return ""


def evaluation_protocol(
    config: EvaluateConfig, model: ModelConfig, task: str, manifest: dict[str, Any], details: dict[str, Any]
) -> dict[str, str]:
    """What decides the numbers beyond the evaluated split, as text: the report refuses to put rows that
    differ here side by side, and names where they differ from the authors' protocol.

    Every task: ``system_prompt``, ``max_new_tokens``, ``max_pixels``. Detection: ``gate`` (who
    decided, and the authors' list's SHA-256), ``ground_truth_sha256``, ``image_placeholder``, and
    for LVIS ``lvis_ap``. Classification: ``image_placeholder``, ``class_names``, ``test_list`` (the
    shipped authors' list the eval split was read from, or ``none``). Grounding: ``lisa_box``,
    ``grounding_answer`` and, with gIoU, ``grounding_mask``.
    """
    dataset = manifest.get("config") or {}
    protocol = {
        "system_prompt": config.system_prompt or "none",
        "max_new_tokens": str(config.max_new_tokens),
        "max_pixels": str(model.max_pixels),
    }
    if task in ("detection", "classification"):
        protocol["image_placeholder"] = "yes" if config.image_placeholder else "no"
    if task == "detection":
        gate = details.get("gate") or {}
        if gate:
            source = str(gate.get("source", ""))
            kind = source.split(":", 1)[0]
            protocol["gate"] = kind + (f"@{gate['file_sha256'][:12]}" if gate.get("file_sha256") else "")
        protocol["ground_truth_sha256"] = str(details.get("ground_truth_sha256", ""))
        if details.get("metric") == "lvis":
            protocol["lvis_ap"] = config.lvis_ap_average
    elif task == "classification":
        protocol["class_names"] = str(dataset.get("class_names", "vrft"))
        source = dataset.get("eval") or dataset.get("train") or {}
        annotations = str(source.get("annotations", ""))
        protocol["test_list"] = annotations if is_paper_name(annotations) else "none"
    else:
        protocol["lisa_box"] = str(dataset.get("lisa_box", "first_polygon"))
        protocol["grounding_answer"] = config.grounding_answer
        if details.get("masks"):
            protocol["grounding_mask"] = config.grounding_mask
    return protocol


def evaluate_checkpoint(
    config: EvaluateConfig,
    dataset_dir: str | Path,
    output_dir: str | Path,
    *,
    model: ModelConfig,
    label: str = "rft",
    overwrite: bool = False,
    gate: str | Path | Gate | None = None,
    context: dict[str, str] | None = None,
) -> EvalResult:
    """Evaluate checkpoint ``model`` on the eval split of ``dataset_dir`` into ``output_dir``.

    ``label`` names the checkpoint in the outputs (``base``, ``sft``, ``rft``). An existing
    ``output_dir`` is an error unless ``overwrite``. The task (detection, classification,
    grounding) comes from the dataset.

    ``existence_gated`` detection needs one gate shared by every checkpoint on the split: ``gate``
    is a ``gate.json`` (or the base evaluation's output directory). Without it, the gate is taken
    from the ground truth (``gate_source: ground_truth``) or computed by this checkpoint — allowed
    only for ``label="base"``, since a trained checkpoint gating itself is the bias the gate removes.

    ``context`` (the pipeline's run tags: config name, shots, seed, ...) is stored in
    ``metrics.json`` so the report can place the result without asking MLflow.
    """
    config.validate()  # a config changed after it was read (paper mode sets fields) is checked again
    output_dir = Path(output_dir)
    checkpoint = (
        Path(model.name_or_path) if model.name_or_path and Path(model.name_or_path).exists() else None
    )
    gate_path = gate if isinstance(gate, (str, Path)) else None
    # overwrite would delete them
    check_output_apart(output_dir, {"dataset": dataset_dir, "checkpoint": checkpoint, "gate": gate_path})
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir}: already exists (remove it, or pass overwrite)")
    # A damaged checkpoint, or one of another family than the config says, fails here in one line,
    # not as a loader traceback (or silently misread boxes) after the dataset is read.
    check_checkpoint(model.name_or_path)
    model.check_family()
    split = load_eval_split(dataset_dir, config.max_eval_images)
    task = split.task
    shared_gate: Gate | None = None
    if task == "detection" and config.detection_mode == "existence_gated":
        if isinstance(gate, Gate):
            shared_gate = gate
        elif gate is not None:
            shared_gate = load_gate(gate)
        elif config.gate_source == "base_model" and label != "base":
            raise ConfigError(
                f"evaluate: existence_gated detection of the {label!r} checkpoint needs the base "
                "model's gate (gate.json of the base evaluation; `vrft evaluate --gate DIR`): "
                "a checkpoint must not gate itself"
            )
    mask_predictor: MaskPredictor | None = None
    if task == "grounding" and config.sam_checkpoint:  # fail before the long part, not after
        mask_predictor = sam_predictor(config.sam_checkpoint, config.sam_model_type, config.device)
    model = evaluation_model(config, model)
    processor = model.load_processor()
    convention = model.convention(processor)
    generator, backend = make_generator(config, model, processor)

    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        start = time.perf_counter()
        output: TaskOutput
        if task == "detection":
            output = evaluate_detection(
                split, generator, convention, config, tmp, gate=shared_gate, gate_label=model.name_or_path
            )
        elif task == "classification":
            output = evaluate_classification(split, generator, convention, config)
        else:
            output = evaluate_grounding(split, generator, convention, config, mask_predictor)
        seconds = time.perf_counter() - start
        num_images = len({row["image_id"] for row in split.rows})
        summary: dict[str, Any] = {
            "format": RESULT_FORMAT,
            "label": label,
            "task": task,
            "backend": backend,
            "model": {
                "name_or_path": model.name_or_path,
                "family": model.resolved_family(),
                "convention": convention.kind,
                "min_pixels": model.min_pixels,
                "max_pixels": model.max_pixels,
            },
            "context": {k: str(v) for k, v in (context or {}).items()},
            "dataset": {
                "dir": str(Path(dataset_dir)),
                "manifest_sha256": split.manifest_sha256,
                "eval_split_sha256": split.content_sha256,
                "eval_rows": len(split.rows),
                "eval_rows_total": split.total_rows,
                "images": num_images,
            },
            "metrics": output.metrics,
            "per_category": output.per_category,
            "details": output.details,
            "protocol": evaluation_protocol(config, model, task, split.manifest, output.details),
            "training": checkpoint_training(checkpoint),
            "timing": {
                "seconds": seconds,
                "requests": output.num_requests,
                "images_per_second": num_images / seconds if seconds > 0 else 0.0,
            },
            "config": to_dict(config),
        }
        for name, data in output.files.items():
            atomic_write_text(tmp / name, json.dumps(data, allow_nan=False))
        atomic_write_text(tmp / PREDICTIONS_FILE, _jsonl(output.predictions))
        atomic_write_text(tmp / COMPLETIONS_FILE, _jsonl(output.completions))
        atomic_write_text(tmp / METRICS_FILE, dumps_deterministic(summary))
        write_manifest(tmp, {"format": RESULT_FORMAT, "label": label, "task": task})
    return EvalResult(output_dir=output_dir, label=label, task=task, metrics=output.metrics, summary=summary)


def load_result(output_dir: str | Path) -> EvalResult:
    """An :class:`EvalResult` back from a finished output directory (e.g. to log it to MLflow later)."""
    output_dir = Path(output_dir)
    summary = json.loads((output_dir / METRICS_FILE).read_text(encoding="utf-8"))
    return EvalResult(
        output_dir=output_dir,
        label=summary["label"],
        task=summary["task"],
        metrics=summary["metrics"],
        summary=summary,
    )
