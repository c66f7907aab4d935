"""The dataset stage's rows, rendered for one model as trl's GRPO and SFT trainers expect them.

Both stages read the same ``train`` split (ground truth in original pixels) and render it with
:mod:`vrft.tasks` in the model's box convention, so GRPO's reward columns and the SFT target can
never disagree with the prompt. The rendered columns are computed without decoding images and
joined column-wise onto the memory-mapped split: nothing is written into the dataset directory
(which may be read-only, and whose manifest would no longer verify).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import datasets

from vrft.config import ConfigError
from vrft.data.verify import verify_dataset
from vrft.io import ManifestError
from vrft.models.coords import BoxConvention
from vrft.tasks import conversation, solution_columns, target_answer, training_prompt_text

#: Columns the renderers read (see :mod:`vrft.data.schema`).
REQUIRED_COLUMNS = (
    "image",
    "image_id",
    "width",
    "height",
    "task",
    "category",
    "gt_boxes",
    "aliases",
    "noun",
    "instruction",
)

_MESSAGES = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
#: Types of the columns added for training; fixed so an all-negative split is not typed as null lists.
ADDED_FEATURES = {
    "prompt": _MESSAGES,
    "completion": _MESSAGES,
    "row_index": datasets.Value("int64"),
    "solution_boxes": datasets.List(datasets.List(datasets.Value("int64"))),
    "solution_box": datasets.List(datasets.Value("int64")),
    "class_name": datasets.Value("string"),
    "aliases": datasets.List(datasets.Value("string")),
}


def load_train_split(dataset_dir: str | Path) -> tuple[datasets.Dataset, str]:
    """The ``train`` split of a built dataset and its task; a one-line :class:`ConfigError` if unusable."""
    path = Path(dataset_dir)
    hint = f"build it with `vrft dataset build CONFIG -o {path}`"
    if not path.is_dir():
        raise ConfigError(f"dataset_dir {path}: not found ({hint})")
    try:
        verify_dataset(path)
    except ManifestError as exc:
        raise ConfigError(f"dataset_dir {path}: not a saved dataset: {exc}") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"dataset_dir {path}: not a saved dataset ({exc}); {hint}") from None
    if not isinstance(loaded, datasets.DatasetDict) or "train" not in loaded:
        raise ConfigError(f"dataset_dir {path}: has no 'train' split ({hint})")
    train = loaded["train"]
    missing = [c for c in REQUIRED_COLUMNS if c not in train.column_names]
    if missing:
        raise ConfigError(f"dataset_dir {path}: the train split lacks columns {missing}; {hint}")
    if not isinstance(train.features["image"], datasets.Image):
        raise ConfigError(
            f"dataset_dir {path}: images are stored as paths (load_images: false); rebuild with "
            "load_images: true to train"
        )
    tasks = sorted(set(train["task"]))
    if len(tasks) != 1:
        raise ConfigError(f"dataset_dir {path}: one task per training run, found {tasks}")
    return train, tasks[0]


def _with_columns(
    train: datasets.Dataset, render: Callable[[int, Mapping[str, Any]], dict[str, Any]]
) -> datasets.Dataset:
    """``train`` plus the columns ``render(index, row)`` returns (rows read without their image).

    A rendered column that the split already has (e.g. ``aliases``) must equal it and is not added twice.
    """
    meta = train.remove_columns("image")
    rendered = [render(i, row) for i, row in enumerate(meta)]
    existing = set(train.column_names)
    for i, (row, extra) in enumerate(zip(meta, rendered)):
        for name in existing & set(extra):
            if row[name] != extra[name]:
                raise ValueError(f"row {i}: rendered column {name!r} differs from the dataset's")
    names = [name for name in rendered[0] if name not in existing]
    features = datasets.Features({name: ADDED_FEATURES[name] for name in names})
    added = datasets.Dataset.from_list([{n: r[n] for n in names} for r in rendered], features=features)
    return datasets.concatenate_datasets([train, added], axis=1)


def grpo_dataset(train: datasets.Dataset, convention: BoxConvention, style: str = "vrft") -> datasets.Dataset:
    """trl GRPO rows: a conversational ``prompt`` (trl inserts the ``image`` itself), the reward's
    solution columns in the model's convention, ``row_index`` (for the per-step sample record) and
    every original column. ``style``: the stage's ``prompt_style``."""

    def render(index: int, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "prompt": conversation(training_prompt_text(row, convention, style=style, stage="grpo")),
            "row_index": index,
            **solution_columns(row, convention),
        }

    return _with_columns(train, render)


def sft_dataset(train: datasets.Dataset, convention: BoxConvention, style: str = "vrft") -> datasets.Dataset:
    """trl SFT prompt/completion rows with the image: the completion is :func:`vrft.tasks.target_answer`,
    exactly the format the prompt asks for, and the only part the loss is computed on. ``style``: the
    stage's ``prompt_style``."""

    def render(index: int, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "prompt": conversation(training_prompt_text(row, convention, style=style, stage="sft")),
            "completion": [{"role": "assistant", "content": target_answer(row, convention, style)}],
            "row_index": index,
        }

    return _with_columns(train, render)
