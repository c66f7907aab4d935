"""The synthetic shapes source: deterministic, exact boxes, read through the ordinary readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vrft.data import generate_shapes_classification, generate_shapes_coco
from vrft.data.shapes import COLOUR_NAMES, COLOURS, SHAPES

pytestmark = pytest.mark.timeout(120)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_coco_generator_is_deterministic_and_boxes_are_exact(tmp_path):
    a = generate_shapes_coco(tmp_path / "a", n_images=24, seed=5, image_size=(96, 64))
    generate_shapes_coco(tmp_path / "b", n_images=24, seed=5, image_size=(96, 64))
    generate_shapes_coco(tmp_path / "c", n_images=24, seed=6, image_size=(96, 64))
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")
    data = json.loads(a.read_text())
    assert [c["name"] for c in data["categories"]] == list(SHAPES)
    per_image: dict[int, list] = {}
    for ann in data["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann)
    assert max(len(v) for v in per_image.values()) >= 2  # several objects per image
    for cat in range(1, len(SHAPES) + 1):  # every category is absent from some image
        assert any(all(a["category_id"] != cat for a in per_image.get(i, [])) for i in range(1, 25))
    for image in data["images"]:
        pixels = np.asarray(Image.open(tmp_path / "a" / "images" / image["file_name"]).convert("RGB")).astype(
            int
        )
        assert pixels.shape == (64, 96, 3)
        for ann in per_image.get(image["id"], []):
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 96 and y + h <= 64
            inside = pixels[y : y + h, x : x + w]
            # the shape's colour (the palette colour filling most of the box) touches all four sides
            counts = [(np.abs(inside - np.array(c)).sum(axis=2) == 0).sum() for c in COLOURS]
            matches = np.abs(inside - np.array(COLOURS[int(np.argmax(counts))])).sum(axis=2) == 0
            assert matches[0].any() and matches[-1].any() and matches[:, 0].any() and matches[:, -1].any()


def test_classification_generator_writes_an_image_folder(tmp_path):
    root = generate_shapes_classification(
        tmp_path / "cls", n_per_class=3, seed=0, image_size=(48, 40), classes=["circle", "star"]
    )
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) == [
        f"{c}/{c}_{i:04d}.png" for c in ("circle", "star") for i in range(3)
    ]
    assert Image.open(root / "star" / "star_0001.png").size == (48, 40)


def test_colour_labels_name_the_colour_of_one_big_shape(tmp_path):
    root = generate_shapes_classification(
        tmp_path / "a", n_per_class=3, seed=2, image_size=(64, 64), label="colour", shape_size=(0.3, 0.45)
    )
    generate_shapes_classification(
        tmp_path / "b", n_per_class=3, seed=2, image_size=(64, 64), label="colour", shape_size=(0.3, 0.45)
    )
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert sorted(p.name for p in root.iterdir()) == sorted(COLOUR_NAMES)
    for name, colour in zip(COLOUR_NAMES, COLOURS, strict=True):
        for path in sorted((root / name).glob("*.png")):
            pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
            share = (np.abs(pixels - np.array(colour)).sum(axis=2) == 0).mean()
            # a radius of at least 0.3 of the side: even a triangle or a star covers over 9 % of the image
            assert share > 0.09, (path, share)


def test_default_sizes_keep_the_shape_generator_unchanged(tmp_path):
    plain = generate_shapes_classification(tmp_path / "a", n_per_class=2, seed=0, image_size=(48, 48))
    explicit = generate_shapes_classification(
        tmp_path / "b",
        n_per_class=2,
        seed=0,
        image_size=(48, 48),
        classes=SHAPES,
        label="shape",
        shape_size=(0.08, 0.22),
    )
    assert _files(plain) == _files(explicit) and sorted(p.name for p in plain.iterdir()) == sorted(SHAPES)


def test_colour_and_size_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="label must be"):
        generate_shapes_classification(tmp_path, 1, 0, label="texture")
    with pytest.raises(ValueError, match="subset of"):
        generate_shapes_classification(tmp_path, 1, 0, label="colour", classes=["circle"])
    with pytest.raises(ValueError, match="shape_size"):
        generate_shapes_classification(tmp_path, 1, 0, shape_size=(0.3, 0.6))


def test_colour_source_from_config(fx):
    cfg = {
        "kind": "shapes_classification",
        "label": "colour",
        "n_images": 2,
        "image_size": [48, 48],
        "shape_size": [0.3, 0.45],
    }
    result = fx.build(train=cfg, shots=1, noun="coloured shape")
    assert result.num_rows["train"] == len(COLOUR_NAMES)
    from vrft.config import ConfigError

    with pytest.raises(ConfigError, match="train.shape_size"):
        fx.build("bad", train={**cfg, "shape_size": [0.5, 0.3]})


def test_generator_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="between 32 and 4096"):
        generate_shapes_coco(tmp_path, 2, 0, image_size=(16, 16))
    with pytest.raises(ValueError, match="subset"):
        generate_shapes_coco(tmp_path, 2, 0, categories=["blob"])


def test_shapes_source_generates_once_and_reuses(fx):
    cfg = {"kind": "shapes", "path": str(fx.root / "gen"), "n_images": 40}
    first = fx.build("a", train=cfg, shots=2)
    stamp = (fx.root / "gen" / "shapes.json").stat().st_mtime_ns
    second = fx.build("b", train=cfg, shots=2)
    assert (fx.root / "gen" / "shapes.json").stat().st_mtime_ns == stamp
    assert first.manifest["files"] == second.manifest["files"]
    fx.build("c", train={**cfg, "n_images": 41}, shots=2)  # other parameters: regenerated in place
    assert len(json.loads((fx.root / "gen" / "annotations.json").read_text())["images"]) == 41


def test_shapes_source_never_overwrites_foreign_data(fx):
    (fx.root / "mine").mkdir()
    (fx.root / "mine" / "thesis.tex").write_text("precious")
    from vrft.data import InvalidFileError

    with pytest.raises(InvalidFileError, match="not a generated shapes dataset"):
        fx.build(train={"kind": "shapes", "path": str(fx.root / "mine")})
    assert (fx.root / "mine" / "thesis.tex").read_text() == "precious"


def test_default_config_builds_from_the_cache(fx):
    result = fx.build()
    assert result.num_rows["train"] == 6 * 4
    assert (fx.root / "cache").is_dir() and len(list((fx.root / "cache").iterdir())) == 1
