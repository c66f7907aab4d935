"""Box coordinate conventions of the supported model families.

Ground truth is stored in original-image pixels. Models answer in their own convention:

* ``relative_1000`` (Qwen2-VL, Qwen3-VL): integers in 0–1000, relative to the image size.
* ``resized_absolute`` (Qwen2.5-VL): absolute pixels of the image *after* the processor's
  resize (``smart_resize``: both sides rounded to multiples of patch_size × merge_size, the area
  clamped to [min_pixels, max_pixels]).

Writing ground truth in one convention while the model answers in the other is the most common
cause of an IoU reward stuck at zero, so prompts, solutions and evaluation all go through one
:class:`BoxConvention`.

>>> qwen2 = BoxConvention("relative_1000")
>>> qwen2.to_model([64, 48, 128, 96], width=640, height=480)
[100, 100, 200, 200]
>>> qwen2.to_original([100, 100, 200, 200], width=640, height=480)
[64.0, 48.0, 128.0, 96.0]
>>> qwen25 = BoxConvention("resized_absolute", max_pixels=401408)
>>> qwen25.resized_size(width=1280, height=960)
(728, 532)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

ConventionKind = Literal["relative_1000", "resized_absolute"]

# Model type (config.model_type) -> the convention its grounding data was trained with.
FAMILY_CONVENTIONS: dict[str, ConventionKind] = {
    "qwen2_vl": "relative_1000",
    "qwen2_5_vl": "resized_absolute",
    "qwen3_vl": "relative_1000",
}
# Qwen-VL processors' defaults (transformers' Qwen2VLImageProcessor).
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 28 * 28 * 1280


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """The Qwen-VL processors' resize rule, ``(height, width)`` -> resized ``(height, width)``.

    Delegates to transformers' own function so the two can never drift apart.

    >>> smart_resize(480, 640, max_pixels=401408)
    (476, 644)
    """
    # The PIL-backend module holds the same function and, unlike the torchvision one, imports
    # without torchvision (absent on CPU machines).
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

    resized = hf_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return int(resized[0]), int(resized[1])


@dataclass(frozen=True)
class BoxConvention:
    """How one model family writes boxes, and the conversion to and from original pixels."""

    kind: ConventionKind = "relative_1000"
    factor: int = 28  # patch_size * merge_size of the vision tower
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def for_family(cls, family: str, image_processor: Any = None, **overrides: Any) -> BoxConvention:
        """The convention of ``family`` (a ``config.model_type``), sized like ``image_processor``."""
        if family not in FAMILY_CONVENTIONS:
            known = ", ".join(sorted(FAMILY_CONVENTIONS))
            raise ValueError(f"unknown model family {family!r}: no box convention is known (known: {known})")
        params: dict[str, Any] = {"kind": FAMILY_CONVENTIONS[family]}
        if image_processor is not None:
            params.update(processor_resize_params(image_processor))
        params.update(overrides)
        return cls(**params)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` of the image as the processor resizes it."""
        resized_h, resized_w = smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
        return resized_w, resized_h

    def _scale(self, width: int, height: int) -> tuple[float, float]:
        """Model units per original pixel along x and y."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if self.kind == "relative_1000":
            return 1000.0 / width, 1000.0 / height
        resized_w, resized_h = self.resized_size(width, height)
        return resized_w / width, resized_h / height

    def to_model(self, box: Sequence[float], width: int, height: int) -> list[int]:
        """Original-pixel box -> the integers the model is asked to write."""
        sx, sy = self._scale(width, height)
        x1, y1, x2, y2 = (float(v) for v in box)
        return [round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy)]

    def to_original(self, box: Sequence[float], width: int, height: int) -> list[float]:
        """A model box -> original pixels, clipped to the image (models overshoot edges)."""
        sx, sy = self._scale(width, height)
        x1, y1, x2, y2 = (float(v) for v in box)
        return [
            min(max(x1 / sx, 0.0), float(width)),
            min(max(y1 / sy, 0.0), float(height)),
            min(max(x2 / sx, 0.0), float(width)),
            min(max(y2 / sy, 0.0), float(height)),
        ]

    def max_rounding_error(self, width: int, height: int) -> float:
        """Largest original-pixel error a round trip through model integers can introduce."""
        sx, sy = self._scale(width, height)
        return 0.5 / min(sx, sy) + 1e-9

    def describe(self, width: int | None = None, height: int | None = None) -> str:
        """The coordinate phrase for prompts (the paper's wording for Qwen2-VL)."""
        if self.kind == "relative_1000":
            return "between 0 and 1000, integer"
        if width is None or height is None:
            raise ValueError("the resized_absolute convention needs the image size to describe itself")
        resized_w, resized_h = self.resized_size(width, height)
        return f"absolute pixel coordinates in the {resized_w}x{resized_h} image, integer"


def processor_resize_params(image_processor: Any) -> dict[str, int]:
    """``factor``, ``min_pixels`` and ``max_pixels`` as a Qwen-VL image processor applies them."""
    image_processor = getattr(image_processor, "image_processor", image_processor)
    patch = int(getattr(image_processor, "patch_size", 14) or 14)
    merge = int(getattr(image_processor, "merge_size", 2) or 2)
    size = getattr(image_processor, "size", None) or {}
    if not isinstance(size, dict):
        size = {k: getattr(size, k, None) for k in ("shortest_edge", "longest_edge")}
    min_pixels = (
        getattr(image_processor, "min_pixels", None) or size.get("shortest_edge") or DEFAULT_MIN_PIXELS
    )
    max_pixels = (
        getattr(image_processor, "max_pixels", None) or size.get("longest_edge") or DEFAULT_MAX_PIXELS
    )
    return {"factor": patch * merge, "min_pixels": int(min_pixels), "max_pixels": int(max_pixels)}


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Continuous IoU of two ``[x1, y1, x2, y2]`` boxes (no +1 pixel convention).

    IoU is invariant to scaling each axis, so it can be computed in any one convention.

    >>> box_iou([100, 100, 200, 200], [100, 100, 200, 300])
    0.5
    """
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    inter = ix * iy if ix > 0 and iy > 0 else 0.0
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if not union > 0 or not math.isfinite(union):
        return 0.0
    return max(0.0, min(1.0, inter / union))


def box_giou(a: Sequence[float], b: Sequence[float]) -> float:
    """Generalised IoU in [-1, 1]: IoU minus the share of the enclosing box covered by neither.

    >>> box_giou([0, 0, 1, 1], [2, 0, 3, 1])
    -0.3333333333333333
    """
    iou = box_iou(a, b)
    enclosing = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    if not enclosing > 0 or not math.isfinite(enclosing):
        return -1.0
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    inter = ix * iy if ix > 0 and iy > 0 else 0.0
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return max(-1.0, min(1.0, iou - (enclosing - union) / enclosing))
