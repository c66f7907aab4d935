"""Classification sources: an image folder, a CSV/JSON manifest, or a ``datasets`` dataset.

All three produce (image, raw label) entries. Labels become class names in
:class:`LabelMap`: against a preset's class list (Flowers102, ...) a label may be a class name
in any case/spacing (``american_bulldog``) or an integer index (``label_base`` says whether
the first class is 0 or 1); without a preset the labels are the class names.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from vrft.data.classnames import normalize_label
from vrft.data.common import (
    IMAGE_EXTENSIONS,
    ImageRef,
    Source,
    check_relative,
    check_utf8_name,
    hash_files,
    list_images,
    read_json,
)
from vrft.data.errors import (
    DuplicateIdError,
    EmptySourceError,
    ImageFileError,
    InvalidFileError,
    InvalidValueError,
    MissingFieldError,
    UnknownCategoryError,
)


@dataclass(frozen=True)
class ClassEntry:
    image: ImageRef
    label: str | int  # as found in the source


class ClassificationSource(Source):
    task = "classification"

    def __init__(
        self,
        kind: str,
        name: str,
        file: Path,
        root: Path | None,
        hashed: list[Path],
        entries: list[ClassEntry],
        label_field: str,
        listing: list[Path] | None = None,
    ) -> None:
        super().__init__(kind, name, file, root, hashed)
        if not entries:
            raise EmptySourceError(file, "", "", "no labelled images")
        self.entries = entries
        self.label_field = label_field  # what errors about a label call the field
        self.listing = listing  # image folders have no annotation file: the manifest records the listing

    def refs(self) -> Iterable[ImageRef]:
        return (e.image for e in self.entries)

    def source_hashes(self) -> dict[str, Any]:
        out = super().source_hashes()
        if self.listing is not None:
            digest = hashlib.sha256()
            for path in self.listing:
                digest.update(f"{path.relative_to(self.file).as_posix()}\t{path.stat().st_size}\n".encode())
            out["listing"] = {"images": len(self.listing), "sha256": digest.hexdigest()}
        return out


class LabelMap:
    """Maps raw labels to indices of a class list; unknown labels are errors naming the record.

    >>> m = LabelMap(["Abyssinian", "American Bulldog"], {}, base=1)
    >>> m.index("american_bulldog", "f.csv", "row 2", "label"), m.index(1, "f.csv", "row 3", "label")
    (1, 0)
    """

    def __init__(self, classes: list[str], aliases: dict[str, tuple[str, ...]], base: int) -> None:
        self.classes = classes
        self.base = base
        self._lookup: dict[str, int] = {}
        for i, name in enumerate(classes):
            for text in (name, *aliases.get(name, ())):
                self._lookup.setdefault(normalize_label(text), i)

    def index(self, raw: Any, file: str | Path, record: str, field: str) -> int:
        if isinstance(raw, str):
            found = self._lookup.get(normalize_label(raw))
            if found is not None:
                return found
            digits = raw.strip()
            # ASCII digits only ("²".isdigit() is true but int() refuses it), and no 4300-digit numbers.
            if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
                raise UnknownCategoryError(
                    file, record, field, f"label {raw!r} is not one of the {len(self.classes)} classes"
                )
            raw = int(digits)
        if isinstance(raw, int) and not isinstance(raw, bool):
            i = raw - self.base
            if 0 <= i < len(self.classes):
                return i
            raise UnknownCategoryError(
                file,
                record,
                field,
                f"label {raw} is outside {self.base}.."
                f"{len(self.classes) - 1 + self.base} (label_base {self.base})",
            )
        raise InvalidValueError(file, record, field, f"expected a class name or an integer, got {raw!r}")


def check_label(label: Any, file: str | Path, record: str, field: str) -> str | int:
    """A raw label as read: a non-empty class name or an integer index; anything else is an error.

    >>> check_label(" cat ", "f.json", "[0]", "label"), check_label(3, "f.json", "[1]", "label")
    ('cat', 3)
    >>> check_label(True, "f.json", "[2]", "label")
    Traceback (most recent call last):
    ...
    vrft.data.errors.InvalidValueError: f.json: [2]: field 'label': expected a class name or an integer index, got True
    """
    if isinstance(label, str):
        label = label.strip()
        if not label:
            raise InvalidValueError(file, record, field, "empty label")
        return label
    if label is None:
        raise InvalidValueError(file, record, field, "empty label")
    if type(label) is not int or abs(label) > 2**63 - 1:
        raise InvalidValueError(
            file, record, field, f"expected a class name or an integer index, got {label!r}"
        )
    return label


def load_image_folder(root: Path, *, name: str, kind: str = "image_folder") -> ClassificationSource:
    """``root/<class name>/<image>``; class = folder name. Other files are ignored."""
    if not root.is_dir():
        raise InvalidFileError(root, "", "", "not a directory (expected one sub-directory per class)")
    entries = []
    listing = []
    for class_dir in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name):
        for image in list_images(class_dir):
            rel = check_utf8_name(f"{class_dir.name}/{image.name}", file=root, record="", field="file")
            entries.append(ClassEntry(ImageRef(rel, rel, 0, 0, rel), class_dir.name))
            listing.append(image)
    if not entries:
        raise EmptySourceError(
            root, "", "", f"no images ({', '.join(IMAGE_EXTENSIONS)}) in class sub-directories"
        )
    return ClassificationSource(kind, name, root, root, [], entries, "folder name", listing)


def _manifest_rows(file: Path, file_column: str, label_column: str) -> list[tuple[str, Any, Any]]:
    """``(record, file value, label value)`` per row of a CSV or JSON manifest."""
    if file.suffix.lower() == ".json":
        data = read_json(file)
        if not isinstance(data, list):
            raise InvalidFileError(
                file,
                "top level",
                "",
                f"expected a JSON list of {{{file_column!r}: ..., "
                f"{label_column!r}: ...}} objects, got {type(data).__name__}",
            )
        rows = []
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise InvalidValueError(file, f"[{i}]", "", "expected an object")
            for key in (file_column, label_column):
                if key not in item:
                    raise MissingFieldError(file, f"[{i}]", key, "missing")
            rows.append((f"[{i}]", item[file_column], item[label_column]))
        return rows
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            for key in (file_column, label_column):
                if key not in header:
                    raise MissingFieldError(
                        file, "header", key, f"missing column (columns: {', '.join(header)})"
                    )
            return [(f"row {reader.line_num}", r[file_column], r[label_column]) for r in reader]
    except FileNotFoundError:
        raise InvalidFileError(file, "", "", "file not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidFileError(file, "", "", f"not a readable CSV file ({exc})") from None


def load_manifest(
    file: Path, images: Path | None, *, name: str, file_column: str, label_column: str
) -> ClassificationSource:
    """A CSV (header row) or JSON list of (file, label); files are relative to ``images``."""
    root = images if images is not None else file.parent
    entries = []
    seen: dict[str, str] = {}
    for record, value, label in _manifest_rows(file, file_column, label_column):
        rel = check_relative(value, file=file, record=record, field=file_column)
        norm = os.path.normpath(rel)
        if norm in seen:
            raise DuplicateIdError(file, record, file_column, f"{rel!r} is also {seen[norm]}")
        seen[norm] = record
        entries.append(
            ClassEntry(ImageRef(rel, rel, 0, 0, record), check_label(label, file, record, label_column))
        )
    if not entries:
        raise EmptySourceError(file, "", "", "no rows")
    return ClassificationSource("manifest", name, file, root, [file], entries, label_column)


class HFSource(ClassificationSource):
    """A ``datasets`` dataset: images are read from the dataset itself, never from disk paths."""

    def __init__(
        self,
        name: str,
        path: str,
        split: str,
        dataset: datasets.Dataset,
        image_column: str,
        label_column: str,
    ) -> None:
        features = dataset.features
        for column in (image_column, label_column):
            if column not in features:
                raise MissingFieldError(
                    path, f"split {split!r}", column, f"no such column (columns: {', '.join(features)})"
                )
        if not isinstance(features[image_column], datasets.Image):
            raise InvalidValueError(
                path,
                f"split {split!r}",
                image_column,
                f"expected an Image column, got {features[image_column]}",
            )
        labels = dataset.data.column(label_column).to_pylist()
        label_feature = features[label_column]
        if isinstance(label_feature, datasets.ClassLabel):
            labels = [label_feature.int2str(v) for v in labels]
        self.dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        self.image_column = image_column
        self.split = split
        self.path = path
        entries = [
            ClassEntry(
                ImageRef(i, f"{split}/{i}", 0, 0, f"split {split!r} row {i}"),
                check_label(label, path, f"split {split!r} row {i}", label_column),
            )
            for i, label in enumerate(labels)
        ]
        cache_files = [Path(c["filename"]) for c in dataset.cache_files]
        super().__init__("hf", name, Path(path), None, cache_files, entries, label_column)

    def source_hashes(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "dataset": self.path,
            "split": self.split,
            "files": hash_files(self.hashed_files),
        }

    def image_path(self, ref: ImageRef) -> str:
        """Not a file: where the image lives inside the dataset (errors and ``load_images: false``)."""
        return f"{self.path}[{self.split}][{ref.id}]"

    def image_key(self, ref: ImageRef) -> str:
        return f"hf:{self.image_path(ref)}"

    def read_image_bytes(self, ref: ImageRef) -> bytes:
        value = self.dataset[int(ref.id)][self.image_column]
        if value is None:
            raise ImageFileError(self.path, ref.record, self.image_column, "no image")
        if value.get("bytes"):
            return value["bytes"]
        path = value.get("path")
        try:
            return Path(path).read_bytes()
        except (OSError, TypeError) as exc:
            raise ImageFileError(
                self.path,
                ref.record,
                self.image_column,
                f"image stored as path {path!r} cannot be read ({exc})",
            ) from None


def load_hf(path: str, split: str, *, name: str, image_column: str, label_column: str) -> HFSource:
    """``load_from_disk(path)`` when ``path`` exists, else ``load_dataset(path)`` (needs a reachable hub)."""
    try:
        if Path(path).exists():
            loaded = datasets.load_from_disk(path)
        else:
            loaded = datasets.load_dataset(path, split=split or None)
    except Exception as exc:  # datasets raises many types (FileNotFoundError, ConnectionError, ...)
        raise InvalidFileError(
            path, "", "", f"cannot load as a datasets dataset ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if not split:
            if len(loaded) != 1:
                raise MissingFieldError(
                    path, "", "split", f"the dataset has splits {', '.join(loaded)}: set `split`"
                )
            split = next(iter(loaded))
        if split not in loaded:
            raise MissingFieldError(path, "", "split", f"no split {split!r} (splits: {', '.join(loaded)})")
        loaded = loaded[split]
    return HFSource(name, path, split or str(loaded.split or "train"), loaded, image_column, label_column)
