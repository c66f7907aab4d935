"""Hostile input to stage 1 (issue 14): wrong-typed, colliding, non-finite, huge or deep values and
outputs that overlap the inputs. Each is one ValueError naming file, record and field, and nothing
is written; the user's source data is never touched."""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vrft.cli import main
from vrft.config import ConfigError, from_dict
from vrft.data import (
    DanglingReferenceError,
    DatasetConfig,
    DatasetError,
    DuplicateIdError,
    ImageFileError,
    InvalidBoxError,
    InvalidFileError,
    InvalidValueError,
    UnsafePathError,
    build_dataset,
)
from vrft.data.shapes import generate_shapes_coco
from vrft.io import OutputOverlapError

pytestmark = pytest.mark.timeout(120)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _mixed_image_ids(data: dict[str, Any]) -> None:
    data["images"][1]["id"] = "1"  # images[0] has id 1: two images would both be "1" in the rows


# (mutation of the tiny COCO file, error class, record named, field named, words of the problem)
COCO_CASES = {
    "image id is a list": (
        _set(("images", 0, "id"), [1]),
        InvalidValueError,
        "images[0] (id [1])",
        "id",
        "integer or string id",
    ),
    "image id is true": (
        _set(("images", 0, "id"), True),
        InvalidValueError,
        "images[0] (id True)",
        "id",
        "integer or string id",
    ),
    "image id beyond int64": (
        _set(("images", 0, "id"), 2**70),
        InvalidValueError,
        "images[0]",
        "id",
        "integer or string id",
    ),
    "1 and '1' as two image ids": (
        _mixed_image_ids,
        DuplicateIdError,
        "images[1] (id '1')",
        "id",
        "same id as images[0]",
    ),
    "annotation image_id is an object": (
        _set(("annotations", 0, "image_id"), {"id": 1}),
        InvalidValueError,
        "annotations[0] (id 1)",
        "image_id",
        "got {'id': 1}",
    ),
    "annotation id is a list": (
        _set(("annotations", 0, "id"), [1]),
        InvalidValueError,
        "annotations[0]",
        "id",
        "got [1]",
    ),
    "annotation image_id is true": (
        _set(("annotations", 0, "image_id"), True),
        InvalidValueError,
        "annotations[0] (id 1)",
        "image_id",
        "got True",
    ),
    "annotation category_id is a list": (
        _set(("annotations", 0, "category_id"), [1]),
        InvalidValueError,
        "annotations[0] (id 1)",
        "category_id",
        "integer id",
    ),
    "annotation image_id '1' for image 1": (
        _set(("annotations", 0, "image_id"), "1"),
        DanglingReferenceError,
        "annotations[0] (id 1)",
        "image_id",
        "ids must match in type",
    ),
    "1 and '1' as two annotation ids": (
        _set(("annotations", 1, "id"), "1"),
        DuplicateIdError,
        "annotations[1] (id '1')",
        "id",
        "same id as annotations[0]",
    ),
    "category id is a string": (
        _set(("categories", 0, "id"), "1"),
        InvalidValueError,
        "categories[0] (id '1')",
        "id",
        "integer id",
    ),
    "category id is true": (
        _set(("categories", 0, "id"), True),
        InvalidValueError,
        "categories[0] (id True)",
        "id",
        "integer id",
    ),
    "iscrowd is the string '0'": (
        _set(("annotations", 0, "iscrowd"), "0"),
        InvalidValueError,
        "annotations[0] (id 1)",
        "iscrowd",
        "expected 0 or 1, got '0'",
    ),
    "iscrowd is true": (
        _set(("annotations", 0, "iscrowd"), True),
        InvalidValueError,
        "annotations[0] (id 1)",
        "iscrowd",
        "expected 0 or 1",
    ),
    "width too large for a float": (
        _set(("images", 0, "width"), 10**400),
        InvalidValueError,
        "images[0] (id 1)",
        "width",
        "at most 100000",
    ),
    "bbox number too large for a float": (
        _set(("annotations", 0, "bbox"), [0, 0, 10**400, 5]),
        InvalidBoxError,
        "annotations[0] (id 1)",
        "bbox",
        "finite numbers",
    ),
    "NaN in a bbox": (
        _set(("annotations", 0, "bbox"), [0, 0, math.nan, 5]),
        InvalidBoxError,
        "annotations[0] (id 1)",
        "bbox",
        "finite numbers",
    ),
}


def _check(exc: DatasetError, file: str, record: str, field: str, words: str) -> None:
    message = str(exc)
    assert "\n" not in message
    assert message.startswith(file), message
    assert record in message and f"field {field!r}" in message and words in message, message


@pytest.mark.parametrize("case", sorted(COCO_CASES))
def test_hostile_coco_values(fx, case):
    mutate, error, record, field, words = COCO_CASES[case]
    data = fx.tiny()
    mutate(data)
    src = fx.coco(data, write_images=False)
    Path(src["annotations"]).write_text(json.dumps(data))  # json.dumps writes NaN and huge ints as given
    with pytest.raises(error) as info:
        fx.build(train=src, categories=["cat"], shots=1, load_images=False, verify_images=False)
    _check(info.value, src["annotations"], record, field, words)
    assert fx.leftovers() == []


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"images": ' + "1" * 5000 + "}"])
def test_json_too_deep_or_with_a_huge_integer_is_one_error(fx, text):
    src = fx.coco(write_images=False)
    Path(src["annotations"]).write_text(text)
    with pytest.raises(InvalidFileError) as info:
        fx.build(train=src, shots=1)
    assert str(info.value).startswith(f"{src['annotations']}: not usable JSON")
    assert fx.leftovers() == []


def _lvis(fx, neg: list[Any]) -> dict[str, str]:
    cats = [{"id": 1, "name": "apple", "synonyms": ["apple"], "frequency": "f"}]
    images = [
        {
            "id": i,
            "file_name": f"{i}.jpg",
            "width": 64,
            "height": 48,
            "neg_category_ids": [],
            "not_exhaustive_category_ids": [],
        }
        for i in (1, 2)
    ]
    images[1]["neg_category_ids"] = neg
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}]
    path = fx.root / "lvis.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return {"kind": "lvis", "annotations": str(path), "images": str(fx.root / "img")}


@pytest.mark.parametrize("neg", [[[1]], [True], [{"id": 1}]])
def test_lvis_wrong_typed_category_ids(fx, neg):
    src = _lvis(fx, neg)
    with pytest.raises(InvalidValueError) as info:
        fx.build(train=src, categories=["apple"], shots=1, load_images=False, verify_images=False)
    _check(info.value, src["annotations"], "images[1] (id 2)", "neg_category_ids", "integer category ids")


@pytest.mark.parametrize("point", [[math.nan, 5], [5, math.inf], [10**400, 5], [True, 5]])
def test_lisa_non_finite_polygon_point(fx, point):
    directory = fx.root / "lisa"
    fx.image(directory / "a.jpg", (64, 48))
    shapes = [{"label": "target", "points": [[10, 5], point, [30, 25]]}]
    (directory / "a.json").write_text(json.dumps({"text": "the cup", "shapes": shapes}))
    with pytest.raises(InvalidValueError) as info:
        fx.build(train={"kind": "lisa", "path": str(directory)}, shots=1)
    _check(info.value, str(directory / "a.json"), "shapes[0]", "points[1]", "finite numbers")
    assert fx.leftovers() == []


@pytest.mark.parametrize(
    ("label", "error", "words"),
    [
        ([1], InvalidValueError, "class name or an integer index"),
        (True, InvalidValueError, "class name or an integer index"),
        (1.5, InvalidValueError, "class name or an integer index"),
        (2**70, InvalidValueError, "class name or an integer index"),
        ("\u00b2", Exception, "not one of the 37 classes"),  # "²".isdigit() but int() refuses it
        ("9" * 5000, Exception, "not one of the 37 classes"),
    ],
)
def test_manifest_labels_of_the_wrong_type(fx, label, error, words):
    fx.image(fx.root / "m" / "a.png")
    manifest = fx.root / "m" / "labels.json"
    manifest.write_text(json.dumps([{"file": "a.png", "label": label}]))
    with pytest.raises(DatasetError) as info:
        fx.build(train={"kind": "manifest", "annotations": str(manifest)}, preset="pets37", shots=1)
    assert isinstance(info.value, error)
    _check(info.value, str(manifest), "[0]", "label", words)


def test_manifest_file_that_is_not_a_name(fx):
    manifest = fx.root / "m" / "labels.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps([{"file": [1], "label": "cat"}]))
    with pytest.raises(UnsafePathError) as info:
        fx.build(train={"kind": "manifest", "annotations": str(manifest)}, noun="pet", shots=1)
    _check(info.value, str(manifest), "[0]", "file", "not a file name")


# -- decompression bombs -----------------------------------------------------------------------


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data: decoding would need gigabytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_in_an_image_folder(fx):
    root, other = fx.root / "folder", fx.root / "other"
    for name in ("a", "b"):
        for directory in (root, other):
            fx.image(directory / "cat" / f"{name}.png")
            fx.image(directory / "dog" / f"{name}.png")
    _png_header_only(root / "cat" / "c.png", 20000, 10000)
    with pytest.raises(ImageFileError) as info:
        fx.build(
            train={"kind": "image_folder", "path": str(root)},
            eval={"kind": "image_folder", "path": str(other)},
            noun="pet",
            shots=None,
        )
    _check(info.value, str(root), "cat/c.png", "file_name", "decompression bomb")
    assert fx.leftovers() == []


def test_decompression_bomb_in_coco_and_lisa(fx):
    data = fx.tiny()
    data["images"][0].update(width=20000, height=10000)
    for ann in data["annotations"]:
        ann["bbox"] = [1, 1, 5, 5]
    src = fx.coco(data)
    _png_header_only(fx.root / "coco" / "images" / "001.png", 20000, 10000)
    with pytest.raises(ImageFileError) as info:
        fx.build(train=src, categories=["cat"], eval_categories=["dog"], shots=6)
    _check(info.value, src["annotations"], "images[0] (id 1)", "file_name", "decompression bomb")
    lisa = fx.root / "lisa"
    _png_header_only(lisa / "a.png", 20000, 10000)
    (lisa / "a.json").write_text(
        json.dumps({"text": "x", "shapes": [{"label": "t", "points": [[1, 1], [5, 5]]}]})
    )
    with pytest.raises(ImageFileError) as info:
        fx.build(train={"kind": "lisa", "path": str(lisa)}, shots=1)
    _check(info.value, str(lisa / "a.json"), "image a.png", "image", "decompression bomb")
    assert fx.leftovers() == []


# -- bounds on the synthetic generator ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"n_images": 1_000_000_000_000}, "train.n_images: must be between 1 and 20000"),
        ({"image_size": [200000, 200000]}, r"train.image_size: .* each between 32 and 4096"),
        ({"generator_seed": -1}, "train.generator_seed: must be >= 0"),
    ],
)
def test_shapes_bounds_are_config_errors(fields, words):
    with pytest.raises(ConfigError, match=words):
        from_dict(DatasetConfig, {"train": {"kind": "shapes", **fields}})


def test_shapes_generator_refuses_runaway_sizes(tmp_path):
    with pytest.raises(ValueError, match="between 1 and 20000"):
        generate_shapes_coco(tmp_path / "a", 10**12, 0)
    with pytest.raises(ValueError, match="between 32 and 4096"):
        generate_shapes_coco(tmp_path / "b", 4, 0, (200000, 200000))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("box_tolerance", math.nan, "box_tolerance: expected a finite number"),
        ("negative_ratio", math.inf, "negative_ratio: expected a finite number"),
        ("negative_ratio", 10**400, "negative_ratio: .* too large"),
        ("seed", -1, "seed: must be >= 0"),
    ],
)
def test_non_finite_and_out_of_range_dataset_settings(key, value, words):
    with pytest.raises(ConfigError, match=words):
        from_dict(DatasetConfig, {key: value})


# -- outputs that overlap the inputs --------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["images", "annotations", "coco", "images/sub", "."])
def test_output_overlapping_the_source_is_refused_even_with_overwrite(fx, where):
    src = fx.coco()
    before = _snapshot(fx.root / "coco")
    target = {
        "images": src["images"],
        "annotations": src["annotations"],
        "coco": str(fx.root / "coco"),
        "images/sub": str(fx.root / "coco" / "images" / "sub"),
        ".": str(fx.root),
    }[where]
    with pytest.raises(OutputOverlapError, match="choose an output outside every input"):
        build_dataset(
            fx.config(train=src, categories=["cat"], shots=1), target, progress=False, overwrite=True
        )
    assert _snapshot(fx.root / "coco") == before


def test_output_inside_a_manifest_directory_and_the_shapes_directory(fx):
    fx.image(fx.root / "m" / "a.png")
    manifest = fx.root / "m" / "labels.csv"
    manifest.write_text("file,label\na.png,cat\n")
    with pytest.raises(OutputOverlapError, match="is inside the train.images"):
        build_dataset(
            fx.config(train={"kind": "manifest", "annotations": str(manifest)}, noun="pet", shots=1),
            fx.root / "m" / "out",
            progress=False,
        )
    shapes = fx.root / "shapes"
    with pytest.raises(OutputOverlapError, match="generated shapes files"):
        build_dataset(
            fx.config(train={"kind": "shapes", "path": str(shapes), "n_images": 8}, shots=1),
            shapes,
            progress=False,
            overwrite=True,
        )


def test_cli_refuses_overlap_in_one_line(fx, capsys):
    src = fx.coco()
    config = fx.root / "exp.yaml"
    config.write_text(json.dumps({"dataset": {"train": src, "categories": ["cat"], "shots": 1}}))
    before = _snapshot(fx.root / "coco")
    assert main(["dataset", "build", str(config), "-o", src["images"], "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "output is the dataset.train.images" in err, err
    assert _snapshot(fx.root / "coco") == before


def test_overwrite_replaces_a_regular_file_without_leaving_it_behind(fx):
    (fx.root / "out").write_text("old file")
    fx_config = fx.config(
        train=fx.coco(write_images=False), categories=["cat"], shots=1, load_images=False, verify_images=False
    )
    build_dataset(fx_config, fx.root / "out", progress=False, overwrite=True)
    assert (fx.root / "out" / "manifest.json").is_file()
    assert sorted(p.name for p in fx.root.iterdir() if p.name.startswith(".out")) == []


def test_interrupted_shapes_generation_and_build_leave_nothing(fx, monkeypatch):
    import vrft.data.sources as sources

    def interrupted(out_dir, *args, **kwargs):
        (Path(out_dir) / "images").mkdir()
        (Path(out_dir) / "images" / "000001.png").write_bytes(b"half")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing PNGs

    monkeypatch.setattr(sources, "generate_shapes_coco", interrupted)
    shapes = fx.root / "gen"
    with pytest.raises(KeyboardInterrupt):
        fx.build(train={"kind": "shapes", "path": str(shapes), "n_images": 8}, shots=1)
    assert sorted(p.name for p in fx.root.iterdir()) == []


def test_a_json_key_given_twice_is_refused(fx):
    src = fx.coco(write_images=False)
    text = (
        Path(src["annotations"])
        .read_text()
        .replace('{"id": 2, "file_name"', '{"id": 2, "id": 3, "file_name"', 1)
    )
    Path(src["annotations"]).write_text(text)
    with pytest.raises(InvalidFileError) as info:
        fx.build(train=src, shots=1)
    _check(info.value, src["annotations"], "an object with keys id, id, file_name", "id", "appears twice")


@pytest.mark.parametrize(
    "case", ["empty file", "duplicate key", "nan override", "deep json", "iscrowd string"]
)
def test_cli_bad_input_is_one_line_exit_1_and_nothing_written(fx, capsys, case):
    src = fx.coco(write_images=False)
    config = fx.root / "exp.yaml"
    body = f"dataset:\n  train: {json.dumps(src)}\n  categories: [cat]\n  shots: 1\n  load_images: false\n"
    overrides: list[str] = []
    if case == "empty file":
        config.write_text("")
    elif case == "duplicate key":
        config.write_text(body + "  shots: 2\n")
    else:
        config.write_text(body)
    if case == "nan override":
        overrides = ["dataset.box_tolerance=.nan"]
    elif case == "deep json":
        Path(src["annotations"]).write_text("[" * 100_000 + "]" * 100_000)
    elif case == "iscrowd string":
        data = fx.tiny()
        data["annotations"][0]["iscrowd"] = "0"
        Path(src["annotations"]).write_text(json.dumps(data))
    assert main(["dataset", "build", str(config), "-o", str(fx.root / "out"), *overrides]) == 1
    err = capsys.readouterr().err
    line = err.split("\r")[-1]  # after any progress bar (tqdm redraws with carriage returns)
    assert line.startswith("vrft dataset: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert fx.leftovers() == []


# -- found at build time, not at evaluation (issue 21) ----------------------------------------------


def test_an_image_too_thin_for_the_model_is_refused_naming_it(fx):
    root, other = fx.root / "folder", fx.root / "other"
    for directory in (root, other):
        for name in ("a", "b"):
            fx.image(directory / "cat" / f"{name}.png")
            fx.image(directory / "dog" / f"{name}.png")
    fx.image(other / "dog" / "thin.png", (600, 2))  # Qwen-VL's processor refuses ratios above 200
    with pytest.raises(ImageFileError) as info:
        fx.build(
            train={"kind": "image_folder", "path": str(root)},
            eval={"kind": "image_folder", "path": str(other)},
            noun="pet",
            shots=1,
        )
    _check(info.value, str(other), "dog/thin.png", "width/height", "more than 200 times its short side")
    assert fx.leftovers() == []


def test_a_coco_image_record_too_thin_is_refused_even_without_reading_images(fx):
    data = fx.tiny()
    data["images"][0].update(width=600, height=2)
    for ann in data["annotations"]:
        if ann["image_id"] == 1:
            ann["bbox"] = [1, 0, 5, 1]
    src = fx.coco(data, write_images=False)
    with pytest.raises(ImageFileError) as info:
        fx.build(train=src, categories=["cat", "dog"], shots=1, load_images=False, verify_images=False)
    _check(info.value, src["annotations"], "images[0] (id 1)", "width/height", "600x2")


NOT_UTF8 = b"caf\xe9.png".decode("utf-8", "surrogateescape")  # a Latin-1 name, as the OS hands it over


def test_a_file_name_that_is_not_utf8_is_named_in_an_image_folder_and_lisa(fx):
    root = fx.root / "folder"
    for name in ("a", "b"):
        fx.image(root / "cat" / f"{name}.png")
        fx.image(root / "dog" / f"{name}.png")
    fx.image(root / "cat" / NOT_UTF8)
    with pytest.raises(InvalidValueError) as info:
        fx.build(train={"kind": "image_folder", "path": str(root)}, noun="pet", shots=1)
    _check(info.value, str(root), "", "file", "file name 'cat/caf\\xe9.png' is not UTF-8")
    lisa = fx.root / "lisa"
    fx.image(lisa / NOT_UTF8)
    (lisa / "a.json").write_text(
        json.dumps({"text": "x", "shapes": [{"label": "t", "points": [[1, 1], [5, 5]]}]})
    )
    with pytest.raises(InvalidValueError) as info:
        fx.build(train={"kind": "lisa", "path": str(lisa)}, shots=1)
    _check(info.value, str(lisa), "", "file", "file name 'caf\\xe9.png' is not UTF-8")
    assert fx.leftovers() == []


def test_coco_annotations_without_area_get_their_box_area_in_the_evaluation_ground_truth(fx):
    data = fx.tiny()
    for ann in data["annotations"]:
        ann.pop("area")
    src = fx.coco(data)
    result = fx.build(train=src, categories=["cat", "dog"], shots=1)
    truth = json.loads((result.output_dir / "eval_ground_truth.json").read_text())
    assert truth["annotations"] and all(
        a["area"] == a["bbox"][2] * a["bbox"][3] for a in truth["annotations"]
    )
