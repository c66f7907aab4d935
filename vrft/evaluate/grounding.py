"""Reasoning-grounding evaluation (LISA): box mIoU, and mask gIoU through SAM when configured.

``mIoU`` is the mean over eval rows of the IoU between the predicted box (mapped to original
pixels) and the ground-truth box; an answer without a usable box scores 0. ``box_accuracy`` is the
share of rows with IoU >= ``iou_threshold``.

``gIoU`` follows LISA: SAM is prompted with the predicted box, and the mean over rows of the
IoU between SAM's mask and the ground-truth mask (the union of the LISA polygons; pixels of
``ignore`` polygons count for neither) is reported. It needs the ``segment_anything`` package, SAM
weights (``sam_checkpoint``) and the LISA directory (``masks_dir``), since dataset rows keep only
boxes. Nothing is approximated when any of these is missing: the run stops with a clear error.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from vrft.answers import first_integer_pair_box, parse_single_box
from vrft.config import ConfigError
from vrft.evaluate.common import TaskOutput, answer_of, format_rate
from vrft.evaluate.config import EvaluateConfig
from vrft.evaluate.data import EvalSplit
from vrft.evaluate.inference import Generator, Request, resolve_device
from vrft.models.coords import BoxConvention, box_iou
from vrft.tasks import prompt_text

MaskPredictor = Callable[[Image.Image, list[float]], np.ndarray]


def polygon_masks(annotation: dict[str, Any], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """``(target, ignore)`` boolean masks of a LISA (LabelMe) annotation's polygons.

    >>> target, ignore = polygon_masks({"shapes": [{"label": "target", "points": [[0, 0], [4, 0], [4, 4], [0, 4]]}]}, 8, 8)
    >>> int(target.sum()), int(ignore.sum())
    (16, 0)
    """
    target = np.zeros((height, width), dtype=bool)
    ignore = np.zeros((height, width), dtype=bool)
    for shape in annotation.get("shapes", []):
        points = shape.get("points") or []
        if len(points) < 3:
            continue
        flat = [float(v) for point in points for v in point]
        rle = mask_utils.merge(mask_utils.frPyObjects([flat], height, width))
        mask = mask_utils.decode(rle).astype(bool)
        if str(shape.get("label", "")).strip().lower() == "ignore":
            ignore |= mask
        else:
            target |= mask
    return target & ~ignore, ignore


def first_polygon_mask(annotation: dict[str, Any], width: int, height: int) -> np.ndarray | None:
    """The authors' gIoU ground truth (their ``mask_iou.py``): the first shape's polygon, whatever its
    label, drawn filled with PIL; ``None`` when the annotation has no shape (they skip such images).

    >>> mask = first_polygon_mask({"shapes": [{"label": "ignore", "points": [[0, 0], [3, 0], [3, 3], [0, 3]]}]}, 8, 8)
    >>> int(mask.sum())
    16
    """
    shapes = annotation.get("shapes") or []
    if not shapes or len(shapes[0].get("points") or []) < 2:
        return None
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon([tuple(map(float, p)) for p in shapes[0]["points"]], outline=1, fill=1)
    return np.asarray(canvas, dtype=bool)


def mask_iou(predicted: np.ndarray, target: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """IoU of two boolean masks, pixels under ``ignore`` left out.

    >>> a = np.zeros((4, 4), bool); a[:2] = True
    >>> b = np.zeros((4, 4), bool); b[:, :2] = True
    >>> mask_iou(a, b)
    0.3333333333333333
    """
    keep = ~ignore if ignore is not None else np.ones_like(target, dtype=bool)
    union = np.logical_or(predicted, target)[keep].sum()
    if union == 0:
        return 0.0
    return float(np.logical_and(predicted, target)[keep].sum() / union)


def sam_predictor(checkpoint: str, model_type: str, device: str) -> MaskPredictor:
    """A box-prompted SAM mask predictor; raises a clear error when SAM cannot be used."""
    if importlib.util.find_spec("segment_anything") is None:
        raise ConfigError(
            "sam_checkpoint is set but the segment_anything package is not installed "
            "(pip install git+https://github.com/facebookresearch/segment-anything); "
            "unset sam_checkpoint to report box mIoU only"
        )
    if not Path(checkpoint).is_file():
        raise ConfigError(f"sam_checkpoint: {checkpoint} is not a file")
    from segment_anything import SamPredictor, sam_model_registry

    if model_type not in sam_model_registry:
        raise ConfigError(f"sam_model_type: {model_type!r} is not one of {sorted(sam_model_registry)}")
    sam = sam_model_registry[model_type](checkpoint=checkpoint)
    sam.to(resolve_device(device))
    predictor = SamPredictor(sam)

    def predict(image: Image.Image, box: list[float]) -> np.ndarray:
        predictor.set_image(np.asarray(image.convert("RGB")))
        masks, _, _ = predictor.predict(box=np.asarray(box, dtype=np.float32), multimask_output=False)
        return masks[0].astype(bool)

    return predict


def _lisa_annotation(masks_dir: Path, file_name: str) -> dict[str, Any]:
    path = masks_dir / f"{Path(file_name).stem}.json"
    if not path.is_file():
        raise FileNotFoundError(f"masks_dir: no LISA annotation {path} for eval image {file_name}")
    return json.loads(path.read_text(encoding="utf-8"))


def evaluate_grounding(
    split: EvalSplit,
    generator: Generator,
    convention: BoxConvention,
    config: EvaluateConfig,
    mask_predictor: MaskPredictor | None = None,
) -> TaskOutput:
    """Box mIoU over the split; mask gIoU as well when ``mask_predictor`` is given.

    ``grounding_instructions: first`` (the authors' protocol) scores one row per image: the first
    instruction; ``all`` scores every instruction of every image.
    """
    indices = list(range(len(split.rows)))
    if config.grounding_instructions == "first":
        first: dict[str, int] = {}
        for i, row in enumerate(split.rows):
            first.setdefault(row["image_id"], i)
        indices = sorted(first.values())
    rows = [split.rows[i] for i in indices]
    requests = [
        Request(f"{row['image_id']}|{i}", i, prompt_text(row, convention), row["width"] * row["height"])
        for i, row in zip(indices, rows, strict=True)
    ]
    texts = generator.generate(requests, split.load_image, desc="grounding")
    predictions, completions, ious, mask_ious = [], [], [], []
    for i, row, req, text in zip(indices, rows, requests, texts, strict=True):
        width, height = int(row["width"]), int(row["height"])
        if config.grounding_answer == "first_pair":
            model_box = first_integer_pair_box(text)
        else:
            model_box = parse_single_box(answer_of(text, config.require_answer_tags))
        box = convention.to_original(model_box, width, height) if model_box is not None else None
        gt_box = list(row["gt_boxes"][0])
        iou = box_iou(box, gt_box) if box is not None else 0.0
        ious.append(iou)
        line: dict[str, Any] = {
            "image_id": row["image_id"],
            "instruction": row["instruction"],
            "box": box,
            "gt_box": gt_box,
            "iou": iou,
        }
        if mask_predictor is not None:
            annotation = _lisa_annotation(Path(config.masks_dir), row["file_name"])
            if config.grounding_mask == "first_polygon":
                first = first_polygon_mask(annotation, width, height)
                target, ignore = (first, None) if first is not None else (None, None)
            else:
                target, ignore = polygon_masks(annotation, width, height)
            if target is not None:  # the authors leave an image without a shape out of gIoU
                predicted = (
                    mask_predictor(split.load_image(i), box) if box is not None else np.zeros_like(target)
                )
                line["mask_iou"] = mask_iou(predicted, target, ignore)
                mask_ious.append(line["mask_iou"])
        predictions.append(line)
        completions.append(
            {
                "key": req.key,
                "step": "grounding",
                "image_id": row["image_id"],
                "prompt": req.prompt,
                "completion": text,
            }
        )
    metrics = {
        "mIoU": float(np.mean(ious)),
        "box_accuracy": float(np.mean([iou >= config.iou_threshold for iou in ious])),
        "format_rate": format_rate(texts),
    }
    if mask_predictor is not None and mask_ious:
        metrics["gIoU"] = float(np.mean(mask_ious))
    return TaskOutput(
        metrics=metrics,
        per_category={},
        predictions=predictions,
        completions=completions,
        details={
            "iou_threshold": config.iou_threshold,
            "masks": mask_predictor is not None,
            "instructions": config.grounding_instructions,
            "answer": config.grounding_answer,
            "mask": config.grounding_mask,
            "rows_scored": len(rows),
        },
        num_requests=len(requests),
    )
