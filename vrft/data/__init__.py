"""Stage 1: few-shot dataset construction (see docs/dataset.md).

``build_dataset(DatasetConfig, output_dir)`` reads a source (COCO, LVIS, LISA, image folder, CSV/JSON
manifest, ``datasets`` dataset, or the synthetic shapes), chooses the experiment's train and eval
samples from a seed, and writes a ``DatasetDict`` plus ``manifest.json``.
"""

from vrft._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "COLUMNS": "vrft.data.schema",
        "DanglingReferenceError": "vrft.data.errors",
        "DatasetBuildResult": "vrft.data.build",
        "DatasetConfig": "vrft.data.config",
        "DatasetError": "vrft.data.errors",
        "DuplicateIdError": "vrft.data.errors",
        "EmptySourceError": "vrft.data.errors",
        "ImageFileError": "vrft.data.errors",
        "InsufficientSamplesError": "vrft.data.errors",
        "InvalidBoxError": "vrft.data.errors",
        "InvalidFileError": "vrft.data.errors",
        "InvalidValueError": "vrft.data.errors",
        "MissingFieldError": "vrft.data.errors",
        "PRESETS": "vrft.data.presets",
        "SourceConfig": "vrft.data.config",
        "TASKS": "vrft.data.schema",
        "UnknownCategoryError": "vrft.data.errors",
        "UnsafePathError": "vrft.data.errors",
        "build_dataset": "vrft.data.build",
        "check_example": "vrft.data.schema",
        "features": "vrft.data.schema",
        "generate_shapes_classification": "vrft.data.shapes",
        "generate_shapes_coco": "vrft.data.shapes",
        "resolve_plan": "vrft.data.build",
    },
)

__all__ = __dir__()
