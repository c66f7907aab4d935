"""The eval split of a built dataset, as evaluation needs it: light rows plus images on demand.

Rows are read without their images (a COCO val split decoded at once would need gigabytes); an
image is decoded when its batch is generated. ``max_eval_images`` keeps the first N distinct
images in split order, with all of their rows, so a capped detection run still has each image's
complete ground truth.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from vrft.data.schema import EVAL_GROUND_TRUTH
from vrft.data.verify import verify_dataset
from vrft.io import MANIFEST_NAME, sha256_file

logger = logging.getLogger(__name__)

EVAL_SPLIT = "eval"


@dataclass
class EvalSplit:
    """The rows (``image`` column left out) of the eval split, and how to fetch their images."""

    dataset_dir: Path
    rows: list[dict[str, Any]]
    row_indices: list[int]  # position of each row in the saved split (for the image lookup)
    manifest: dict[str, Any]
    total_rows: int
    _images: datasets.Dataset

    @property
    def task(self) -> str:
        tasks = {row["task"] for row in self.rows}
        if len(tasks) != 1:
            raise ValueError(
                f"{self.dataset_dir}: the eval split mixes tasks {sorted(tasks)}; evaluate one task per run"
            )
        return tasks.pop()

    @property
    def eval_source_kind(self) -> str:
        """``lvis``, ``coco``, ... as the dataset manifest records it; ``""`` when unknown."""
        config = self.manifest.get("config") or {}
        source = config.get("eval") or config.get("train") or {}
        return str(source.get("kind", ""))

    @property
    def manifest_sha256(self) -> str:
        path = self.dataset_dir / MANIFEST_NAME
        return sha256_file(path) if path.is_file() else ""

    @property
    def content_sha256(self) -> str:
        """What was evaluated — every kept row's image, category and boxes — as one hash: equal for two
        evaluations exactly when they scored the same questions (whatever the train split was)."""
        keys = sorted(
            json.dumps([str(r["image_id"]), r["category"], r["gt_boxes"], r.get("instruction", "")])
            for r in self.rows
        )
        return hashlib.sha256("\n".join(keys).encode()).hexdigest()

    @property
    def ground_truth_path(self) -> Path | None:
        """The official-format ground truth the dataset build wrote for a detection eval split, if any."""
        path = self.dataset_dir / EVAL_GROUND_TRUTH
        return path if path.is_file() else None

    def load_image(self, i: int) -> Image.Image:
        """The image of ``rows[i]`` (decoded now)."""
        value = self._images[self.row_indices[i]]["image"]
        if isinstance(value, str):  # a dataset built with load_images: false stores paths
            with Image.open(value) as im:
                return im.convert("RGB")
        return value


def load_eval_split(dataset_dir: str | Path, max_images: int | None = None) -> EvalSplit:
    """Open ``dataset_dir`` (a ``vrft dataset build`` output) and take its eval split."""
    dataset_dir = Path(dataset_dir)
    manifest = verify_dataset(dataset_dir)
    dataset = datasets.load_from_disk(str(dataset_dir))
    if not isinstance(dataset, datasets.DatasetDict) or EVAL_SPLIT not in dataset:
        raise ValueError(
            f"{dataset_dir}: expected a DatasetDict with an {EVAL_SPLIT!r} split "
            "(the output of `vrft dataset build`)"
        )
    split = dataset[EVAL_SPLIT]
    light = split.remove_columns("image").to_list()
    keep_images: set[str] = set()
    rows, indices = [], []
    for index, row in enumerate(light):
        image_id = row["image_id"]
        if image_id not in keep_images:
            if max_images is not None and len(keep_images) >= max_images:
                continue
            keep_images.add(image_id)
        rows.append(row)
        indices.append(index)
    if not rows:
        raise ValueError(f"{dataset_dir}: the {EVAL_SPLIT!r} split is empty")
    return EvalSplit(dataset_dir, rows, indices, manifest, len(light), split.select_columns(["image"]))
