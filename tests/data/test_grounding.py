"""LISA reasoning grounding: polygons -> one box, one sample per instruction, 'ignore' shapes dropped."""

from __future__ import annotations

import json

import datasets
import pytest

from vrft.data import (
    EmptySourceError,
    ImageFileError,
    InvalidBoxError,
    InvalidValueError,
    MissingFieldError,
    check_example,
)


def write_lisa(fx, name: str, items: dict[str, dict]) -> str:
    directory = fx.root / name
    for stem, data in items.items():
        fx.image(directory / f"{stem}.jpg", (64, 48))
        (directory / f"{stem}.json").write_text(json.dumps(data))
    return str(directory)


CUP = {
    "text": ["What could hold the tea?", "the cup", "the cup"],
    "is_sentence": True,
    "shapes": [
        {"label": "target", "points": [[10, 5], [30, 5], [30, 25]], "shape_type": "polygon"},
        {"label": "target", "points": [[40, 30], [50, 40], [45, 35]], "shape_type": "polygon"},
        {"label": "ignore", "points": [[0, 0], [63, 47], [0, 47]], "shape_type": "polygon"},
    ],
}


def _item(x: int) -> dict:
    return {
        "text": f"object {x}",
        "shapes": [{"label": "target", "points": [[x, 2], [x + 10, 2], [x + 10, 12]]}],
    }


def test_lisa_train_and_eval(fx):
    train = write_lisa(fx, "train", {"cup": CUP, "b": _item(3), "c": _item(5)})
    val = write_lisa(fx, "val", {"d": _item(7), "e": _item(9)})
    result = fx.build(
        train={"kind": "lisa", "path": train}, eval={"kind": "lisa", "path": val}, preset="lisa", shots=None
    )
    ds = datasets.load_from_disk(str(fx.root / "out"))
    rows = list(ds["train"])
    cup = [r for r in rows if r["image_id"] == "cup"]
    # duplicate instruction dropped; the box is the first target polygon's (the authors' conversion)
    assert [r["instruction"] for r in cup] == ["What could hold the tea?", "the cup"]
    assert all(r["gt_boxes"] == [[10.0, 5.0, 30.0, 25.0]] for r in cup)
    assert len(rows) == 4 and len(ds["eval"]) == 2
    for r in rows + list(ds["eval"]):
        check_example(r)
        assert (r["task"], r["category"], r["category_id"], r["file_name"][-4:]) == (
            "grounding",
            "",
            -1,
            ".jpg",
        )
    assert result.manifest["sources"]["train"]["files"]["cup.json"]["size"] > 0
    assert result.manifest["splits"]["train"]["positives"] == {"instructions": 4}


def test_lisa_box_from_all_polygons_encloses_every_target_polygon(tmp_path):
    from vrft.data.lisa import load_lisa

    (tmp_path / "cup.json").write_text(json.dumps(CUP))
    from PIL import Image

    Image.new("RGB", (64, 48)).save(tmp_path / "cup.jpg")
    first = load_lisa(tmp_path, name="x", tolerance=1.0, show_progress=False)
    union = load_lisa(tmp_path, name="x", tolerance=1.0, show_progress=False, box_from="all_polygons")
    assert first.items[0].box == [10.0, 5.0, 30.0, 25.0] and union.items[0].box == [10.0, 5.0, 50.0, 40.0]


def test_lisa_k_images_and_eval_from_the_rest(fx):
    train = write_lisa(fx, "train", {f"i{n}": _item(n) for n in range(6)})
    fx.build(train={"kind": "lisa", "path": train}, shots=2, seed=1)
    ds = datasets.load_from_disk(str(fx.root / "out"))
    assert len(ds["train"]) == 2 and len(ds["eval"]) == 4
    assert not set(ds["train"]["image_id"]) & set(ds["eval"]["image_id"])


@pytest.mark.parametrize(
    "data, error, where",
    [
        ({"shapes": _item(1)["shapes"]}, MissingFieldError, "top level: field 'text'"),
        ({"text": "x", "shapes": [{"label": "target"}]}, MissingFieldError, "shapes[0]: field 'points'"),
        (
            {"text": "x", "shapes": [{"label": "ignore", "points": [[1, 1], [5, 5]]}]},
            InvalidValueError,
            "top level: field 'shapes': no polygon other than 'ignore'",
        ),
        (
            {"text": "x", "shapes": [{"label": "t", "points": [[1, 1], [90, 5]]}]},
            InvalidBoxError,
            "top level: field 'shapes': the polygons' enclosing box",
        ),
        (
            {"text": "x", "shapes": [{"label": "t", "points": [[1, 1], [1, 5]]}]},
            InvalidBoxError,
            "non-positive",
        ),
        ({"text": [], "shapes": _item(1)["shapes"]}, InvalidValueError, "no non-empty instruction"),
        (
            {"text": "x", "shapes": [{"label": "t", "points": [[1, "a"]]}]},
            InvalidValueError,
            "field 'points[0]'",
        ),
    ],
)
def test_malformed_lisa(fx, data, error, where):
    train = write_lisa(fx, "train", {"a": _item(1), "bad": data})
    with pytest.raises(error) as info:
        fx.build(train={"kind": "lisa", "path": train}, shots=1)
    assert str(info.value).startswith(f"{fx.root / 'train' / 'bad.json'}: ") and where in str(info.value)
    assert fx.leftovers() == []


def test_lisa_json_without_image_and_empty_dir(fx):
    train = write_lisa(fx, "train", {"a": _item(1)})
    (fx.root / "train" / "lonely.json").write_text(json.dumps(_item(2)))
    with pytest.raises(ImageFileError, match="lonely.json: field 'image': no image file lonely"):
        fx.build(train={"kind": "lisa", "path": train}, shots=1)
    (fx.root / "empty").mkdir()
    with pytest.raises(EmptySourceError, match="no .json annotation files"):
        fx.build(train={"kind": "lisa", "path": str(fx.root / "empty")}, shots=1)
    assert fx.leftovers() == []
