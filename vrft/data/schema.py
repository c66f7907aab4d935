"""The row schema every built dataset shares, whatever the task or source.

One row is one training or evaluation question: an image plus what is asked about it.

- ``image``: the image file's bytes, embedded so the saved dataset is self-contained
  (a ``datasets.Image()`` feature; with ``load_images: false`` a path string instead).
- ``image_id`` (str), ``file_name`` (str, relative to the source's image root), ``width`` and
  ``height`` (ints, original pixels).
- ``task``: ``detection`` | ``classification`` | ``grounding``.
- ``category``: detection: the category asked about; classification: the true class name;
  grounding: ``""``. ``category_id``: the source's id (detection) or class index
  (classification); ``-1`` for grounding.
- ``gt_boxes``: ``[[x1, y1, x2, y2], ...]`` in ORIGINAL pixel coordinates with x2 > x1, y2 > y1.
  Detection: every instance of ``category`` in the image; empty means "No Objects" (a negative).
  Grounding: exactly one box. Classification: empty.
- ``aliases``: other accepted names for ``category`` (LVIS synonyms, class-name variants).
- ``noun``: classification prompt noun (``plant``, ``pet``, ``aircraft``, ``car`` or custom).
- ``instruction``: grounding: the LISA instruction; otherwise ``""``.
- ``source``: the name of the source the row came from.

Model conventions (Qwen2-VL 0–1000 integers, Qwen2.5-VL resized pixels) are added by the training
stage; this schema only ever stores original pixels.
"""

from __future__ import annotations

import math
from typing import Any

import datasets

TASKS = ("detection", "classification", "grounding")
# Written next to a detection dataset: the eval source's own ground truth, cut to the eval images and
# categories (crowd regions and LVIS's federated lists kept), which evaluation scores against.
EVAL_GROUND_TRUTH = "eval_ground_truth.json"

COLUMNS = (
    "image",
    "image_id",
    "file_name",
    "width",
    "height",
    "task",
    "category",
    "category_id",
    "gt_boxes",
    "aliases",
    "noun",
    "instruction",
    "source",
)


def features(*, embed_images: bool = True) -> datasets.Features:
    """The ``datasets.Features`` of a built dataset.

    ``embed_images=False`` (``load_images: false`` in the config, for benchmarks and dry runs)
    stores the image path as a string instead of the bytes.
    """
    return datasets.Features(
        {
            "image": datasets.Image() if embed_images else datasets.Value("string"),
            "image_id": datasets.Value("string"),
            "file_name": datasets.Value("string"),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "task": datasets.Value("string"),
            "category": datasets.Value("string"),
            "category_id": datasets.Value("int64"),
            "gt_boxes": datasets.List(datasets.List(datasets.Value("float64"), length=4)),
            "aliases": datasets.List(datasets.Value("string")),
            "noun": datasets.Value("string"),
            "instruction": datasets.Value("string"),
            "source": datasets.Value("string"),
        }
    )


def check_example(row: dict[str, Any]) -> None:
    """Raise ``ValueError`` if ``row`` breaks the schema's invariants (used by tests and consumers).

    >>> check_example({"task": "grounding", "width": 10, "height": 10, "gt_boxes": [[0, 0, 5, 5]],
    ...                "category": "", "category_id": -1, "instruction": "the cat"})
    >>> check_example({"task": "grounding", "width": 10, "height": 10, "gt_boxes": [[0, 0, 11, 5]],
    ...                "category": "", "category_id": -1, "instruction": "the cat"})
    Traceback (most recent call last):
    ...
    ValueError: gt_boxes[0] [0, 0, 11, 5] is not inside the 10x10 image
    """
    task = row["task"]
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {TASKS}")
    width, height = row["width"], row["height"]
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width}x{height} is not positive")
    boxes = row["gt_boxes"]
    for i, box in enumerate(boxes):
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise ValueError(f"gt_boxes[{i}] {box} is not 4 finite numbers")
        x1, y1, x2, y2 = box
        if not (x2 > x1 and y2 > y1):
            raise ValueError(f"gt_boxes[{i}] {box} has non-positive size")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise ValueError(f"gt_boxes[{i}] {box} is not inside the {width}x{height} image")
    if task == "classification" and boxes:
        raise ValueError("classification rows have no boxes")
    if task == "grounding" and (len(boxes) != 1 or not row["instruction"]):
        raise ValueError("grounding rows have exactly one box and an instruction")
    if task != "grounding" and not row["category"]:
        raise ValueError(f"{task} rows need a category")
