"""A synthetic source: coloured shapes on varied backgrounds, with exact boxes.

It exists so that tests, CI and the default (CPU) run have real data without downloads. It only
writes files in the formats the real readers take: :func:`generate_shapes_coco` writes a COCO
instances JSON plus an image directory, :func:`generate_shapes_classification` an image-folder
tree. The builder reads them through the COCO and image-folder readers like any other source.

Each image gets a random background (flat colour, gradient or noise), then 1 to
``max_objects`` non-overlapping shapes of random kind, colour, size and rotation; a few images
get no shape at all. A box is the exact pixel extent of its shape's mask, so ground truth is
known to the pixel. Everything depends only on the arguments: same seed, same bytes.

The classification generator draws one shape per image and labels it by kind or, for the colour
task of the default run, by colour (``label="colour"``, usually with big shapes).

>>> import json, tempfile
>>> out = Path(tempfile.mkdtemp())
>>> ann = generate_shapes_coco(out / "det", n_images=4, seed=0)
>>> data = json.loads(ann.read_text())
>>> len(data["images"]), [c["name"] for c in data["categories"]][:3]
(4, ['circle', 'square', 'triangle'])
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vrft.io import atomic_write_text, dumps_deterministic

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond")

# Saturated colours that stand out from the muted backgrounds, and their names (the colour task's classes).
COLOURS = (
    (220, 30, 30),
    (30, 160, 50),
    (30, 70, 220),
    (240, 200, 20),
    (200, 40, 200),
    (20, 190, 200),
    (245, 120, 10),
    (250, 250, 250),
)
COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white")
#: A shape's radius as a fraction of the image's shorter side: the detection sizes (several per image).
SHAPE_SIZE = (0.08, 0.22)
#: The largest radius fraction that still fits (with a pixel of margin) in any image >= 32 px.
MAX_SHAPE_SIZE = 0.45


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    base = rng.integers(40, 160, size=3)
    style = rng.integers(0, 3)
    if style == 0:  # flat colour with light noise
        arr = np.broadcast_to(base, (height, width, 3)).astype(np.float64)
        arr = arr + rng.normal(0, 6, size=arr.shape)
    elif style == 1:  # linear gradient between two muted colours
        other = rng.integers(40, 160, size=3)
        horizontal = bool(rng.integers(0, 2))
        t = np.linspace(0, 1, width if horizontal else height)[:, None]
        ramp = base[None, :] * (1 - t) + other[None, :] * t
        arr = np.broadcast_to(ramp[None, :, :] if horizontal else ramp[:, None, :], (height, width, 3))
    else:  # coarse noise blocks
        block = int(rng.integers(4, 12))
        small = rng.integers(30, 170, size=(height // block + 1, width // block + 1, 3))
        arr = np.repeat(np.repeat(small, block, axis=0), block, axis=1)[:height, :width]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "star":
        points = [(r if i % 2 == 0 else r * 0.45, angle + i * math.pi / 5) for i in range(10)]
    else:
        sides = {"triangle": 3, "square": 4, "diamond": 4, "hexagon": 6}[kind]
        offset = math.pi / 4 if kind == "square" else 0.0
        points = [(r, angle + offset + i * 2 * math.pi / sides) for i in range(sides)]
    return [(cx + d * math.cos(a), cy + d * math.sin(a)) for d, a in points]


def _draw_shape(
    kind: str, cx: float, cy: float, r: float, angle: float, size: tuple[int, int]
) -> Image.Image:
    """The shape's mask; its ``getbbox()`` is the exact box."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=255)
    return mask


def _place(
    rng: np.random.Generator,
    kind: str,
    size: tuple[int, int],
    taken: list[tuple[int, int, int, int]],
    shape_size: tuple[float, float] = SHAPE_SIZE,
) -> tuple[Image.Image, tuple[int, int, int, int]] | None:
    """A mask for a shape that does not touch the already placed boxes, or None after 30 tries."""
    width, height = size
    short = min(width, height)
    for _ in range(30):
        r = float(rng.uniform(*shape_size)) * short
        cx = float(rng.uniform(r + 1, width - r - 1))
        cy = float(rng.uniform(r + 1, height - r - 1))
        angle = float(rng.uniform(0, 2 * math.pi)) if kind not in ("square", "diamond") else 0.0
        mask = _draw_shape(kind, cx, cy, r, angle, size)
        box = mask.getbbox()
        if box is None or box[2] - box[0] < 4 or box[3] - box[1] < 4:
            continue
        if all(
            box[2] + 2 <= t[0] or t[2] + 2 <= box[0] or box[3] + 2 <= t[1] or t[3] + 2 <= box[1]
            for t in taken
        ):
            return mask, box
    return None


def _encode(image: Image.Image, image_format: str) -> bytes:
    buf = io.BytesIO()
    if image_format == "png":
        image.save(buf, format="PNG", optimize=False, compress_level=6)
    else:
        image.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    """Plain write: the annotation JSON is written atomically last, so its presence means complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


#: Bounds of the generator: a typo (an extra three zeros) must be an error, not hours of PNG writing
#: or an allocation of hundreds of GiB. Far above what tests and the default run use (96 images, 128x96).
MAX_IMAGES = 20_000
MIN_SIDE, MAX_SIDE = 32, 4096


def _check_args(n: int, seed: int, image_size: Sequence[int], image_format: str) -> tuple[int, int]:
    if not 1 <= n <= MAX_IMAGES:
        raise ValueError(f"number of images must be between 1 and {MAX_IMAGES}, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    width, height = (int(v) for v in image_size)
    if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
        raise ValueError(
            f"image_size {tuple(image_size)}: each side must be between {MIN_SIDE} and {MAX_SIDE}"
        )
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    return width, height


def _check_shapes(what: str, names: Sequence[str]) -> None:
    if not names or set(names) - set(SHAPES):
        raise ValueError(f"{what} must be a non-empty subset of {SHAPES}, got {list(names)}")


def generate_shapes_coco(
    out_dir: str | Path,
    n_images: int,
    seed: int,
    image_size: Sequence[int] = (128, 96),
    *,
    categories: Sequence[str] = SHAPES,
    max_objects: int = 4,
    empty_fraction: float = 0.05,
    image_format: str = "png",
) -> Path:
    """Write ``out_dir/images/*.png`` and ``out_dir/annotations.json`` (COCO format); return the JSON path.

    Category ids are 1..len(categories) in the given order; image ids 1..n_images. About
    ``empty_fraction`` of the images have no shape at all.
    """
    width, height = _check_args(n_images, seed, image_size, image_format)
    _check_shapes("categories", categories)
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id in range(1, n_images + 1):
        canvas = _background(rng, width, height)
        n_objects = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
        taken: list[tuple[int, int, int, int]] = []
        for _ in range(n_objects):
            cat_index = int(rng.integers(0, len(categories)))
            placed = _place(rng, categories[cat_index], (width, height), taken)
            if placed is None:
                continue
            mask, box = placed
            colour = COLOURS[int(rng.integers(0, len(COLOURS)))]
            canvas.paste(colour, (0, 0), mask)
            taken.append(box)
            x0, y0, x1, y1 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_index + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": int(np.count_nonzero(mask)),
                    "iscrowd": 0,
                }
            )
        file_name = f"{image_id:06d}.{image_format}"
        _write(out / "images" / file_name, _encode(canvas, image_format))
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    data = {
        "info": {"description": "vrft synthetic shapes", "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(categories)
        ],
    }
    return atomic_write_text(out / "annotations.json", dumps_deterministic(data))


def _check_shape_size(shape_size: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in shape_size)
    if not 0 < low <= high <= MAX_SHAPE_SIZE:
        raise ValueError(
            f"shape_size {tuple(shape_size)}: need 0 < min <= max <= {MAX_SHAPE_SIZE} "
            "(a radius as a fraction of the image's shorter side)"
        )
    return low, high


def generate_shapes_classification(
    out_dir: str | Path,
    n_per_class: int,
    seed: int,
    image_size: Sequence[int] = (96, 96),
    *,
    classes: Sequence[str] | None = None,
    label: str = "shape",
    shape_size: Sequence[float] = SHAPE_SIZE,
    image_format: str = "png",
) -> Path:
    """Write ``out_dir/<class>/<class>_0000.png`` with one shape per image; return ``out_dir``.

    ``label="shape"``: the class is the shape's kind (``classes`` from :data:`SHAPES`, random
    colour). ``label="colour"``: the class is its colour (``classes`` from :data:`COLOUR_NAMES`,
    random kind). ``shape_size`` bounds the radius as a fraction of the shorter side.
    """
    width, height = _check_args(n_per_class, seed, image_size, image_format)
    size_range = _check_shape_size(shape_size)
    if label == "shape":
        classes = SHAPES if classes is None else classes
        _check_shapes("classes", classes)
    elif label == "colour":
        classes = COLOUR_NAMES if classes is None else classes
        if not classes or set(classes) - set(COLOUR_NAMES):
            raise ValueError(f"classes must be a non-empty subset of {COLOUR_NAMES}, got {list(classes)}")
    else:
        raise ValueError(f"label must be 'shape' or 'colour', got {label!r}")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for name in classes:
        for i in range(n_per_class):
            canvas = _background(rng, width, height)
            kind = name if label == "shape" else SHAPES[int(rng.integers(0, len(SHAPES)))]
            placed = _place(rng, kind, (width, height), [], size_range)
            if placed is None:  # cannot happen with no other shapes and sizes >= 32 px
                raise RuntimeError(f"could not place a {kind}")
            if label == "shape":
                colour = COLOURS[int(rng.integers(0, len(COLOURS)))]
            else:
                colour = COLOURS[COLOUR_NAMES.index(name)]
            canvas.paste(colour, (0, 0), placed[0])
            _write(out / name / f"{name}_{i:04d}.{image_format}", _encode(canvas, image_format))
    return out
