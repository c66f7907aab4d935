"""Classification: image folder, CSV/JSON manifest, datasets dataset, presets and label mapping."""

from __future__ import annotations

import json

import datasets
import pytest

from vrft.config import ConfigError
from vrft.data import (
    DuplicateIdError,
    EmptySourceError,
    InsufficientSamplesError,
    InvalidFileError,
    InvalidValueError,
    MissingFieldError,
    UnknownCategoryError,
    UnsafePathError,
    check_example,
)
from vrft.data.classnames import CLASS_LISTS, normalize_label
from vrft.data.presets import PRESETS


def write_folder(fx, name: str, classes: dict[str, int], ext: str = ".jpg") -> str:
    root = fx.root / name
    for c, (cls, n) in enumerate(sorted(classes.items())):
        for i in range(n):
            fx.image(root / cls / f"{i:03d}{ext}", (40 + i, 30 + c), color=(10 * i, 40 * c, 90))
    return str(root)


def _load(fx, out="out"):
    return datasets.load_from_disk(str(fx.root / out))


def test_image_folder_k_per_class(fx):
    root = write_folder(fx, "flowers", {"rose": 5, "tulip": 4, "daisy": 3})
    (fx.root / "flowers" / "notes.txt").write_text("ignored")
    (fx.root / "flowers" / "rose" / "README").write_text("ignored")
    result = fx.build(train={"kind": "image_folder", "path": root}, shots=2, noun="flower", seed=4)
    ds = _load(fx)
    train = list(ds["train"])
    assert sorted(r["category"] for r in train) == ["daisy", "daisy", "rose", "rose", "tulip", "tulip"]
    assert {r["category"]: r["category_id"] for r in train} == {"daisy": 0, "rose": 1, "tulip": 2}
    for r in train + list(ds["eval"]):
        check_example(r)
        assert r["task"] == "classification" and r["gt_boxes"] == [] and r["noun"] == "flower"
        assert r["image"].size == (r["width"], r["height"])  # sizes read from the files
        assert r["file_name"] == r["image_id"] and r["file_name"].startswith(r["category"] + "/")
    assert len(ds["eval"]) == 12 - 6 and not set(ds["train"]["image_id"]) & set(ds["eval"]["image_id"])
    assert result.manifest["sources"]["train"]["listing"]["images"] == 12


def test_manifest_csv_with_a_preset_maps_names_and_indices(fx):
    for i in range(6):
        fx.image(fx.root / "pets" / f"img{i}.jpg")
    csv = fx.root / "pets" / "labels.csv"
    # file-name style names, display names, and 1-based indices (2 = American Bulldog) all work
    csv.write_text(
        "file,label\nimg0.jpg,american_bulldog\nimg1.jpg,American Bulldog\nimg2.jpg,2\n"
        "img3.jpg,Abyssinian\nimg4.jpg,abyssinian\nimg5.jpg,1\n"
    )
    result = fx.build(
        train={"kind": "manifest", "annotations": str(csv), "label_base": 1},
        preset="pets37",
        categories=["American Bulldog", "abyssinian"],
        shots=2,
    )
    train = list(_load(fx)["train"])
    assert sorted({(r["category"], r["category_id"]) for r in train}) == [
        ("Abyssinian", 0),
        ("American Bulldog", 1),
    ]
    assert {r["noun"] for r in train} == {"pet"}
    assert result.manifest["noun"] == "pet" and result.manifest["prompt_field"] == "species"
    assert result.manifest["splits"]["eval"]["positives"] == {"American Bulldog": 1, "Abyssinian": 1}


def test_manifest_json_and_aliases(fx):
    for i in range(4):
        fx.image(fx.root / "imgs" / f"{i}.png")
    man = fx.root / "m.json"
    man.write_text(
        json.dumps([{"path": f"{i}.png", "y": "globe-flower" if i % 2 else "sweet pea"} for i in range(4)])
    )
    fx.build(
        train={
            "kind": "manifest",
            "annotations": str(man),
            "images": str(fx.root / "imgs"),
            "file_column": "path",
            "label_column": "y",
        },
        preset="flowers102",
        categories=["globe-flower", "sweet pea"],
        shots=1,
        aliases={"sweet pea": ["lathyrus"]},
    )
    rows = {r["category"]: r for r in _load(fx)["train"]}
    assert rows["globe-flower"]["aliases"] == ["globe flower"] and rows["globe-flower"]["category_id"] == 15
    assert rows["sweet pea"]["aliases"] == ["lathyrus"] and rows["sweet pea"]["noun"] == "plant"


def test_hf_dataset_from_disk(fx):
    import io

    from PIL import Image

    def png(color):
        buf = io.BytesIO()
        Image.new("RGB", (20, 10), color).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=["Boeing 717", "A380"])}
    )
    ds = datasets.Dataset.from_dict(
        {"img": [png((i * 30, 0, 0)) for i in range(6)], "label": [0, 1, 0, 1, 0, 1]}, features=features
    )
    datasets.DatasetDict({"test": ds}).save_to_disk(str(fx.root / "hf"))
    result = fx.build(
        train={"kind": "hf", "path": str(fx.root / "hf"), "image_column": "img"},
        preset="aircraft100",
        shots=2,
        categories=["A380", "Boeing 717"],
    )
    out = _load(fx)
    assert sorted(out["train"]["category"]) == ["A380", "A380", "Boeing 717", "Boeing 717"]
    assert out["train"][0]["image"].size == (20, 10) and out["train"][0]["noun"] == "aircraft"
    assert {r["category_id"] for r in out["train"]} == {
        CLASS_LISTS["fgvc_aircraft"].classes.index("A380"),
        CLASS_LISTS["fgvc_aircraft"].classes.index("Boeing 717"),
    }
    assert len(out["eval"]) == 2
    assert result.manifest["sources"]["train"]["split"] == "test"


def test_hf_missing_dataset_or_column(fx):
    with pytest.raises(InvalidFileError, match="cannot load as a datasets dataset"):
        fx.build(train={"kind": "hf", "path": str(fx.root / "nope")}, noun="x")
    ds = datasets.Dataset.from_dict({"text": ["a"], "label": [0]})
    ds.save_to_disk(str(fx.root / "hf"))
    with pytest.raises(MissingFieldError, match="field 'image': no such column"):
        fx.build(train={"kind": "hf", "path": str(fx.root / "hf")}, noun="x")
    assert fx.leftovers() == []


def test_shapes_classification_source(fx):
    result = fx.build(
        train={
            "kind": "shapes_classification",
            "path": str(fx.root / "shp"),
            "n_images": 5,
            "image_size": [48, 48],
        },
        shots=2,
        noun="shape",
    )
    out = _load(fx)
    assert len(out["train"]) == 12 and len(out["eval"]) == 18
    assert set(out["train"]["category"]) == {"circle", "square", "triangle", "star", "hexagon", "diamond"}
    assert result.manifest["sources"]["train"]["kind"] == "shapes_classification"


def test_noun_is_required_without_a_preset(fx):
    root = write_folder(fx, "f", {"a": 2, "b": 2})
    with pytest.raises(ConfigError, match="noun: classification needs the prompt noun"):
        fx.build(train={"kind": "image_folder", "path": root}, shots=1)


def test_bad_classification_inputs(fx):
    for i in range(3):
        fx.image(fx.root / "p" / f"{i}.jpg")
    csv = fx.root / "p" / "l.csv"
    cases = [
        (
            "file,label\n0.jpg,not_a_pet\n",
            UnknownCategoryError,
            "row 2: field 'label': label 'not_a_pet' is not one",
        ),
        ("file,label\n0.jpg,99\n", UnknownCategoryError, "row 2: field 'label': label 99 is outside 0..36"),
        ("file,cls\n0.jpg,pug\n", MissingFieldError, "header: field 'label': missing column"),
        ("file,label\n../../etc/passwd,pug\n", UnsafePathError, "row 2: field 'file'"),
        (
            "file,label\n0.jpg,pug\n0.jpg,pug\n",
            DuplicateIdError,
            "row 3: field 'file': '0.jpg' is also row 2",
        ),
        ("file,label\n0.jpg,\n", InvalidValueError, "row 2: field 'label': empty label"),
        ("file,label\n", EmptySourceError, "no rows"),
    ]
    for text, error, where in cases:
        csv.write_text(text)
        with pytest.raises(error) as info:
            fx.build(train={"kind": "manifest", "annotations": str(csv)}, preset="pets37", shots=1)
        assert str(info.value).startswith(f"{csv}: ") and where in str(info.value), str(info.value)
    csv.write_text("file,label\n0.jpg,pug\n1.jpg,pug\n2.jpg,pug\n")
    with pytest.raises(
        InsufficientSamplesError, match="class 'Abyssinian': field 'shots': asked for 1 images, only 0"
    ):
        fx.build(train={"kind": "manifest", "annotations": str(csv)}, preset="pets37", shots=1)
    (fx.root / "p" / "l.json").write_text('[{"file": "0.jpg", "label": 3}]')
    with pytest.raises(InvalidValueError, match="integer label 3 needs a class list"):
        fx.build(train={"kind": "manifest", "annotations": str(fx.root / "p" / "l.json")}, noun="x", shots=1)
    (fx.root / "empty").mkdir()
    with pytest.raises(EmptySourceError, match="no images"):
        fx.build(train={"kind": "image_folder", "path": str(fx.root / "empty")}, noun="x")
    assert fx.leftovers() == []


def test_class_lists_are_complete_and_unambiguous():
    sizes = {"flowers102": 102, "pets37": 37, "fgvc_aircraft": 100, "cars196": 196}
    for key, size in sizes.items():
        cl = CLASS_LISTS[key]
        assert len(cl.classes) == size and len({normalize_label(c) for c in cl.classes}) == size
    assert CLASS_LISTS["pets37"].classes[:3] == (
        "Abyssinian",
        "American Bulldog",
        "American Pit Bull Terrier",
    )
    assert (
        CLASS_LISTS["flowers102"].classes[0] == "pink primrose"
        and CLASS_LISTS["flowers102"].classes[-1] == "blackberry lily"
    )
    assert CLASS_LISTS["cars196"].classes[0] == "AM General Hummer SUV 2000"
    assert [PRESETS[p].noun for p in ("flowers102", "pets37", "aircraft100", "cars196")] == [
        "plant",
        "pet",
        "aircraft",
        "car",
    ]


def test_detection_only_options_are_rejected_for_classification(fx):
    root = write_folder(fx, "f", {"a": 2, "b": 2})
    for extra, key in (
        ({"negative_ratio": 0.5}, "negative_ratio"),
        ({"mode": "ovd"}, "mode"),
        ({"eval_categories": ["a"]}, "eval_categories"),
        ({"lvis_frequencies": ["r"]}, "lvis_frequencies"),
    ):
        with pytest.raises(ConfigError, match=f"{key}: only applies to detection sources"):
            fx.build(train={"kind": "image_folder", "path": root}, noun="x", shots=1, **extra)
    with pytest.raises(ConfigError, match="aliases.c: not a category/class"):
        fx.build(train={"kind": "image_folder", "path": root}, noun="x", shots=1, aliases={"c": ["see"]})
    assert fx.leftovers() == []
