"""Stage 1: few-shot dataset construction (see docs/dataset.md).

``build_dataset(DatasetConfig, output_dir)`` reads a source (COCO, LVIS, LISA, image folder, CSV/JSON
manifest, ``datasets`` dataset, or the synthetic shapes), chooses the experiment's train and eval
samples from a seed, and writes a ``DatasetDict`` plus ``manifest.json``.
"""

from vrft.data.build import DatasetBuildResult, build_dataset, resolve_plan
from vrft.data.config import DatasetConfig, SourceConfig
from vrft.data.errors import (
    DanglingReferenceError,
    DatasetError,
    DuplicateIdError,
    EmptySourceError,
    ImageFileError,
    InsufficientSamplesError,
    InvalidBoxError,
    InvalidFileError,
    InvalidValueError,
    MissingFieldError,
    UnknownCategoryError,
    UnsafePathError,
)
from vrft.data.presets import PRESETS
from vrft.data.schema import COLUMNS, TASKS, check_example, features
from vrft.data.shapes import generate_shapes_classification, generate_shapes_coco

__all__ = [
    "COLUMNS", "PRESETS", "TASKS", "DanglingReferenceError", "DatasetBuildResult", "DatasetConfig", "DatasetError",
    "DuplicateIdError", "EmptySourceError", "ImageFileError", "InsufficientSamplesError", "InvalidBoxError",
    "InvalidFileError", "InvalidValueError", "MissingFieldError", "SourceConfig", "UnknownCategoryError",
    "UnsafePathError", "build_dataset", "check_example", "features", "generate_shapes_classification",
    "generate_shapes_coco", "resolve_plan",
]
