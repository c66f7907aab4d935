"""The authors' lists shipped as data (issue 22, points 2, 4, 7): class names, fixed test lists, the
LISA box of the first shape. Small data made here; the shipped files are checked for shape only."""

from __future__ import annotations

import csv
import json

import datasets
import pytest
import torch

from vrft.config import ConfigError, from_dict
from vrft.data import DatasetConfig, InvalidFileError, InvalidValueError
from vrft.data.classnames import AUTHORS_CLASS_FILES, CLASS_LISTS, authors_class_list
from vrft.data.test_lists import main as convert_main
from vrft.data.test_lists import read_authors_pth, write_test_list
from vrft.paper_files import resolve_path, shipped

pytestmark = pytest.mark.timeout(60)

SHIPPED_TEST_LISTS = {  # name -> (images, classes): the counts the paper's Table 2 was computed on
    "oxford_flowers": (2463, 102),  # the CoOp split, not the standard 6,149
    "pets": (3669, 37),
    "fgvc_aircraft": (3333, 100),
    "stanford_cars": (8041, 196),
}


def test_the_authors_class_names_are_the_names_and_ours_the_aliases() -> None:
    for key in AUTHORS_CLASS_FILES:
        theirs, ours = authors_class_list(key), CLASS_LISTS[key]
        assert len(theirs.classes) == len(ours.classes) == len(set(theirs.classes))
        for name, mine in zip(theirs.classes, ours.classes, strict=True):
            assert name == mine or mine in theirs.aliases[name]
    cars = authors_class_list("cars196")
    assert cars.classes[0] == "2000 AM General Hummer SUV"  # year first: all 196 differ from ours
    assert sum(a != b for a, b in zip(cars.classes, CLASS_LISTS["cars196"].classes)) == 196
    assert "colts foot" in authors_class_list("flowers102").classes


def test_a_dataset_with_the_authors_class_names(fx) -> None:
    for i in range(4):
        fx.image(fx.root / "cars" / f"{i}.jpg")
    (fx.root / "cars" / "labels.csv").write_text("file,label\n0.jpg,0\n1.jpg,0\n2.jpg,1\n3.jpg,1\n")
    train = {"kind": "manifest", "annotations": str(fx.root / "cars" / "labels.csv")}
    common = dict(train=train, preset="cars196", shots=1, categories=["AM General Hummer SUV 2000"])
    fx.build(**common, class_names="authors")
    rows = list(datasets.load_from_disk(str(fx.root / "out"))["train"])
    # categories written in vrft's wording still select the class; rows carry the authors' wording
    assert [(r["category"], r["aliases"]) for r in rows] == [
        ("2000 AM General Hummer SUV", ["AM General Hummer SUV 2000"])
    ]
    fx.build(**common, out="ours")
    (ours,) = list(datasets.load_from_disk(str(fx.root / "ours"))["train"])
    assert ours["category"] == "AM General Hummer SUV 2000" and ours["aliases"] == []
    with pytest.raises(ConfigError, match="class_names: 'authors' needs one of the paper's"):
        from_dict(DatasetConfig, {"train": train, "noun": "car", "class_names": "authors"})


def _authors_pth(path, entries) -> None:
    """A list in the authors' .pth layout: {absolute path: {label, pred_logits, pred_class}}."""
    torch.save(
        [
            {
                p: {
                    "label": torch.tensor(label),
                    "pred_logits": torch.zeros(10),
                    "pred_class": torch.arange(10),
                }
            }
            for p, label in entries
        ],
        path,
    )


def test_the_authors_pth_test_list_becomes_a_manifest(fx, tmp_path_factory) -> None:
    tmp_path = tmp_path_factory.mktemp("pth")
    root = fx.root / "stanford_cars"
    for i in (1, 2, 3):
        fx.image(root / "cars_test" / f"{i:05d}.jpg")
    fx.image(root / "cars_test" / "00004.jpg")  # in the folder, not in the list: never evaluated
    pth = tmp_path / "stanford_cars.pth"
    _authors_pth(
        pth,
        [
            (f"/mnt/x/data/stanford_cars/cars_test/{i:05d}.jpg", label)
            for i, label in ((1, 2), (2, 0), (3, 2))
        ],
    )
    assert read_authors_pth(pth) == [
        ("cars_test/00001.jpg", 2),
        ("cars_test/00002.jpg", 0),
        ("cars_test/00003.jpg", 2),
    ]
    listed = tmp_path / "list.csv"
    assert convert_main([str(pth), str(listed)]) == 0
    train = fx.root / "train" / "train.csv"
    for i in range(3):
        fx.image(fx.root / "train" / f"{i}.jpg")
    train.write_text("file,label\n0.jpg,0\n1.jpg,1\n2.jpg,2\n")
    result = fx.build(
        train={"kind": "manifest", "annotations": str(train)},
        eval={"kind": "manifest", "annotations": str(listed), "images": str(root)},
        preset="cars196",
        categories=["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"],
        shots=1,
        class_names="authors",
    )
    evaluation = list(datasets.load_from_disk(str(fx.root / "out"))["eval"])
    assert sorted((r["file_name"], r["category"]) for r in evaluation) == [
        ("cars_test/00001.jpg", "2012 Acura TL Sedan"),
        ("cars_test/00002.jpg", "2000 AM General Hummer SUV"),
        ("cars_test/00003.jpg", "2012 Acura TL Sedan"),
    ]
    assert result.manifest["sources"]["eval"]["files"]["list.csv"]["sha256"]


def test_bad_pth_lists_are_one_line_errors(tmp_path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(InvalidFileError, match="junk.pth: .*not a torch-saved list"):
        read_authors_pth(tmp_path / "junk.pth")
    torch.save([{"/a/b.jpg": {"label": torch.tensor([1, 2])}}], tmp_path / "vector.pth")
    with pytest.raises(InvalidValueError, match=r"vector.pth: \[0\]: field 'label'"):
        read_authors_pth(tmp_path / "vector.pth")
    write_test_list([("a/b.jpg", 3)], tmp_path / "ok.csv")
    assert (tmp_path / "ok.csv").read_text() == "file,label\na/b.jpg,3\n"


def test_shipped_test_lists_have_the_papers_sizes() -> None:
    assert {f"test_lists/{n}.csv" for n in SHIPPED_TEST_LISTS} <= set(shipped())
    for name, (images, classes) in SHIPPED_TEST_LISTS.items():
        with open(resolve_path(f"paper:test_lists/{name}.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len({r["file"] for r in rows}) == images, name
        assert {int(r["label"]) for r in rows} == set(range(classes)), name


def test_lisa_box_of_the_first_shape_whatever_its_label(tmp_path) -> None:
    from PIL import Image

    from vrft.data.lisa import load_lisa

    shapes = [
        {"label": "ignore", "points": [[0, 0], [20, 0], [20, 10]]},
        {"label": "target", "points": [[30, 20], [50, 20], [50, 40]]},
    ]
    (tmp_path / "a.json").write_text(json.dumps({"text": ["the thing"], "shapes": shapes}))
    Image.new("RGB", (64, 48)).save(tmp_path / "a.jpg")
    ours = load_lisa(tmp_path, name="x", tolerance=1.0, show_progress=False)
    theirs = load_lisa(tmp_path, name="x", tolerance=1.0, show_progress=False, box_from="first_shape")
    assert ours.items[0].box == [30.0, 20.0, 50.0, 40.0]  # vrft drops the ignore polygon
    assert theirs.items[0].box == [0.0, 0.0, 20.0, 10.0]  # the authors' gen_box_ann.py: shapes[:1]
