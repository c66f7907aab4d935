"""Pieces every source reader shares: safe paths, JSON reading, image references, seeded RNGs."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from vrft.data.errors import ImageFileError, InvalidFileError, InvalidValueError, UnsafePathError
from vrft.io import sha256_file

T = TypeVar("T")

#: Largest image side (pixels) an annotation may claim: far beyond any real photo, small enough for floats.
MAX_IMAGE_SIDE = 100_000
MAX_INT64 = 2**63 - 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
#: Qwen-VL's image processor (transformers' ``smart_resize``) refuses an image whose long side is more
#: than this many times its short side; the build refuses it first, naming the image.
MAX_ASPECT_RATIO = 200
_DRIVE = re.compile(r"^[A-Za-z]:")


def check_relative(name: Any, *, file: str | Path, record: str, field: str) -> str:
    """Return ``name`` if it is a safe relative path; else raise :class:`UnsafePathError`.

    Annotation files are input from elsewhere: a ``file_name`` that is absolute or contains ``..``
    could make the builder read (and embed) any file on the machine.

    >>> check_relative("train2017/1.jpg", file="a.json", record="images[0]", field="file_name")
    'train2017/1.jpg'
    >>> check_relative("../../etc/passwd", file="a.json", record="images[0]", field="file_name")
    Traceback (most recent call last):
    ...
    vrft.data.errors.UnsafePathError: a.json: images[0]: field 'file_name': '../../etc/passwd' leaves the image directory
    """
    if not isinstance(name, str) or not name.strip():
        raise UnsafePathError(file, record, field, f"{name!r} is not a file name")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise UnsafePathError(
            file,
            record,
            field,
            f"{name!r} is an absolute path; expected a path relative to the image directory",
        )
    parts = re.split(r"[\\/]", name)
    if ".." in parts or "\x00" in name:
        raise UnsafePathError(file, record, field, f"{name!r} leaves the image directory")
    return check_utf8_name(name, file=file, record=record, field=field)


def check_utf8_name(name: str, *, file: str | Path, record: str, field: str) -> str:
    """Return ``name`` if it is UTF-8 text; else raise :class:`InvalidValueError` showing its bytes.

    A file name in another encoding (Latin-1 ``café.png`` from an old archive) reaches Python as
    a string with lone surrogates, which every later step that writes UTF-8 (the dataset's Arrow
    files, the manifest) refuses with a codec error naming no file; here it is named.

    >>> check_utf8_name(b"caf\\xe9.png".decode("utf-8", "surrogateescape"), file="d", record="", field="file")
    Traceback (most recent call last):
    ...
    vrft.data.errors.InvalidValueError: d: field 'file': file name 'caf\\xe9.png' is not UTF-8; rename it (datasets and manifests store names as UTF-8)
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise InvalidValueError(
            file,
            record,
            field,
            f"file name '{shown}' is not UTF-8; rename it (datasets and manifests store names as UTF-8)",
        ) from None
    return name


class _DuplicateKey(Exception):
    def __init__(self, key: str, keys: list[str]) -> None:
        super().__init__(key)
        self.key = key
        self.keys = keys


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` keeps the last of two equal keys silently (``{"id": 1, "id": 2}`` is image 2)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key, [k for k, _ in pairs])
            seen.add(key)
    return obj


def read_json(path: Path, show_progress: bool = False) -> Any:
    """Parse a JSON file; anything that is not JSON becomes an :class:`InvalidFileError`, and so
    does an object with the same key twice (JSON parsers silently keep the last one).

    Large files (COCO train is ~450 MB) are read with a progress bar before parsing.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if not show_progress or size < 32 * 2**20:
                return json.load(f, object_pairs_hook=_refuse_duplicate_keys)
            data = bytearray(size)
            view = memoryview(data)
            with tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {path.name}", leave=False) as bar:
                done = 0
                while done < size and (n := f.readinto(view[done : done + 16 * 2**20])):
                    done += n
                    bar.update(n)
            view.release()
            del data[done:]  # only if the file shrank while being read
            return json.loads(data, object_pairs_hook=_refuse_duplicate_keys)
    except _DuplicateKey as exc:
        shown = ", ".join(exc.keys[:6]) + (", ..." if len(exc.keys) > 6 else "")
        raise InvalidFileError(
            path,
            f"an object with keys {shown}",
            exc.key,
            "appears twice in the same object (JSON would silently keep the last value)",
        ) from None
    except FileNotFoundError:
        raise InvalidFileError(path, "", "", "file not found") from None
    except IsADirectoryError:
        raise InvalidFileError(path, "", "", "is a directory, expected a JSON file") from None
    except OSError as exc:
        raise InvalidFileError(path, "", "", f"cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise InvalidFileError(
            path, f"line {exc.lineno} column {exc.colno}", "", f"not valid JSON ({exc.msg})"
        ) from None
    except UnicodeDecodeError:
        raise InvalidFileError(path, "", "", "not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise InvalidFileError(
            path, "", "", "not usable JSON (nested deeper than the parser's limit)"
        ) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (Python's int conversion limit)
        raise InvalidFileError(path, "", "", f"not usable JSON ({exc})") from None


def id_sort_key(value: Any) -> tuple[int, Any]:
    """Sort ids numerically when they are numbers, as text otherwise, never by insertion order."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (0, int(value))
    return (1, str(value))


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys`` (e.g. the split and category name).

    Seeding per category makes the images chosen for one category independent of which other
    categories are in the experiment and of the order they are listed in.
    """
    digest = hashlib.sha256("\x00".join(keys).encode("utf-8")).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def choose(rng: np.random.Generator, candidates: list[T], n: int) -> list[T]:
    """``n`` distinct items of the (already sorted) ``candidates``, in candidate order."""
    if n >= len(candidates):
        return list(candidates)
    picked = np.sort(rng.choice(len(candidates), size=n, replace=False))
    return [candidates[i] for i in picked]


def progress(items: Iterable[T], enabled: bool, desc: str, total: int | None = None) -> Iterator[T]:
    """tqdm over ``items`` when enabled (long steps only), a plain iterator otherwise."""
    if not enabled:
        return iter(items)
    return iter(tqdm(items, desc=desc, total=total, unit="it", mininterval=0.5, leave=False))


def hash_files(paths: Iterable[Path], base: Path | None = None) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256", "size"}}`` of source files, for the manifest; names relative to ``base``."""
    out = {}
    for path in paths:
        name = path.relative_to(base).as_posix() if base is not None else path.name
        out[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return dict(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One image of a source: what the rows need, and how errors point back at it.

    ``width``/``height`` are 0 when the source does not record them (classification folders);
    they are then read from the file header when the image is used.
    """

    id: Any
    file_name: str
    width: int
    height: int
    record: str = ""  # e.g. "images[3] (id 42)"; where errors about this image point


@dataclass
class LoadedImage:
    """The bytes to embed (or a path when images are not loaded) and the true size."""

    value: Any
    width: int
    height: int


class Source(ABC):
    """Base of every reader: image location, hashing and reading; subclasses add the labels."""

    task = ""
    #: Called with an image's path before it is read (an s3:// source fetches it into its mirror).
    fetch: Callable[[str], None] | None = None

    def __init__(self, kind: str, name: str, file: Path, root: Path | None, hashed_files: list[Path]) -> None:
        self.kind = kind
        self.name = name
        self.file = file  # the file (or directory) errors about the source as a whole point at
        self.root = root  # image root; None when the images live inside the source (hf)
        self.hashed_files = hashed_files

    @abstractmethod
    def refs(self) -> Iterable[ImageRef]:
        """Every image of the source (to find the ones a train split already uses)."""

    def image_path(self, ref: ImageRef) -> str:
        assert self.root is not None
        return os.path.normpath(os.path.join(self.root, ref.file_name))

    def image_key(self, ref: ImageRef) -> str:
        """Identity of the image file, used to keep train and eval images apart across sources."""
        return os.path.abspath(self.image_path(ref))

    def source_hashes(self) -> dict[str, Any]:
        base = self.file if self.file.is_dir() else None
        return {"kind": self.kind, "name": self.name, "files": hash_files(self.hashed_files, base)}

    def read_image_bytes(self, ref: ImageRef) -> bytes:
        path = self.image_path(ref)
        if self.fetch is not None:
            self.fetch(path)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ImageFileError(
                self.file, ref.record, "file_name", f"image file {path} does not exist"
            ) from None
        except OSError as exc:
            raise ImageFileError(
                self.file, ref.record, "file_name", f"cannot read image file {path} ({exc.strerror or exc})"
            ) from None

    def load_image(self, ref: ImageRef, *, load: bool, verify: bool) -> LoadedImage:
        """Bytes (``load``) or the path, checked (``verify``) to decode at the recorded size.

        With neither, nothing is opened: the size comes from the annotations (the benchmark path).
        """
        need_size = ref.width <= 0 or ref.height <= 0
        if not (load or verify or need_size):
            _check_aspect_ratio(ref.width, ref.height, file=self.file, ref=ref, path=self.image_path(ref))
            return LoadedImage(self.image_path(ref), ref.width, ref.height)
        data = self.read_image_bytes(ref)
        width, height = _decode_size(data, full=verify, file=self.file, ref=ref, path=self.image_path(ref))
        if not need_size and (width, height) != (ref.width, ref.height):
            raise ImageFileError(
                self.file,
                ref.record,
                "width/height",
                f"annotations say {ref.width}x{ref.height} but {self.image_path(ref)} is {width}x{height}",
            )
        _check_aspect_ratio(width, height, file=self.file, ref=ref, path=self.image_path(ref))
        value = {"bytes": data, "path": None} if load else self.image_path(ref)
        return LoadedImage(value, width, height)


def _check_aspect_ratio(width: int, height: int, *, file: Path, ref: ImageRef, path: str) -> None:
    """Refuse, at build time and by name, an image the model's processor would refuse at evaluation."""
    if min(width, height) > 0 and max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ImageFileError(
            file,
            ref.record,
            "width/height",
            f"{path} is {width}x{height}: its long side is more than {MAX_ASPECT_RATIO} times its "
            "short side, which Qwen-VL's image processor refuses; crop or pad it, or leave it out",
        )


def _decode_size(data: bytes, *, full: bool, file: Path, ref: ImageRef, path: str) -> tuple[int, int]:
    """Size from the header; with ``full`` the whole image is decoded so truncation is caught."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if full:
                im.load()
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageFileError(
            file, ref.record, "file_name", f"{path} is not a readable image ({exc})"
        ) from None


def clip_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> list[float]:
    """Clip a validated box to the image (it may stick out by at most the tolerance)."""
    return [max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)]


def is_finite_number(value: Any) -> bool:
    """An int or float (not bool) that is finite as a float: NaN, infinities and integers too
    large for a float (JSON allows all three) are not.

    >>> is_finite_number(3), is_finite_number(float("nan")), is_finite_number(10**400), is_finite_number(True)
    (True, False, False, False)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def box_problem(x1: float, y1: float, x2: float, y2: float, width: int, height: int, tol: float) -> str:
    """Why ``[x1, y1, x2, y2]`` is not a usable box in a ``width`` x ``height`` image, or ``""``.

    >>> box_problem(0, 0, 10, 10, 10, 10, 1.0), box_problem(-0.5, 0, 10.5, 10, 10, 10, 1.0)
    ('', '')
    >>> box_problem(0, 0, 12, 10, 10, 10, 1.0)
    'box [0, 0, 12, 10] extends past the right edge of the 10x10 image by 2 px (tolerance 1.0 px)'
    """
    coords = [x1, y1, x2, y2]
    if not all(is_finite_number(v) for v in coords):
        return f"box {coords} is not 4 finite numbers"
    if not (x2 > x1 and y2 > y1):
        return f"box {coords} has non-positive width or height"
    shown = [round(v, 3) for v in coords]
    for over, edge in ((-x1, "left"), (-y1, "top"), (x2 - width, "right"), (y2 - height, "bottom")):
        if over > tol:
            return (
                f"box {shown} extends past the {edge} edge of the {width}x{height} image by {over:g} px "
                f"(tolerance {tol} px)"
            )
    cx1, cy1, cx2, cy2 = clip_box(x1, y1, x2, y2, width, height)
    if not (cx2 > cx1 and cy2 > cy1):
        return f"box {shown} lies outside the {width}x{height} image"
    return ""


def list_images(directory: Path) -> list[Path]:
    """Image files directly in ``directory``, sorted by name (never file-system order)."""
    return sorted(
        (p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )
