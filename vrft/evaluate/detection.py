"""Detection evaluation: the paper's two-step protocol, COCO mAP (pycocotools) and LVIS AP (lvis API).

Protocol (paper §4.1): for each eval image and each of the experiment's categories, first ask
whether the category is present (the ``existence`` prompt), then ask for boxes (the Table 1
detection prompt) where it is. :class:`~vrft.evaluate.config.EvaluateConfig` names three modes —
``existence_gated`` (that protocol), ``all_categories`` (boxes for every pair, no gate) and
``gt_present`` (boxes only for categories in the ground truth). Boxes come back in the model's
convention and are mapped to original pixels with its :class:`~vrft.models.coords.BoxConvention`;
each box's score is its predicted confidence.

AP itself is never re-implemented: the ground truth is written as a COCO (or LVIS) JSON built from
the eval rows and scored with ``COCOeval`` / ``LVISEval``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vrft.answers import parse_detections
from vrft.config import ConfigError
from vrft.evaluate.common import TaskOutput, answer_of, eval_prompt, format_rate, quiet
from vrft.evaluate.config import EvaluateConfig
from vrft.evaluate.data import EvalSplit
from vrft.evaluate.gate import GATE_FILE, Gate, answered_gate, authors_file_gate, ground_truth_gate
from vrft.evaluate.inference import Generator, Request
from vrft.models.coords import BoxConvention
from vrft.tasks import prompt_text


@dataclass(frozen=True)
class Category:
    name: str
    id: int


@dataclass
class EvalImage:
    """One eval image with its ground truth for the experiment's categories (original pixels)."""

    image_id: str
    coco_id: int  # integer id in the COCO/LVIS JSON (the source's own id when it is numeric)
    row: int  # index of one of its rows in EvalSplit.rows (to load the image)
    width: int
    height: int
    file_name: str
    gt: dict[str, list[list[float]]] = field(default_factory=dict)  # present category -> boxes
    negatives: set[str] = field(default_factory=set)  # categories verified absent (LVIS negatives)


@dataclass
class DetectionMetrics:
    """AP over IoU .50:.95 (``mAP``) and at .50 (``AP50``); per category keyed by category id.

    ``None`` where there is nothing to score (no ground truth for the category, or at all).
    """

    mAP: float | None
    AP50: float | None
    per_category: dict[int, dict[str, float | None]]


def group_images(rows: Sequence[dict[str, Any]]) -> list[EvalImage]:
    """Eval rows (one per image and category) -> one :class:`EvalImage` per image, in row order."""
    images: dict[str, EvalImage] = {}
    numeric = all(str(r["image_id"]).isdigit() for r in rows)
    for index, row in enumerate(rows):
        image_id = str(row["image_id"])
        image = images.get(image_id)
        if image is None:
            coco_id = int(image_id) if numeric else len(images) + 1
            image = EvalImage(
                image_id, coco_id, index, int(row["width"]), int(row["height"]), row.get("file_name", "")
            )
            images[image_id] = image
        if row["gt_boxes"]:
            image.gt.setdefault(row["category"], []).extend([list(map(float, b)) for b in row["gt_boxes"]])
        else:
            image.negatives.add(row["category"])
    if len({i.coco_id for i in images.values()}) != len(images):  # e.g. "7" and "007"
        for n, image in enumerate(images.values(), start=1):
            image.coco_id = n
    return list(images.values())


def experiment_categories(rows: Sequence[dict[str, Any]], manifest: dict[str, Any]) -> list[Category]:
    """The categories asked about: those of the eval rows, in the dataset manifest's order.

    Ids are the source's category ids, so ``coco_results.json`` also scores against the official
    annotation file.
    """
    ids: dict[str, int] = {}
    for row in rows:
        ids.setdefault(row["category"], int(row["category_id"]))
    listed = (manifest.get("categories") or {}).get("eval") or []
    order = {name: n for n, name in enumerate(listed)}
    names = sorted(ids, key=lambda name: (order.get(name, len(order)), name))
    return [Category(name, ids[name]) for name in names]


def ground_truth_json(
    images: Sequence[EvalImage], categories: Sequence[Category], *, federated: bool = False
) -> dict[str, Any]:
    """A COCO instances dict (LVIS when ``federated``: with ``neg_category_ids``) from the eval images."""
    by_name = {c.name: c for c in categories}
    annotations = []
    coco_images = []
    for image in images:
        entry: dict[str, Any] = {
            "id": image.coco_id,
            "width": image.width,
            "height": image.height,
            "file_name": image.file_name,
            "vrft_image_id": image.image_id,
        }
        if federated:
            entry["neg_category_ids"] = sorted(by_name[n].id for n in image.negatives if n in by_name)
            entry["not_exhaustive_category_ids"] = []
        coco_images.append(entry)
        for name, boxes in image.gt.items():
            if name not in by_name:
                continue
            for x1, y1, x2, y2 in boxes:
                w, h = x2 - x1, y2 - y1
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image.coco_id,
                        "category_id": by_name[name].id,
                        "bbox": [x1, y1, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
    cats: list[dict[str, Any]] = [{"id": c.id, "name": c.name} for c in categories]
    if federated:
        # LVISEval groups categories by frequency; the rows do not carry it, and vrft reports no
        # APr/APc/APf, so every category gets the same placeholder group.
        for cat in cats:
            cat["frequency"] = "r"
    return {"images": coco_images, "annotations": annotations, "categories": cats}


def answer_boxes(
    answer: str | None, convention: BoxConvention, width: int, height: int
) -> tuple[list[tuple[list[float], float]], int]:
    """A detection answer in the model's convention -> ``([(original-pixel box, score)], invalid count)``.

    Boxes that are malformed, or empty once clipped to the image, are counted and dropped (in AP
    terms an unusable box is a detection that matches nothing, which cannot raise AP).
    """
    parsed = parse_detections(answer)
    boxes: list[tuple[list[float], float]] = []
    invalid = 0
    for predicted in parsed.boxes:
        if not predicted.valid or predicted.box is None:
            invalid += 1
            continue
        x1, y1, x2, y2 = convention.to_original(predicted.box, width, height)
        if x2 <= x1 or y2 <= y1:
            invalid += 1
            continue
        boxes.append(([x1, y1, x2, y2], predicted.confidence))
    return boxes, invalid


def _load_json(data: dict[str, Any] | list[Any] | str | Path) -> Any:
    if isinstance(data, (str, Path)):
        return json.loads(Path(data).read_text(encoding="utf-8"))
    return copy.deepcopy(data)  # the APIs add fields to what they are given


def _per_category(
    precision: np.ndarray, category_ids: Sequence[int], area_ranges: bool = False
) -> dict[int, dict[str, float | None]]:
    """AP and AP50 per category from an accumulated precision array [T, R, K, A(, M)] (area 'all',
    the largest max-detections setting), as COCOeval/LVISEval average it: over entries > -1.
    ``area_ranges`` (LVIS only) averages over every area range instead, as the authors' LVIS notebook."""
    out: dict[int, dict[str, float | None]] = {}
    for k, cat_id in enumerate(category_ids):
        if area_ranges:
            p = precision[:, :, k, :]
        else:
            p = precision[:, :, k, 0, -1] if precision.ndim == 5 else precision[:, :, k, 0]
        valid = p[p > -1]
        valid50 = p[0][p[0] > -1]
        out[int(cat_id)] = {
            "AP": float(np.mean(valid)) if valid.size else None,
            "AP50": float(np.mean(valid50)) if valid50.size else None,
        }
    return out


def coco_metrics(
    gt: dict[str, Any] | str | Path,
    results: list[dict[str, Any]] | str | Path,
    category_ids: Sequence[int] | None = None,
) -> DetectionMetrics:
    """COCO bbox AP with pycocotools' ``COCOeval``: ``mAP`` is exactly its ``stats[0]``.

    ``gt`` is a COCO instances dict or JSON path, ``results`` a COCO results list or JSON path;
    ``category_ids`` restricts the evaluation (default: every ground-truth category). An empty
    results list (a model that never answered with a box) scores 0 wherever there is ground truth.
    """
    gt_data, results_data = _load_json(gt), _load_json(results)
    with quiet():
        gt_api = COCO()
        gt_api.dataset = gt_data
        gt_api.createIndex()
        if results_data:
            dt_api = gt_api.loadRes(results_data)
        else:  # loadRes cannot take an empty list
            dt_api = COCO()
            dt_api.dataset = {
                "images": list(gt_data["images"]),
                "categories": list(gt_data["categories"]),
                "annotations": [],
            }
            dt_api.createIndex()
        evaluator = COCOeval(gt_api, dt_api, "bbox")
        if category_ids is not None:
            evaluator.params.catIds = [int(c) for c in category_ids]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    per_category = _per_category(evaluator.eval["precision"], evaluator.params.catIds)
    return DetectionMetrics(
        mAP=float(stats[0]) if stats[0] > -1 else None,
        AP50=float(stats[1]) if stats[1] > -1 else None,
        per_category=per_category,
    )


@contextlib.contextmanager
def numpy_float_alias() -> Iterator[None]:
    """lvis 0.5.3, the latest release, calls ``np.float``, which NumPy 1.24 removed: alias it to
    ``float`` (what it always meant) while the lvis API runs, and remove the alias afterwards."""
    added = not hasattr(np, "float")
    if added:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del np.float  # type: ignore[attr-defined]


def lvis_metrics(
    gt_path: str | Path,
    results: list[dict[str, Any]] | str | Path,
    max_detections: int = 300,
    average: str = "area_all",
) -> DetectionMetrics:
    """LVIS (federated) bbox AP with the lvis API, at most ``max_detections`` per image.

    ``mAP`` is ``LVISEval.results["AP"]``. Detections of a category that an image neither contains
    nor lists as verified absent are ignored, as in the official evaluation. With no detections at
    all (``LVISResults`` cannot take an empty list) every category with ground truth scores 0.
    ``average="area_ranges"``: per-category AP averaged over all four area ranges too, and ``mAP``
    (``AP50``) the mean of those per-category values — the authors' LVIS notebook.
    """
    try:
        from lvis import LVIS, LVISEval, LVISResults
    except ImportError:
        raise ImportError("LVIS evaluation needs the lvis package: pip install 'vrft[lvis]'") from None

    results_data = _load_json(results)
    gt_api = LVIS(str(gt_path))
    category_ids = sorted(gt_api.get_cat_ids())
    if not results_data:
        with_gt = {ann["category_id"] for ann in gt_api.dataset["annotations"]}
        per_category: dict[int, dict[str, float | None]] = {
            c: ({"AP": 0.0, "AP50": 0.0} if c in with_gt else {"AP": None, "AP50": None})
            for c in category_ids
        }
        score = 0.0 if with_gt else None
        return DetectionMetrics(mAP=score, AP50=score, per_category=per_category)
    dt_api = LVISResults(gt_api, results_data, max_dets=max_detections)
    evaluator = LVISEval(gt_api, dt_api, iou_type="bbox")
    evaluator.params.max_dets = max_detections
    with numpy_float_alias():
        evaluator.run()
    ap, ap50 = evaluator.results["AP"], evaluator.results["AP50"]
    if average == "area_ranges":
        per_category = _per_category(evaluator.eval["precision"], evaluator.params.cat_ids, area_ranges=True)
        values = {k: [v[k] for v in per_category.values() if v[k] is not None] for k in ("AP", "AP50")}
        return DetectionMetrics(
            mAP=float(np.mean(values["AP"])) if values["AP"] else None,
            AP50=float(np.mean(values["AP50"])) if values["AP50"] else None,
            per_category=per_category,
        )
    return DetectionMetrics(
        mAP=float(ap) if ap > -1 else None,
        AP50=float(ap50) if ap50 > -1 else None,
        per_category=_per_category(evaluator.eval["precision"], evaluator.params.cat_ids),
    )


def _row_for(image: EvalImage, category: Category) -> dict[str, Any]:
    """The fields :func:`vrft.tasks.prompt_text` reads, for any (image, category) pair."""
    return {
        "task": "detection",
        "image_id": image.image_id,
        "category": category.name,
        "width": image.width,
        "height": image.height,
        "noun": "",
        "instruction": "",
    }


def _pairs(images: Sequence[EvalImage], categories: Sequence[Category], mode: str) -> list[tuple[int, int]]:
    """(image index, category index) pairs asked in step one (gated) or directly for boxes."""
    if mode == "gt_present":
        return [
            (i, c)
            for i, image in enumerate(images)
            for c, cat in enumerate(categories)
            if cat.name in image.gt
        ]
    return [(i, c) for i in range(len(images)) for c in range(len(categories))]


def _metric_kind(config: EvaluateConfig, split: EvalSplit) -> str:
    if config.metric != "auto":
        return config.metric
    return "lvis" if split.eval_source_kind == "lvis" else "coco"


def _group_means(
    per_name: dict[str, dict[str, float | None]], groups: dict[str, list[str]], known: set[str]
) -> dict[str, float]:
    out: dict[str, float] = {}
    for group, members in groups.items():
        unknown = [m for m in members if m not in known]
        if unknown:
            raise ConfigError(
                f"category_groups.{group}: {', '.join(map(repr, unknown))} not among the eval "
                f"categories ({', '.join(sorted(known))})"
            )
        values = [per_name[m]["AP"] for m in members if m in per_name and per_name[m]["AP"] is not None]
        if values:
            out[f"mAP/{group}"] = float(np.mean(values))
    return out


def restrict_ground_truth(
    official: dict[str, Any], images: Sequence[EvalImage], categories: Sequence[Category], source: str
) -> dict[str, Any]:
    """The dataset's official-format ground truth (``eval_ground_truth.json``) cut to the evaluated
    images and categories, unchanged otherwise: crowd regions stay (COCOeval ignores detections on
    them), and so do LVIS's ``neg_category_ids`` / ``not_exhaustive_category_ids`` (the lvis API
    ignores unmatched detections where a category is not exhaustively annotated). Sets each
    image's ``coco_id`` to the file's id, so results score against the official file too."""
    by_id = {str(entry["id"]): entry for entry in official.get("images", [])}
    cat_ids = {c.id for c in categories}
    kept = []
    for image in images:
        entry = by_id.get(image.image_id)
        if entry is None:
            raise ValueError(
                f"{source}: image {image.image_id!r} of the eval split is not in the ground truth file"
            )
        image.coco_id = entry["id"]
        entry = dict(entry)
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            if key in entry:
                entry[key] = [c for c in entry[key] if c in cat_ids]
        kept.append(entry)
    kept_ids = {entry["id"] for entry in kept}
    annotations = [
        a
        for a in official.get("annotations", [])
        if a["image_id"] in kept_ids and a["category_id"] in cat_ids
    ]
    cats = [c for c in official.get("categories", []) if c["id"] in cat_ids]
    return {"images": kept, "annotations": annotations, "categories": cats}


def evaluate_detection(
    split: EvalSplit,
    generator: Generator,
    convention: BoxConvention,
    config: EvaluateConfig,
    out_dir: Path,
    *,
    gate: Gate | None = None,
    gate_label: str = "",
) -> TaskOutput:
    """Run the protocol over the split, write the GT and results JSONs into ``out_dir``, score them.

    ``existence_gated`` uses ``gate`` (shared by every checkpoint on this split); without one it is
    computed here — from the ground truth, or with ``generator`` (which must then be the base
    model, named by ``gate_label``) — and written to ``out_dir/gate.json`` for the others.
    """
    images = group_images(split.rows)
    categories = experiment_categories(split.rows, split.manifest)
    metric = _metric_kind(config, split)
    federated = metric == "lvis"
    listed = set((split.manifest.get("categories") or {}).get("eval") or [])
    known = {c.name for c in categories} | listed
    mode = config.detection_mode
    pairs = _pairs(images, categories, mode)
    keys = [(images[i].image_id, categories[c].name) for i, c in pairs]
    present = {(image.image_id, name) for image in images for name in image.gt}
    absent = {(image.image_id, name) for image in images for name in image.negatives} if federated else None

    def request(i: int, c: int, step: str) -> Request:
        image, cat = images[i], categories[c]
        prompt = eval_prompt(
            prompt_text(
                _row_for(image, cat), convention, prompt="existence" if step == "existence" else None
            ),
            config,
        )
        return Request(f"{image.image_id}|{cat.name}|{step}", image.row, prompt, image.width * image.height)

    completions: list[dict[str, Any]] = []
    texts: list[str] = []
    if mode == "existence_gated":
        if gate is None and config.gate_source == "ground_truth":
            gate = ground_truth_gate(keys, present, split.manifest_sha256, absent)
        elif gate is None and config.gate_source == "authors_file":
            gate = authors_file_gate(config.gate_file, keys, present, absent)
        elif gate is None:
            asked = [request(i, c, "existence") for i, c in pairs]
            answers = generator.generate(asked, split.load_image, desc="existence")
            for (i, c), req, text in zip(pairs, asked, answers, strict=True):
                completions.append(
                    {
                        "key": req.key,
                        "step": "existence",
                        "image_id": images[i].image_id,
                        "category": categories[c].name,
                        "prompt": req.prompt,
                        "completion": text,
                    }
                )
                texts.append(text)
            parsed = [answer_of(t, config.require_answer_tags) for t in answers]
            gate = answered_gate(
                keys, parsed, f"base_model:{gate_label}", present, split.manifest_sha256, absent
            )
        gate.check(keys, split.manifest_sha256, "evaluate.gate")
        gate.write(out_dir / GATE_FILE)
        box_pairs = [p for p, key in zip(pairs, keys, strict=True) if gate.open[key]]
    else:
        box_pairs = pairs
    box_requests = [request(i, c, "boxes") for i, c in box_pairs]
    box_texts = generator.generate(box_requests, split.load_image, desc="boxes")

    answered: dict[tuple[int, int], tuple[list[tuple[list[float], float]], int]] = {}
    for (i, c), req, text in zip(box_pairs, box_requests, box_texts, strict=True):
        image = images[i]
        boxes, invalid = answer_boxes(
            answer_of(text, config.require_answer_tags), convention, image.width, image.height
        )
        answered[(i, c)] = (boxes, invalid)
        completions.append(
            {
                "key": req.key,
                "step": "boxes",
                "image_id": image.image_id,
                "category": categories[c].name,
                "prompt": req.prompt,
                "completion": text,
            }
        )
        texts.append(text)

    official_path = split.ground_truth_path
    if official_path is not None and config.ground_truth == "official":
        gt = restrict_ground_truth(
            json.loads(official_path.read_text(encoding="utf-8")), images, categories, str(official_path)
        )
        gt_origin = "official"
    else:
        gt = ground_truth_json(images, categories, federated=federated)
        gt_origin = "rebuilt"

    results: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    for (i, c), key in zip(pairs, keys, strict=True):
        image, cat = images[i], categories[c]
        boxes, invalid = answered.get((i, c), ([], 0))
        for (x1, y1, x2, y2), score in boxes:
            results.append(
                {
                    "image_id": image.coco_id,
                    "category_id": cat.id,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
        line: dict[str, Any] = {
            "image_id": image.image_id,
            "coco_image_id": image.coco_id,
            "category": cat.name,
            "category_id": cat.id,
            "asked_boxes": (i, c) in answered,
            "boxes": [b for b, _ in boxes],
            "scores": [s for _, s in boxes],
            "invalid_boxes": invalid,
            "gt_boxes": image.gt.get(cat.name, []),
        }
        if gate is not None:
            line["gate_open"] = gate.open[key]
        predictions.append(line)

    gt_name = f"{metric}_gt.json"
    gt_text = json.dumps(gt)
    (out_dir / gt_name).write_text(gt_text, encoding="utf-8")
    category_ids = [c.id for c in categories]
    if metric == "lvis":
        scores = lvis_metrics(out_dir / gt_name, results, config.lvis_max_detections, config.lvis_ap_average)
    else:
        scores = coco_metrics(gt, results, category_ids)

    per_name = {c.name: scores.per_category.get(c.id, {"AP": None, "AP50": None}) for c in categories}
    metrics: dict[str, float] = {}
    if scores.mAP is not None:
        metrics["mAP"] = scores.mAP
    if scores.AP50 is not None:
        metrics["AP50"] = scores.AP50
    for name, values in per_name.items():
        for k in ("AP", "AP50"):
            if values[k] is not None:
                metrics[f"{k}/{name}"] = float(values[k])  # type: ignore[arg-type]
    metrics.update(_group_means(per_name, config.category_groups, known))
    metrics["format_rate"] = format_rate(texts)
    if gate is not None:
        metrics.update({f"existence/{k}": v for k, v in gate.metrics.items() if k in ("recall", "accuracy")})
    details = {
        "mode": mode,
        "metric": metric,
        "categories": [c.name for c in categories],
        "category_ids": {c.name: c.id for c in categories},
        "num_pairs": len(pairs),
        "num_box_requests": len(box_requests),
        "num_detections": len(results),
        "gt_file": gt_name,
        "ground_truth": gt_origin,
        "ground_truth_sha256": hashlib.sha256(gt_text.encode("utf-8")).hexdigest(),
        "results_file": "coco_results.json",
        "images": len(images),
    }
    if gate is not None:
        details["gate"] = {"source": gate.source, "file": GATE_FILE, **gate.metrics}
        if gate.file_sha256:
            details["gate"]["file_sha256"] = gate.file_sha256
    return TaskOutput(
        metrics=metrics,
        per_category=per_name,
        predictions=predictions,
        completions=completions,
        details=details,
        files={"coco_results.json": results},
        num_requests=len(texts),
    )
