"""LVIS sources: COCO-format, but federated.

LVIS does not annotate every category in every image. For each image it lists
``neg_category_ids`` (verified absent) and ``not_exhaustive_category_ids`` (present, but not every
instance has a box); any other category is *unknown* for that image. So here:

- a negative ("No Objects") sample of category c only comes from an image whose
  ``neg_category_ids`` has c, whose ``not_exhaustive_category_ids`` does not, and that has no
  box of c (a contradicting image is skipped);
- a training positive of c skips images where c is not exhaustively annotated (their ground
  truth would miss instances), unless ``lvis_exhaustive_only: false``;
- v1 images carry ``coco_url`` instead of ``file_name``; the file name is the URL's last two
  path parts (``train2017/000000391895.jpg``), so ``images`` is the COCO root holding
  ``train2017/`` and ``val2017/``, as in the LVIS and detectron2 layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vrft.data.coco import Category, DetectionSource
from vrft.data.common import id_sort_key, read_json
from vrft.data.errors import DanglingReferenceError, InvalidFileError, InvalidValueError, MissingFieldError

FREQUENCIES = ("r", "c", "f")


class LvisSource(DetectionSource):
    federated = True

    def __init__(self, *args: Any, exhaustive_only: bool, **kwargs: Any) -> None:
        self.exhaustive_only = exhaustive_only
        self._neg: dict[Any, list[Any]] = {}  # category id -> images listing it as verified absent
        self._not_exhaustive: dict[Any, set[Any]] = {}  # category id -> images where it is not exhaustive
        super().__init__(*args, **kwargs)
        for cat_id, images in self._neg.items():
            self._neg[cat_id] = self.sort_ids(images)

    def _category(self, c: dict[str, Any], rec: str) -> Category:
        for key in ("synonyms", "frequency"):
            if key not in c:
                raise MissingFieldError(
                    self.file, rec, key, "missing (LVIS categories have synonyms and frequency)"
                )
        if c["frequency"] not in FREQUENCIES:
            raise InvalidValueError(
                self.file, rec, "frequency", f"expected one of r, c, f, got {c['frequency']!r}"
            )
        synonyms = c["synonyms"]
        if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
            raise InvalidValueError(
                self.file, rec, "synonyms", f"expected a list of strings, got {synonyms!r}"
            )
        aliases = tuple(dict.fromkeys(s for s in synonyms if s != c["name"]))
        return Category(c["id"], c["name"], aliases, c["frequency"])

    def _image_file_name(self, im: dict[str, Any], rec: str) -> str:
        if "file_name" in im:
            return im["file_name"]
        if "coco_url" not in im:
            raise MissingFieldError(
                self.file, rec, "coco_url", "missing (LVIS images need coco_url or file_name)"
            )
        url = im["coco_url"]
        parts = [p for p in urlparse(url).path.split("/") if p] if isinstance(url, str) else []
        if len(parts) < 2:
            raise InvalidValueError(
                self.file, rec, "coco_url", f"expected .../<split>/<file>.jpg, got {url!r}"
            )
        return "/".join(parts[-2:])

    def _read_image_extra(self, im: dict[str, Any], rec: str) -> None:
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            if key not in im:
                raise MissingFieldError(
                    self.file, rec, key, "missing (LVIS images list their federated labels)"
                )
            values = im[key]
            if not isinstance(values, list):
                raise InvalidValueError(
                    self.file, rec, key, f"expected a list of category ids, got {values!r}"
                )
            for cat_id in values:
                if type(cat_id) is not int:  # also keeps true (== 1) and [1] (unhashable) out of the lookup
                    raise InvalidValueError(
                        self.file, rec, key, f"expected integer category ids, got {cat_id!r}"
                    )
                if cat_id not in self.categories:
                    raise DanglingReferenceError(self.file, rec, key, f"no category with id {cat_id!r}")
        for cat_id in im["neg_category_ids"]:
            self._neg.setdefault(cat_id, []).append(im["id"])
        for cat_id in im["not_exhaustive_category_ids"]:
            self._not_exhaustive.setdefault(cat_id, set()).add(im["id"])

    def positives(self, cat_id: Any, *, for_training: bool) -> list[Any]:
        ids = super().positives(cat_id, for_training=for_training)
        if for_training and self.exhaustive_only:
            skip = self._not_exhaustive.get(cat_id, set())
            ids = [i for i in ids if i not in skip]
        return ids

    def negatives(self, cat_id: Any) -> list[Any]:
        containing = self._containing(cat_id)
        not_exhaustive = self._not_exhaustive.get(cat_id, set())
        return [i for i in self._neg.get(cat_id, ()) if i not in containing and i not in not_exhaustive]

    def names_with_frequency(self, frequencies: list[str]) -> list[str]:
        return [
            c.name
            for c in sorted(self.categories.values(), key=lambda c: id_sort_key(c.id))
            if c.frequency in frequencies
        ]


def load_lvis(
    annotations: Path,
    images: Path,
    *,
    name: str,
    tolerance: float,
    show_progress: bool,
    exhaustive_only: bool,
) -> LvisSource:
    data = read_json(annotations, show_progress)
    if not isinstance(data, dict):
        raise InvalidFileError(
            annotations,
            "top level",
            "",
            f"expected a JSON object with images, annotations and categories, got {type(data).__name__}",
        )
    return LvisSource(
        "lvis",
        name,
        annotations,
        images,
        data,
        tolerance=tolerance,
        show_progress=show_progress,
        exhaustive_only=exhaustive_only,
    )
