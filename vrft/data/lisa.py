"""LISA (ReasonSeg) reasoning-grounding sources: a directory of ``<name>.jpg`` + ``<name>.json``.

Each JSON (LabelMe style, as in the LISA release) has ``text`` (a list of instructions, or one
string) and ``shapes``: polygons with ``label`` and ``points``. Shapes labelled ``ignore`` are
dropped; the box is that of the FIRST remaining polygon (``box_from="all_polygons"`` encloses every
remaining polygon instead; ``"first_shape"`` is the authors' conversion behind Table 6, their
``gen_box_ann.py``: the first shape's box whatever its label, ``ignore`` included), and
every instruction becomes one sample with that box. JSON files without an
image next to them are an error; images without a JSON are not samples and are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from vrft.data.common import (
    IMAGE_EXTENSIONS,
    ImageRef,
    Source,
    box_problem,
    check_utf8_name,
    clip_box,
    is_finite_number,
    progress,
    read_json,
)
from vrft.data.errors import (
    EmptySourceError,
    ImageFileError,
    InvalidBoxError,
    InvalidFileError,
    InvalidValueError,
    MissingFieldError,
)


@dataclass(frozen=True)
class GroundingItem:
    image: ImageRef
    instructions: tuple[str, ...]
    box: list[float]


class GroundingSource(Source):
    task = "grounding"

    def __init__(
        self, name: str, directory: Path, items: list[GroundingItem], json_files: list[Path]
    ) -> None:
        super().__init__("lisa", name, directory, directory, json_files)
        self.items = items  # sorted by image id

    def refs(self) -> Iterable[ImageRef]:
        return (item.image for item in self.items)


def _polygon_box(
    data: dict[str, Any], file: Path, width: int, height: int, tol: float, box_from: str = "first_polygon"
) -> list[float]:
    if "shapes" not in data:
        raise MissingFieldError(file, "top level", "shapes", "missing")
    shapes = data["shapes"]
    if not isinstance(shapes, list):
        raise InvalidValueError(file, "top level", "shapes", f"expected a list, got {type(shapes).__name__}")
    xs: list[float] = []
    ys: list[float] = []
    for i, shape in enumerate(shapes):
        rec = f"shapes[{i}]"
        if not isinstance(shape, dict):
            raise InvalidValueError(file, rec, "", "expected an object")
        if box_from != "first_shape" and str(shape.get("label", "")).strip().lower() == "ignore":
            continue
        if "points" not in shape:
            raise MissingFieldError(file, rec, "points", "missing")
        points = shape["points"]
        if not isinstance(points, list) or not points:
            raise InvalidValueError(file, rec, "points", f"expected a list of [x, y], got {points!r}")
        for j, point in enumerate(points):
            # NaN would silently drop out of min()/max(): every coordinate must be a finite number.
            if not isinstance(point, list) or len(point) != 2 or not all(map(is_finite_number, point)):
                raise InvalidValueError(
                    file, rec, f"points[{j}]", f"expected [x, y] of finite numbers, got {point!r}"
                )
            xs.append(point[0])
            ys.append(point[1])
        if box_from in ("first_polygon", "first_shape"):
            break
    if not xs:
        raise InvalidValueError(
            file, "top level", "shapes", "no polygon other than 'ignore' ones: nothing to ground"
        )
    x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    problem = box_problem(x1, y1, x2, y2, width, height, tol)
    if problem:
        raise InvalidBoxError(file, "top level", "shapes", f"the polygons' enclosing {problem}")
    return clip_box(x1, y1, x2, y2, width, height)


def _instructions(data: dict[str, Any], file: Path) -> tuple[str, ...]:
    if "text" not in data:
        raise MissingFieldError(file, "top level", "text", "missing (the instructions)")
    text = data["text"]
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InvalidValueError(
            file, "top level", "text", f"expected a string or a list of strings, got {text!r}"
        )
    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        raise InvalidValueError(file, "top level", "text", "no non-empty instruction")
    return tuple(dict.fromkeys(texts))  # the same sentence twice would be the same sample twice


def load_lisa(
    directory: Path, *, name: str, tolerance: float, show_progress: bool, box_from: str = "first_polygon"
) -> GroundingSource:
    if not directory.is_dir():
        raise InvalidFileError(directory, "", "", "not a directory (expected LISA image + JSON pairs)")
    entries = sorted(
        check_utf8_name(p.name, file=directory, record="", field="file")
        for p in directory.iterdir()
        if p.is_file()
    )
    json_names = [n for n in entries if n.lower().endswith(".json")]
    if not json_names:
        raise EmptySourceError(directory, "", "", "no .json annotation files")
    by_stem: dict[str, str] = {}
    for n in entries:
        stem, dot, ext = n.rpartition(".")
        if dot and f".{ext.lower()}" in IMAGE_EXTENSIONS:
            by_stem.setdefault(stem, n)
    items = []
    for json_name in progress(json_names, show_progress, f"reading LISA annotations in {directory.name}"):
        file = directory / json_name
        stem = json_name[: -len(".json")]
        image_name = by_stem.get(stem)
        if image_name is None:
            raise ImageFileError(file, "", "image", f"no image file {stem}.jpg/.png next to the annotation")
        ref_record = f"image {image_name}"
        try:
            with Image.open(directory / image_name) as im:
                width, height = im.size
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise ImageFileError(
                file, ref_record, "image", f"{directory / image_name} is not a readable image ({exc})"
            ) from None
        data = read_json(file)
        if not isinstance(data, dict):
            raise InvalidFileError(
                file, "top level", "", f"expected a JSON object, got {type(data).__name__}"
            )
        texts = _instructions(data, file)
        box = _polygon_box(data, file, width, height, tolerance, box_from)
        items.append(GroundingItem(ImageRef(stem, image_name, width, height, ref_record), texts, box))
    return GroundingSource(name, directory, items, [directory / n for n in json_names])
