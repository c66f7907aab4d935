"""Dataset rows rendered for trl: prompts, reward columns and SFT targets in the model's convention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image

from vrft.config import ConfigError
from vrft.data.schema import features
from vrft.io import write_manifest
from vrft.models.coords import BoxConvention
from vrft.rewards import resolve_reward
from vrft.tasks import prompt_text, target_answer
from vrft.train.data import grpo_dataset, load_train_split, sft_dataset

QWEN2 = BoxConvention("relative_1000")
QWEN25 = BoxConvention("resized_absolute", min_pixels=56 * 56, max_pixels=112 * 112)


def row(task: str, boxes: list[list[float]], **values: Any) -> dict[str, Any]:
    base = {
        "image": Image.new("RGB", (64, 48), "blue"),
        "image_id": "7",
        "file_name": "7.png",
        "width": 64,
        "height": 48,
        "task": task,
        "category": "circle",
        "category_id": 1,
        "gt_boxes": boxes,
        "aliases": [],
        "noun": "",
        "instruction": "",
        "source": "test",
    }
    return {**base, **values}


def save(tmp_path: Path, rows: list[dict[str, Any]], *, embed_images: bool = True) -> Path:
    if not embed_images:
        rows = [{**r, "image": "images/7.png"} for r in rows]
    schema = features(embed_images=embed_images)
    split = datasets.Dataset.from_dict({name: [r[name] for r in rows] for name in schema}, features=schema)
    datasets.DatasetDict({"train": split, "eval": split}).save_to_disk(str(tmp_path / "dataset"))
    write_manifest(tmp_path / "dataset")  # training checks every file against it
    return tmp_path / "dataset"


def test_detection_rows_for_grpo_in_both_conventions(tmp_path: Path) -> None:
    rows = [
        row("detection", [[16.0, 12.0, 32.0, 24.0]]),
        row("detection", [], image_id="8", category="square"),
    ]
    directory = save(tmp_path, rows)
    before = sorted(p.relative_to(directory) for p in directory.rglob("*"))
    train, task = load_train_split(directory)
    assert task == "detection"

    qwen2 = grpo_dataset(train, QWEN2)
    first = qwen2[0]
    assert first["prompt"] == [{"role": "user", "content": prompt_text(rows[0], QWEN2)}]
    assert (
        "between 0 and 1000" in first["prompt"][0]["content"]
        and "<image>" not in first["prompt"][0]["content"]
    )
    assert first["solution_boxes"] == [[250, 250, 500, 500]]
    assert qwen2[1]["solution_boxes"] == [] and qwen2[1]["row_index"] == 1
    assert isinstance(first["image"], Image.Image) and first["gt_boxes"] == [[16.0, 12.0, 32.0, 24.0]]
    assert set(train.column_names) < set(qwen2.column_names), "the dataset's own columns are kept"

    qwen25 = grpo_dataset(train, QWEN25)[0]
    scale_x, scale_y = (size / original for size, original in zip(QWEN25.resized_size(64, 48), (64, 48)))
    assert qwen25["solution_boxes"] == [
        [round(16 * scale_x), round(12 * scale_y), round(32 * scale_x), round(24 * scale_y)]
    ]
    assert "absolute pixel coordinates" in qwen25["prompt"][0]["content"]
    # The reward scores the ground truth, written as the prompt asks, as a perfect answer.
    answer = target_answer(rows[0], QWEN25)
    assert resolve_reward("detection")([answer], solution_boxes=[qwen25["solution_boxes"]]) == [3.0]
    assert sorted(p.relative_to(directory) for p in directory.rglob("*")) == before, "wrote into the dataset"


def test_all_negative_detection_split_keeps_typed_box_columns(tmp_path: Path) -> None:
    train, _ = load_train_split(save(tmp_path, [row("detection", []), row("detection", [], image_id="8")]))
    mapped = grpo_dataset(train, QWEN2)
    assert mapped.features["solution_boxes"] == datasets.List(datasets.List(datasets.Value("int64")))
    assert mapped["solution_boxes"] == [[], []]


def test_classification_and_grounding_reward_columns(tmp_path: Path) -> None:
    classification = [row("classification", [], category="Boeing 737", aliases=["B737"], noun="aircraft")]
    train, task = load_train_split(save(tmp_path / "c", classification))
    mapped = grpo_dataset(train, QWEN2)[0]
    assert task == "classification"
    assert (mapped["class_name"], mapped["aliases"]) == ("Boeing 737", ["B737"])
    assert "aircraft" in mapped["prompt"][0]["content"]

    grounding = [
        row(
            "grounding",
            [[8.0, 8.0, 40.0, 40.0]],
            category="",
            category_id=-1,
            instruction="the thing one sits on",
        )
    ]
    train, task = load_train_split(save(tmp_path / "g", grounding))
    mapped = grpo_dataset(train, QWEN2)[0]
    assert task == "grounding" and mapped["solution_box"] == [125, 167, 625, 833]
    assert "the thing one sits on" in mapped["prompt"][0]["content"]


def test_sft_rows_are_prompt_and_target_completion(tmp_path: Path) -> None:
    rows = [row("detection", [[16.0, 12.0, 32.0, 24.0]])]
    train, _ = load_train_split(save(tmp_path, rows))
    mapped = sft_dataset(train, QWEN2)[0]
    assert mapped["prompt"] == [{"role": "user", "content": prompt_text(rows[0], QWEN2)}]
    assert mapped["completion"] == [{"role": "assistant", "content": target_answer(rows[0], QWEN2)}]
    assert mapped["completion"][0]["content"].endswith(
        "<answer>[{'Position': [250, 250, 500, 500], 'Confidence': 1.0}]</answer>"
    )
    assert isinstance(mapped["image"], Image.Image)


@pytest.mark.parametrize(
    ("rows", "options", "message"),
    [
        ([row("detection", []), row("classification", [], image_id="8")], {}, "one task per training run"),
        ([row("detection", [])], {"embed_images": False}, "rebuild with load_images: true"),
    ],
)
def test_unusable_datasets_are_refused(
    tmp_path: Path, rows: list[dict[str, Any]], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_train_split(save(tmp_path, rows, **options))
