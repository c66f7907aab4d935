"""Every kind of malformed input: a specific error naming file, record and field; nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from vrft.data import (
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
    build_dataset,
)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


def _empty(data: dict[str, Any]) -> None:
    data["images"], data["annotations"] = [], []


# (mutation of the tiny COCO file, error class, record named, field named, words of the problem)
JSON_CASES = {
    "missing bbox": (
        _delete(("annotations", 2, "bbox")),
        MissingFieldError,
        "annotations[2] (id 3)",
        "bbox",
        "missing",
    ),
    "missing image width": (
        _delete(("images", 4, "width")),
        MissingFieldError,
        "images[4] (id 5)",
        "width",
        "missing",
    ),
    "missing categories": (_delete(("categories",)), MissingFieldError, "top level", "categories", "missing"),
    "box past the right edge": (
        _set(("annotations", 0, "bbox"), [50, 0, 20, 10]),
        InvalidBoxError,
        "annotations[0] (id 1)",
        "bbox",
        "right edge",
    ),
    "box far above the image": (
        _set(("annotations", 0, "bbox"), [0, -5, 10, 10]),
        InvalidBoxError,
        "annotations[0] (id 1)",
        "bbox",
        "top edge",
    ),
    "zero-width box": (
        _set(("annotations", 1, "bbox"), [5, 5, 0, 4]),
        InvalidBoxError,
        "annotations[1] (id 2)",
        "bbox",
        "non-positive",
    ),
    "negative-height box": (
        _set(("annotations", 1, "bbox"), [5, 5, 3, -4]),
        InvalidBoxError,
        "annotations[1] (id 2)",
        "bbox",
        "non-positive",
    ),
    "box with 3 numbers": (
        _set(("annotations", 1, "bbox"), [5, 5, 3]),
        InvalidBoxError,
        "annotations[1] (id 2)",
        "bbox",
        "expected [x, y, width, height]",
    ),
    "box with a string": (
        _set(("annotations", 1, "bbox"), [5, "5", 3, 3]),
        InvalidBoxError,
        "annotations[1] (id 2)",
        "bbox",
        "4 numbers",
    ),
    "duplicate image id": (
        _set(("images", 3, "id"), 3),
        DuplicateIdError,
        "images[3] (id 3)",
        "id",
        "same id as images[2]",
    ),
    "duplicate annotation id": (
        _set(("annotations", 4, "id"), 1),
        DuplicateIdError,
        "annotations[4] (id 1)",
        "id",
        "same id as annotations[0]",
    ),
    "annotation of a missing image": (
        _set(("annotations", 0, "image_id"), 99),
        DanglingReferenceError,
        "annotations[0] (id 1)",
        "image_id",
        "no image with id 99",
    ),
    "annotation of a missing category": (
        _set(("annotations", 0, "category_id"), 42),
        DanglingReferenceError,
        "annotations[0] (id 1)",
        "category_id",
        "no category with id 42",
    ),
    "path traversal": (
        _set(("images", 0, "file_name"), "../../etc/passwd"),
        UnsafePathError,
        "images[0] (id 1)",
        "file_name",
        "leaves the image directory",
    ),
    "absolute path": (
        _set(("images", 0, "file_name"), "/etc/passwd"),
        UnsafePathError,
        "images[0] (id 1)",
        "file_name",
        "absolute path",
    ),
    "windows absolute path": (
        _set(("images", 1, "file_name"), "C:\\Windows\\win.ini"),
        UnsafePathError,
        "images[1] (id 2)",
        "file_name",
        "absolute path",
    ),
    "width as a string": (
        _set(("images", 0, "width"), "64"),
        InvalidValueError,
        "images[0] (id 1)",
        "width",
        "positive integer",
    ),
    "empty source": (_empty, EmptySourceError, "top level", "images", "is empty"),
}


def _check(exc: DatasetError, file: str, record: str, field: str, words: str) -> None:
    message = str(exc)
    assert message.startswith(file), message
    assert record in message and f"field {field!r}" in message and words in message, message
    assert (exc.file, exc.record, exc.field) == (file, record, field)


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_malformed_coco_json(fx, case):
    mutate, error, record, field, words = JSON_CASES[case]
    data = fx.tiny()
    mutate(data)
    src = fx.coco(data, write_images=False)
    with pytest.raises(error) as info:
        fx.build(train=src, categories=["cat"], shots=1)
    _check(info.value, src["annotations"], record, field, words)
    assert isinstance(info.value, ValueError)
    assert fx.leftovers() == []


def test_not_json(fx):
    src = fx.coco(write_images=False)
    with open(src["annotations"], "w") as f:
        f.write("images: [1, 2]\n")
    with pytest.raises(InvalidFileError) as info:
        fx.build(train=src, shots=1)
    assert str(info.value).startswith(f"{src['annotations']}: line 1 column 1: not valid JSON")
    assert fx.leftovers() == []


def test_binary_file_and_wrong_top_level(fx):
    src = fx.coco(write_images=False)
    with open(src["annotations"], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(InvalidFileError, match="not valid JSON"):
        fx.build(train=src, shots=1)
    with open(src["annotations"], "w") as f:
        json.dump([{"id": 1}], f)
    with pytest.raises(InvalidFileError) as info:
        fx.build(train=src, shots=1)
    assert "top level: expected a JSON object" in str(info.value)
    assert fx.leftovers() == []


def _image_case(fx, damage) -> tuple[dict[str, str], ImageFileError]:
    src = fx.coco()
    damage(fx.root / "coco" / "images")
    with pytest.raises(ImageFileError) as info:
        # all six cat images are used, so the damaged one is read (inside the atomic output directory)
        fx.build(train=src, categories=["cat"], eval_categories=["dog"], shots=6)
    return src, info.value


def test_missing_image_file(fx):
    src, exc = _image_case(fx, lambda d: (d / "001.png").unlink())
    _check(exc, src["annotations"], "images[0] (id 1)", "file_name", "does not exist")
    assert "001.png" in str(exc)
    assert fx.leftovers() == []


def test_unreadable_image_file(fx):
    src, exc = _image_case(fx, lambda d: (d / "002.png").write_bytes(b"not an image at all"))
    _check(exc, src["annotations"], "images[1] (id 2)", "file_name", "not a readable image")
    assert fx.leftovers() == []


def test_truncated_image_file(fx):
    def truncate(d):
        data = (d / "003.png").read_bytes()
        (d / "003.png").write_bytes(data[: len(data) // 2])

    src, exc = _image_case(fx, truncate)
    _check(exc, src["annotations"], "images[2] (id 3)", "file_name", "not a readable image")
    assert fx.leftovers() == []


def test_image_of_the_wrong_size(fx):
    src, exc = _image_case(fx, lambda d: fx.image(d / "004.png", size=(32, 32)))
    _check(exc, src["annotations"], "images[3] (id 4)", "width/height", "annotations say 64x48")
    assert fx.leftovers() == []


def test_k_larger_than_available(fx):
    src = fx.coco(write_images=False)
    with pytest.raises(InsufficientSamplesError) as info:
        fx.build(train=src, categories=["cat", "bus"], shots=2)
    _check(
        info.value,
        src["annotations"],
        "category 'bus' (id 3)",
        "shots",
        "asked for 2 images containing it, only 1 available",
    )
    assert "on_insufficient: use_all" in str(info.value)
    assert fx.leftovers() == []


def test_too_few_negatives(fx):
    src = fx.coco(write_images=False)
    with pytest.raises(InsufficientSamplesError) as info:
        fx.build(train=src, categories=["cat"], shots=6, negative_ratio=1.0)
    _check(info.value, src["annotations"], "category 'cat' (id 1)", "negative_ratio", "asked for 6 negatives")


def test_unknown_category_in_a_preset(fx):
    src = fx.coco(write_images=False)
    with pytest.raises(UnknownCategoryError) as info:
        fx.build(train=src, preset="coco_8", shots=1)
    # coco_8 = bus, train, ...: "bus" exists in the tiny file, "train" does not
    _check(
        info.value,
        src["annotations"],
        "categories[1] of preset 'coco_8'",
        "name",
        "'train' matches no category",
    )
    assert fx.leftovers() == []


def test_unknown_category_in_the_config_suggests_close_names(fx):
    src = fx.coco(write_images=False)
    with pytest.raises(UnknownCategoryError) as info:
        fx.build(train=src, categories=["cat"], eval_categories=["dgo"], shots=1)
    _check(info.value, src["annotations"], "eval_categories[0] of the config", "name", "(close: 'dog')")


def test_output_dir_that_exists_is_never_touched(fx):
    (fx.root / "out").mkdir()
    (fx.root / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        fx.build(train=fx.coco(), categories=["cat"], shots=1)
    assert [p.name for p in (fx.root / "out").iterdir()] == ["keep.txt"]
    build_dataset(
        fx.config(train=fx.coco(), categories=["cat"], shots=1),
        fx.root / "out",
        progress=False,
        overwrite=True,
    )
    assert sorted(p.name for p in (fx.root / "out").iterdir()) == [
        "dataset_dict.json",
        "eval",
        "eval_ground_truth.json",
        "manifest.json",
        "train",
    ]


def test_eval_empty_after_removing_train_images(fx):
    src = fx.coco(write_images=False)
    with pytest.raises(EmptySourceError, match="no eval samples .* once the train images are removed"):
        fx.build(train=src, categories=["bus"], shots=1, load_images=False, verify_images=False)
    assert fx.leftovers() == []
