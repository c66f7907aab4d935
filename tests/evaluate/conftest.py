"""Shared, session-scoped inputs: tiny checkpoints and tiny built datasets (all offline, < 2 s)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vrft.config import from_dict
from vrft.data import DatasetConfig, build_dataset


def _build(tmp: Path, data: dict) -> Path:
    out = tmp / "dataset"
    build_dataset(from_dict(DatasetConfig, data), out, progress=False)
    return out


@pytest.fixture(scope="session")
def detection_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic shapes, two categories; 5 eval images, 8 eval rows."""
    tmp = tmp_path_factory.mktemp("detection")
    return _build(
        tmp,
        {
            "train": {"kind": "shapes", "path": str(tmp / "shapes"), "n_images": 24},
            "shots": 2,
            "categories": ["circle", "square"],
            "eval_max_per_category": 3,
        },
    )


@pytest.fixture(scope="session")
def classification_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("classification")
    return _build(
        tmp,
        {
            "train": {"kind": "shapes_classification", "path": str(tmp / "shapes"), "n_images": 3},
            "shots": 1,
            "categories": ["circle", "square"],
            "noun": "shape",
        },
    )


def write_lisa(directory: Path, n: int = 3) -> Path:
    """A LISA-style directory: image + LabelMe JSON (a square target polygon, an instruction)."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(directory / f"img{i}.jpg")
        x = 10 + 5 * i
        shapes = [{"label": "target", "points": [[x, 10], [x + 30, 10], [x + 30, 40], [x, 40]]}]
        (directory / f"img{i}.json").write_text(
            json.dumps({"text": [f"the thing number {i}"], "shapes": shapes})
        )
    return directory


@pytest.fixture(scope="session")
def grounding_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("grounding")
    lisa = write_lisa(tmp / "lisa")
    return _build(tmp, {"train": {"kind": "lisa", "path": str(lisa)}, "shots": 1})


def _scripted_detector(
    rows: list[dict],
    convention,
    says_present: Callable[[str, str], bool] | None = None,
    *,
    skip: str = "",
    confidence: float = 1.0,
    think: bool = False,
) -> Callable:
    """A stand-in detection model's answers (``answer(request) -> completion``): the yes/no existence
    question answered by ``says_present(image_id, category)`` (default: the ground truth, except "no"
    for category ``skip``), boxes asked for answered with the ground truth in ``convention``;
    ``think`` adds a reasoning block."""
    truth = {(r["image_id"], r["category"]): r for r in rows}

    def present(image_id: str, category: str) -> bool:
        row = truth.get((image_id, category))
        return row is not None and bool(row["gt_boxes"]) and category != skip

    says_present = says_present or present

    def reasoning(text: str) -> str:
        return f"<think>{text}</think>" if think else ""

    def answer(request) -> str:
        image_id, category, step = request.key.split("|")
        if step == "existence":
            return (
                f"{reasoning('looked')}<answer>{'yes' if says_present(image_id, category) else 'no'}</answer>"
            )
        row = truth.get((image_id, category))
        if row is None or not row["gt_boxes"]:
            return f"{reasoning('none')}<answer>No Objects</answer>"
        boxes = [
            {"Position": convention.to_model(b, row["width"], row["height"]), "Confidence": confidence}
            for b in row["gt_boxes"]
        ]
        return f"{reasoning('found')}<answer>{json.dumps(boxes)}</answer>"

    return answer


@pytest.fixture(scope="session")
def scripted_detector() -> Callable:
    """The factory above (tests here import no helper modules: pytest's importlib import mode)."""
    return _scripted_detector
