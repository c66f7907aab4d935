"""Errors for malformed source data: each names the file, the record and the field.

A source dataset is usually someone else's file, and the useful error is the one that lets the
user open that file at the right place, so every error carries ``file``, ``record`` (e.g.
``annotations[17] (id 4242)``) and ``field`` and puts all three in its message. One subclass
per kind of problem lets callers and tests tell them apart.

>>> str(InvalidBoxError("instances.json", record_name("annotations", 17, 4242), "bbox", "width is 0"))
"instances.json: annotations[17] (id 4242): field 'bbox': width is 0"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class DatasetError(ValueError):
    """Base class: the source data cannot be turned into a dataset."""

    def __init__(self, file: str | Path, record: str, field: str, problem: str) -> None:
        self.file = str(file)
        self.record = record
        self.field = field
        self.problem = problem
        parts = [self.file]
        if record:
            parts.append(record)
        if field:
            parts.append(f"field {field!r}")
        parts.append(problem)
        super().__init__(": ".join(parts))


class InvalidFileError(DatasetError):
    """The file is not what it should be: not JSON/CSV, wrong top-level type, unreadable."""


class MissingFieldError(DatasetError):
    """A required key is absent from a record."""


class InvalidValueError(DatasetError):
    """A field has the wrong type or an impossible value (e.g. a negative width)."""


class InvalidBoxError(DatasetError):
    """A box has non-positive size or lies outside its image (beyond the rounding tolerance)."""


class DuplicateIdError(DatasetError):
    """Two records share an id that must be unique."""


class DanglingReferenceError(DatasetError):
    """A record points at an image or category that does not exist."""


class UnsafePathError(DatasetError):
    """A file name is absolute or climbs out of its root directory (``../``)."""


class ImageFileError(DatasetError):
    """An image file is missing, unreadable, or not the size the annotations say."""


class EmptySourceError(DatasetError):
    """The source holds no usable images, annotations or classes."""


class UnknownCategoryError(DatasetError):
    """A category or class name requested by a preset or config is not in the source."""


class InsufficientSamplesError(DatasetError):
    """Fewer images than requested exist for a category and ``on_insufficient`` is ``error``."""


def record_name(collection: str, index: int, record_id: Any = None) -> str:
    """``annotations[17] (id 4242)``: how errors point at one record of a JSON list.

    >>> record_name("images", 3)
    'images[3]'
    """
    return f"{collection}[{index}]" + (f" (id {record_id!r})" if record_id is not None else "")
