"""COCO-format detection sources: COCO itself, MG, the synthetic shapes, any instances JSON.

The whole file is validated up front (a bad record anywhere is an error that names it, even if
it would not have been sampled) because a silently skipped record changes which images exist.
Indexing uses pycocotools' ``COCO.createIndex``. Boxes are COCO ``[x, y, w, h]``; rows get
``[x1, y1, x2, y2]`` in original pixels, clipped to the image when they stick out by at most
``box_tolerance`` pixels (rounding in converted annotations), an error beyond that.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from vrft.data.common import (
    MAX_IMAGE_SIDE,
    MAX_INT64,
    ImageRef,
    Source,
    box_problem,
    check_relative,
    id_sort_key,
    progress,
    read_json,
)
from vrft.data.errors import (
    DanglingReferenceError,
    DuplicateIdError,
    EmptySourceError,
    InvalidBoxError,
    InvalidFileError,
    InvalidValueError,
    MissingFieldError,
    record_name,
)


@dataclass(frozen=True)
class Category:
    id: Any
    name: str
    aliases: tuple[str, ...] = ()
    frequency: str = ""  # LVIS: r(are) / c(ommon) / f(requent)


def _is_int(value: Any) -> bool:
    """A JSON integer that fits int64 (the dataset's columns); ``true``/``false`` are not integers."""
    return type(value) is int and -MAX_INT64 - 1 <= value <= MAX_INT64


def _is_id(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, str) and value != "")


def _is_size(value: Any) -> bool:
    return type(value) is int and 0 < value <= MAX_IMAGE_SIDE


def _id_problem(value: Any, *, integer_only: bool = False) -> str:
    """Why ``value`` cannot be an id, or ``""``."""
    if integer_only:
        return "" if _is_int(value) else f"expected an integer id, got {value!r}"
    return "" if _is_id(value) else f"expected an integer or string id, got {value!r}"


class _Ids:
    """Ids of one collection: duplicates, including ``1`` and ``"1"`` (the same id once written as text)."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self._index: dict[str, int] = {}

    def duplicate(self, value: Any, index: int) -> str:
        """``""``, or why ``value`` repeats an earlier id; records it otherwise."""
        key = str(value)
        first = self._index.get(key)
        if first is None:
            self._index[key] = index
            return ""
        return f"same id as {self.collection}[{first}]"


class DetectionSource(Source):
    """A validated, indexed COCO-format file: images, categories, boxes per (image, category)."""

    task = "detection"
    federated = False  # LVIS: absence is only known where listed (neg_category_ids)
    exhaustive_only = False  # LVIS: training positives must be exhaustively annotated

    def __init__(
        self,
        kind: str,
        name: str,
        file: Path,
        root: Path,
        data: dict[str, Any],
        *,
        tolerance: float,
        show_progress: bool,
    ) -> None:
        super().__init__(kind, name, file, root, [file])
        self.tolerance = tolerance
        self.categories = self._read_categories(data)
        self.images = self._read_images(data, show_progress)
        self.order = sorted(self.images, key=id_sort_key)
        self._crowd_pairs = self._check_annotations(data, show_progress)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
            self.coco.createIndex()
        self._by_name = {c.name: c.id for c in self.categories.values()}
        self._rank = {image_id: n for n, image_id in enumerate(self.order)}
        self._positives: dict[Any, list[Any]] = {}  # category id -> positives(), computed once

    # -- reading and validation ---------------------------------------------------------------

    def _list(self, data: dict[str, Any], key: str) -> list[Any]:
        if key not in data:
            raise MissingFieldError(
                self.file, "top level", key, "missing (a COCO file has images, annotations and categories)"
            )
        value = data[key]
        if not isinstance(value, list):
            raise InvalidValueError(
                self.file, "top level", key, f"expected a list, got {type(value).__name__}"
            )
        if not value:
            raise EmptySourceError(self.file, "top level", key, "is empty: nothing to build a dataset from")
        return value

    def _read_categories(self, data: dict[str, Any]) -> dict[Any, Category]:
        cats: dict[Any, Category] = {}
        ids = _Ids("categories")
        names: dict[str, int] = {}
        for i, c in enumerate(self._list(data, "categories")):
            rec = record_name("categories", i, c.get("id") if isinstance(c, dict) else None)
            if not isinstance(c, dict):
                raise InvalidValueError(self.file, rec, "", "expected an object")
            for key in ("id", "name"):
                if key not in c:
                    raise MissingFieldError(self.file, rec, key, "missing")
            # Integers only: the rows store the category id in an int64 column (COCO ids are integers).
            if problem := _id_problem(c["id"], integer_only=True):
                raise InvalidValueError(self.file, rec, "id", problem)
            if not isinstance(c["name"], str) or not c["name"].strip():
                raise InvalidValueError(
                    self.file, rec, "name", f"expected a non-empty string, got {c['name']!r}"
                )
            if problem := ids.duplicate(c["id"], i):
                raise DuplicateIdError(self.file, rec, "id", problem)
            if c["name"] in names:
                raise DuplicateIdError(
                    self.file, rec, "name", f"{c['name']!r} is also categories[{names[c['name']]}]"
                )
            names[c["name"]] = i
            cats[c["id"]] = self._category(c, rec)
        return cats

    def _category(self, c: dict[str, Any], rec: str) -> Category:
        return Category(c["id"], c["name"])

    def _image_file_name(self, im: dict[str, Any], rec: str) -> str:
        if "file_name" not in im:
            raise MissingFieldError(self.file, rec, "file_name", "missing")
        return im["file_name"]

    def _read_images(self, data: dict[str, Any], show_progress: bool) -> dict[Any, ImageRef]:
        images: dict[Any, ImageRef] = {}
        ids = _Ids("images")
        raw = self._list(data, "images")
        for i, im in enumerate(progress(raw, show_progress, f"checking images of {self.file.name}")):
            if not isinstance(im, dict):
                raise InvalidValueError(self.file, record_name("images", i), "", "expected an object")
            rec = record_name("images", i, im.get("id"))
            for key in ("id", "width", "height"):
                if key not in im:
                    raise MissingFieldError(self.file, rec, key, "missing")
            image_id = im["id"]
            if problem := _id_problem(image_id):
                raise InvalidValueError(self.file, rec, "id", problem)
            # 1 and "1" are both written as "1" in the rows' image_id: one image, not two.
            if problem := ids.duplicate(image_id, i):
                raise DuplicateIdError(self.file, rec, "id", problem)
            for key in ("width", "height"):
                if not _is_size(im[key]):
                    raise InvalidValueError(
                        self.file,
                        rec,
                        key,
                        f"expected a positive integer of at most {MAX_IMAGE_SIDE} (pixels), got {im[key]!r}",
                    )
            name = check_relative(
                self._image_file_name(im, rec), file=self.file, record=rec, field="file_name"
            )
            images[image_id] = ImageRef(image_id, name, im["width"], im["height"], rec)
            self._read_image_extra(im, rec)
        return images

    def _read_image_extra(self, im: dict[str, Any], rec: str) -> None:
        """Hook for formats with per-image fields (LVIS)."""

    def _check_annotations(self, data: dict[str, Any], show_progress: bool) -> dict[Any, set[Any]]:
        """Validate every annotation; return ``{category id: images with a crowd region of it}``."""
        anns = self._list(data, "annotations")
        n = len(anns)
        boxes: list[Any] = [None] * n
        sizes = np.empty((n, 2), dtype=np.float64)
        ids = _Ids("annotations")
        crowd: dict[Any, set[Any]] = {}
        images, cats = self.images, self.categories
        for i, a in enumerate(progress(anns, show_progress, f"checking annotations of {self.file.name}")):
            if type(a) is not dict:
                raise InvalidValueError(self.file, record_name("annotations", i), "", "expected an object")
            try:
                ann_id, image_id, cat_id, bbox = a["id"], a["image_id"], a["category_id"], a["bbox"]
            except KeyError as exc:
                raise MissingFieldError(
                    self.file, record_name("annotations", i, a.get("id")), exc.args[0], "missing"
                ) from None
            rec = record_name("annotations", i, ann_id if _is_id(ann_id) else None)
            for key, value, integer_only in (
                ("id", ann_id, False),
                ("image_id", image_id, False),
                ("category_id", cat_id, True),
            ):
                if problem := _id_problem(value, integer_only=integer_only):
                    raise InvalidValueError(self.file, rec, key, problem)
            if problem := ids.duplicate(ann_id, i):
                raise DuplicateIdError(self.file, rec, "id", problem)
            ref = images.get(image_id)
            if ref is None:
                raise DanglingReferenceError(
                    self.file,
                    rec,
                    "image_id",
                    f"no image with id {image_id!r} in 'images'" + _type_hint(image_id, images),
                )
            if cat_id not in cats:
                raise DanglingReferenceError(
                    self.file, rec, "category_id", f"no category with id {cat_id!r} in 'categories'"
                )
            crowd_flag = a.get("iscrowd", 0)
            if crowd_flag not in (0, 1) or type(crowd_flag) is not int:
                # "0" is truthy: a string here would silently make every such box a crowd region.
                raise InvalidValueError(self.file, rec, "iscrowd", f"expected 0 or 1, got {crowd_flag!r}")
            if type(bbox) is not list or len(bbox) != 4:
                raise InvalidBoxError(self.file, rec, "bbox", f"expected [x, y, width, height], got {bbox!r}")
            boxes[i] = bbox
            sizes[i, 0] = ref.width
            sizes[i, 1] = ref.height
            if crowd_flag:
                crowd.setdefault(cat_id, set()).add(image_id)
        self._check_boxes(anns, boxes, sizes)
        return crowd

    def _check_boxes(self, anns: list[dict[str, Any]], boxes: list[Any], sizes: np.ndarray) -> None:
        """All boxes at once with numpy; the first bad one is re-checked in Python for the message."""
        try:
            xywh = np.asarray(boxes)  # no dtype: a string or null makes it non-numeric instead of converted
        except (TypeError, ValueError):
            xywh = None
        if xywh is not None and xywh.dtype.kind in "iuf" and xywh.ndim == 2:
            xywh = xywh.astype(np.float64, copy=False)
            x1, y1 = xywh[:, 0], xywh[:, 1]
            x2, y2 = x1 + xywh[:, 2], y1 + xywh[:, 3]
            tol = self.tolerance
            with np.errstate(invalid="ignore"):
                good = (
                    np.isfinite(xywh).all(axis=1)
                    & (x2 > x1)
                    & (y2 > y1)
                    & (x1 >= -tol)
                    & (y1 >= -tol)
                    & (x2 <= sizes[:, 0] + tol)
                    & (y2 <= sizes[:, 1] + tol)
                    & (np.minimum(x2, sizes[:, 0]) > np.maximum(x1, 0))
                    & (np.minimum(y2, sizes[:, 1]) > np.maximum(y1, 0))
                )
            bad = np.flatnonzero(~good)
            if not len(bad):
                return
            candidates = bad.tolist()
        else:
            candidates = range(len(boxes))
        for i in candidates:
            x, y, w, h = boxes[i]
            problem = (
                f"expected 4 numbers, got {boxes[i]!r}"
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in boxes[i])
                else box_problem(x, y, x + w, y + h, int(sizes[i, 0]), int(sizes[i, 1]), self.tolerance)
            )
            if problem:
                raise InvalidBoxError(
                    self.file,
                    record_name("annotations", i, anns[i]["id"]),
                    "bbox",
                    f"{problem} (COCO bbox [x, y, w, h] = {boxes[i]})",
                )
        raise AssertionError("a box failed the vectorised check but passed the exact one")

    # -- queries used by the sampler ------------------------------------------------------------

    def refs(self) -> Iterable[ImageRef]:
        return self.images.values()

    def category_named(self, name: str) -> Category | None:
        cat_id = self._by_name.get(name)
        return None if cat_id is None else self.categories[cat_id]

    def category_names(self) -> list[str]:
        return [c.name for c in sorted(self.categories.values(), key=lambda c: id_sort_key(c.id))]

    def sort_ids(self, ids: Iterable[Any]) -> list[Any]:
        """Image ids in the source's canonical (id) order."""
        return sorted(ids, key=self._rank.__getitem__)

    def instances(self, image_id: Any) -> dict[Any, list[list[float]]]:
        """``{category id: boxes}`` for every category this image can be a positive sample of.

        Boxes are ``[x1, y1, x2, y2]``, clipped to the image, every (non-crowd) instance, sorted.
        """
        ref = self.images[image_id]
        width, height = float(ref.width), float(ref.height)
        out: dict[Any, list[list[float]]] = {}
        for a in self.coco.imgToAnns.get(image_id, ()):
            if a.get("iscrowd", 0):
                continue
            x, y, w, h = a[
                "bbox"
            ]  # validated; clipping (inline: this runs for every eval box) only trims tolerance
            box = [max(0.0, x), max(0.0, y), min(width, x + w), min(height, y + h)]
            boxes = out.get(a["category_id"])
            if boxes is None:
                out[a["category_id"]] = [box]
            else:
                boxes.append(box)
        crowd = self._crowd_pairs
        return {
            c: sorted(boxes) if len(boxes) > 1 else boxes
            for c, boxes in out.items()
            if not (c in crowd and image_id in crowd[c])
        }

    def _containing(self, cat_id: Any) -> set[Any]:
        return set(self.coco.catToImgs.get(cat_id, ()))

    def positives(self, cat_id: Any, *, for_training: bool) -> list[Any]:
        """Images that can be a sample for ``cat_id``: it is present and every instance is a box.

        Images where the category has a crowd region are skipped: a crowd region cannot be written
        as boxes, so its ground truth would be incomplete.
        """
        if cat_id not in self._positives:
            ids = self._containing(cat_id) - self._crowd_pairs.get(cat_id, set())
            self._positives[cat_id] = self.sort_ids(ids)
        return self._positives[cat_id]

    def negatives(self, cat_id: Any) -> list[Any]:
        """Images known not to contain ``cat_id``. COCO-format files are exhaustively annotated."""
        containing = self._containing(cat_id)
        return [i for i in self.order if i not in containing]

    def official_ground_truth(self, image_ids: Iterable[Any], cat_ids: Iterable[Any]) -> dict[str, Any]:
        """The source file cut to ``image_ids`` and ``cat_ids``, entries unchanged (crowd regions, and
        LVIS's ``neg_category_ids`` / ``not_exhaustive_category_ids``, kept): what evaluation scores against.
        An annotation without ``area`` (optional in many exports; pycocotools' evaluation needs it)
        gets its box's area, as when ground truth is made from rows."""
        keep_images, keep_cats = set(image_ids), set(cat_ids)
        data = self.coco.dataset
        return {
            "images": [im for im in data["images"] if im["id"] in keep_images],
            "annotations": [
                a if "area" in a else {**a, "area": float(a["bbox"][2]) * float(a["bbox"][3])}
                for a in data["annotations"]
                if a["image_id"] in keep_images and a["category_id"] in keep_cats
            ],
            "categories": [c for c in data["categories"] if c["id"] in keep_cats],
        }

    def annotation_pairs(self, cat_ids: set[Any]) -> list[tuple[Any, Any, Any]]:
        """``(annotation id, image id, category id)`` of every usable instance of ``cat_ids``, sorted."""
        pairs = []
        for cat_id in cat_ids:
            usable = set(self.positives(cat_id, for_training=True))
            for image_id in usable:
                for a in self.coco.imgToAnns[image_id]:
                    if a["category_id"] == cat_id:
                        pairs.append((a["id"], image_id, cat_id))
        return sorted(pairs, key=lambda p: id_sort_key(p[0]))


def _type_hint(value: Any, known: dict[Any, Any]) -> str:
    """``" (an image has id 1: ...)"`` when ``value`` only differs from an id by its type."""
    for other in (
        str(value),
        int(value)
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19
        else None,
    ):
        if other is not None and other != value and other in known and type(other) is not type(value):
            return f" (there is an image with id {other!r}: ids must match in type too)"
    return ""


def load_coco(
    annotations: Path, images: Path, *, name: str, tolerance: float, show_progress: bool, kind: str = "coco"
) -> DetectionSource:
    """Read and validate a COCO-format instances JSON whose ``file_name``s are relative to ``images``."""
    data = read_json(annotations, show_progress)
    if not isinstance(data, dict):
        raise InvalidFileError(
            annotations,
            "top level",
            "",
            f"expected a JSON object with images, annotations and categories, got {type(data).__name__}",
        )
    return DetectionSource(
        kind, name, annotations, images, data, tolerance=tolerance, show_progress=show_progress
    )
