"""Image sizes of a dataset's sources, read before the dataset is built and without decoding pixels.

The preflight needs each split's image sizes (they fix the image tokens) before stage 1 has run,
so this module reads them from the sources the dataset config names:

* ``coco`` / ``lvis``: the ``width``/``height`` fields of the JSON's ``images`` array. Only that
  array is parsed, streamed record by record (the annotations, most of a 450 MB COCO file, are
  skipped), so every image record is seen, in a second or two even for COCO train.
* ``image_folder``, ``manifest``, ``lisa``, local ``hf`` datasets: the image files' headers
  (PIL reads the size without decoding the pixels), for at most :data:`SAMPLE_LIMIT` images
  per source, spread evenly over the sorted file list: a bounded time (about a second per thousand
  files on a local disk) for any source size; the report says when it sampled.
* ``shapes`` / ``shapes_classification``: the generated size in the config; nothing is read.

A source that is not readable here (a path that exists only in the cluster's pods, a hub dataset
offline) is reported as unknown instead of failing: the checks then use the largest image the
pixel bounds allow.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vrft.data.config import DatasetConfig, SourceConfig

#: At most this many image files are opened per source (their headers only).
SAMPLE_LIMIT = 2000
_CHUNK = 1 << 20
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageSize:
    """One image: a name a user can find it by, and its original size in pixels."""

    name: str
    width: int
    height: int


@dataclass
class SourceScan:
    """What one split's source revealed about its images."""

    split: str  # "train" or "eval"
    source: str  # the source's kind and file or directory
    sizes: list[ImageSize] = field(default_factory=list)
    total: int | None = None  # images in the source, where known (more than ``sizes`` when sampled)
    generated: bool = False  # every image has the config's size (synthetic sources)
    note: str = ""  # why sizes are missing or partial

    @property
    def known(self) -> bool:
        return bool(self.sizes)

    def describe(self) -> str:
        if not self.sizes:
            return f"{self.source}: image sizes unknown ({self.note})"
        count = self.total if self.total is not None else len(self.sizes)
        if self.generated:
            size = self.sizes[0]
            return f"{self.source}: {count} generated images of {size.width}×{size.height}"
        sampled = f" (headers of {len(self.sizes)} sampled)" if count > len(self.sizes) else ""
        extra = f"; {self.note}" if self.note else ""
        return f"{self.source}: {count} images{sampled}{extra}"


@dataclass
class SourceText:
    """Prompt material a source holds: its category names and (grounding) instructions."""

    categories: list[str] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)


def scan_dataset(dataset: DatasetConfig) -> tuple[list[SourceScan], SourceText]:
    """The train and eval splits' image sizes and the text prompts are made of.

    The eval split reads the train source when ``dataset.eval`` is empty (eval images are then
    drawn from it).
    """
    text = SourceText()
    train = scan_source(dataset.train, "train", text)
    if dataset.eval is None:
        scans = [
            train,
            SourceScan("eval", train.source, train.sizes, train.total, train.generated, train.note),
        ]
    else:
        scans = [train, scan_source(dataset.eval, "eval", text)]
    return scans, text


def scan_source(cfg: SourceConfig, split: str, text: SourceText | None = None) -> SourceScan:
    """The image sizes of one source (all, or a sample: see the module docstring)."""
    text = text if text is not None else SourceText()
    try:
        return _SCANNERS[cfg.kind](cfg, split, text)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return SourceScan(split, _label(cfg), note=f"not readable here: {_short(exc)}")


def _label(cfg: SourceConfig) -> str:
    where = cfg.annotations or cfg.path or cfg.images
    return f"{cfg.kind} {where}" if where else cfg.kind


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


def _evenly(items: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` items spread over ``items`` (first and last included): deterministic."""
    if len(items) <= limit:
        return list(items)
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def header_size(path: Path) -> tuple[int, int]:
    """An image file's ``(width, height)`` from its header; the pixels are not decoded."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _headers(split: str, source: str, files: list[Path], root: Path) -> SourceScan:
    scan = SourceScan(split, source, total=len(files))
    unreadable = 0
    for file in _evenly(files, SAMPLE_LIMIT):
        try:
            width, height = header_size(file)
        except (OSError, ValueError):
            unreadable += 1
            continue
        scan.sizes.append(ImageSize(_relative(file, root), width, height))
    if unreadable:
        scan.note = f"{unreadable} sampled file(s) not readable as images"
    if not files:
        scan.note = "no image files found"
    return scan


def _relative(file: Path, root: Path) -> str:
    try:
        return str(file.relative_to(root))
    except ValueError:
        return str(file)


# -- COCO-format JSON, streamed ------------------------------------------------------------------------


def json_array(path: Path, key: str) -> Iterator[Any]:
    """The elements of the first ``"key": [...]`` array in a JSON file, decoded one at a time.

    Only that array is parsed: a COCO file's ``images`` array is found by a fast scan of the raw
    bytes and decoded element by element, so the (much larger) annotations are never parsed.
    COCO and LVIS files hold ``images`` and ``categories`` at the top level; a nested array of the
    same name earlier in the file would be read instead (no such file is known).
    """
    pattern = re.compile(rb'"' + re.escape(key.encode()) + rb'"\s*:\s*\[')
    with open(path, "rb") as f:
        tail = b""
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return  # no such array
            data = tail + chunk
            match = pattern.search(data)
            if match:
                rest = data[match.end() :]
                break
            tail = data[-(len(key) + 64) :]
        decoder = codecs.getincrementaldecoder("utf-8")()
        buffer = decoder.decode(rest)
        position = 0
        parse = json.JSONDecoder().raw_decode
        eof = False
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n,":
                position += 1
            if position < len(buffer) and buffer[position] == "]":
                return
            if position < len(buffer):
                try:
                    value, end = parse(buffer, position)
                except json.JSONDecodeError:
                    if eof:
                        raise ValueError(f"{path}: the {key!r} array is not valid JSON") from None
                else:
                    # A number could end at the buffer's end only by chance; objects and strings cannot.
                    if end < len(buffer) or eof:
                        yield value
                        position = end
                        continue
            if eof:
                raise ValueError(f"{path}: the {key!r} array is not closed")
            chunk = f.read(_CHUNK)
            eof = not chunk
            buffer = buffer[position:] + decoder.decode(chunk, final=eof)
            position = 0


def _image_name(record: dict[str, Any]) -> str:
    name = record.get("file_name") or record.get("coco_url") or ""
    if isinstance(name, str) and name:
        return name.rsplit("/", 1)[-1] if "://" in name else name
    return f"image id {record.get('id')!r}"


def _coco(cfg: SourceConfig, split: str, text: SourceText) -> SourceScan:
    path = Path(cfg.annotations)
    scan = SourceScan(split, f"{cfg.kind} {path}")
    if not path.is_file():
        scan.note = f"{path} is not a file here"
        return scan
    root = Path(cfg.images)
    missing = 0
    total = 0
    for record in json_array(path, "images"):
        total += 1
        if not isinstance(record, dict):
            missing += 1
            continue
        width, height = record.get("width"), record.get("height")
        if type(width) is not int or type(height) is not int or width < 1 or height < 1:
            missing += 1
            continue
        scan.sizes.append(ImageSize(str(root / _image_name(record)), width, height))
    scan.total = total
    if missing:
        scan.note = f"{missing} image record(s) without a positive integer width/height"
    for record in json_array(path, "categories"):
        if isinstance(record, dict) and isinstance(record.get("name"), str):
            text.categories.append(record["name"])
    return scan


# -- image files ---------------------------------------------------------------------------------------


def _image_folder(cfg: SourceConfig, split: str, text: SourceText) -> SourceScan:
    root = Path(cfg.path)
    if not root.is_dir():
        return SourceScan(split, f"image_folder {root}", note=f"{root} is not a directory here")
    text.categories += sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    files = sorted(
        Path(directory) / name
        for directory, _, names in os.walk(root)
        for name in names
        if Path(name).suffix.lower() in _IMAGE_EXTENSIONS
    )
    return _headers(split, f"image_folder {root}", files, root)


def _manifest(cfg: SourceConfig, split: str, text: SourceText) -> SourceScan:
    path = Path(cfg.annotations)
    if not path.is_file():
        return SourceScan(split, f"manifest {path}", note=f"{path} is not a file here")
    root = Path(cfg.images) if cfg.images else path.parent
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows: list[Any] = list(csv.DictReader(f))
    else:
        rows = json.loads(path.read_text(encoding="utf-8"))
        rows = rows if isinstance(rows, list) else []
    names = [row.get(cfg.file_column) for row in rows if isinstance(row, dict)]
    files = [root / name for name in names if isinstance(name, str) and name]
    return _headers(split, f"manifest {path}", files, root)


def _lisa(cfg: SourceConfig, split: str, text: SourceText) -> SourceScan:
    root = Path(cfg.path)
    if not root.is_dir():
        return SourceScan(split, f"lisa {root}", note=f"{root} is not a directory here")
    pairs = []
    for file in sorted(root.glob("*.json")):
        image = next(
            (file.with_suffix(ext) for ext in _IMAGE_EXTENSIONS if file.with_suffix(ext).is_file()), None
        )
        if image is not None:
            pairs.append((file, image))
    chosen = _evenly(pairs, SAMPLE_LIMIT)
    for file, _ in chosen:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        instructions = data.get("text") if isinstance(data, dict) else None
        if isinstance(instructions, str):
            instructions = [instructions]
        if isinstance(instructions, list):
            text.instructions += [t for t in instructions if isinstance(t, str)]
    scan = _headers(split, f"lisa {root}", [image for _, image in chosen], root)
    scan.total = len(pairs)
    return scan


def _hf(cfg: SourceConfig, split: str, text: SourceText) -> SourceScan:
    source = f"hf {cfg.path}"
    if not Path(cfg.path).exists():
        return SourceScan(split, source, note="a hub dataset: not read before the dataset stage")
    import datasets
    from PIL import Image

    loaded = datasets.load_from_disk(cfg.path)
    if isinstance(loaded, datasets.DatasetDict):
        name = cfg.split or next(iter(loaded))
        if name not in loaded:
            return SourceScan(split, source, note=f"no split {name!r}")
        loaded = loaded[name]
    if cfg.image_column not in loaded.column_names:
        return SourceScan(split, source, note=f"no column {cfg.image_column!r}")
    column = loaded.cast_column(cfg.image_column, datasets.Image(decode=False))
    scan = SourceScan(split, source, total=len(column))
    indices = _evenly(list(range(len(column))), SAMPLE_LIMIT)
    for index in indices:
        value = column[index][cfg.image_column]
        try:
            if value.get("bytes"):
                with Image.open(io.BytesIO(value["bytes"])) as image:
                    width, height = image.size
            else:
                width, height = header_size(Path(value["path"]))
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            continue
        scan.sizes.append(ImageSize(f"{cfg.path} row {index}", width, height))
    return scan


def _shapes(cfg: SourceConfig, split: str, text: SourceText) -> SourceScan:
    from vrft.data.shapes import COLOUR_NAMES, SHAPES

    width, height = (int(v) for v in cfg.image_size)
    if cfg.kind == "shapes":
        text.categories += list(SHAPES)
        count = cfg.n_images
    else:  # n_images per class
        classes = COLOUR_NAMES if cfg.label == "colour" else SHAPES
        text.categories += list(classes)
        count = cfg.n_images * len(classes)
    size = ImageSize(f"generated by {cfg.kind} ({width}×{height})", width, height)
    return SourceScan(split, cfg.kind, [size], total=count, generated=True)


_SCANNERS = {
    "coco": _coco,
    "lvis": _coco,
    "image_folder": _image_folder,
    "manifest": _manifest,
    "lisa": _lisa,
    "hf": _hf,
    "shapes": _shapes,
    "shapes_classification": _shapes,
}
