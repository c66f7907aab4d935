"""LVIS: federated negatives, not-exhaustive categories, coco_url file names, synonyms, frequencies."""

from __future__ import annotations

import json

import datasets
import pytest

from vrft.data import DanglingReferenceError, InvalidValueError, MissingFieldError, UnknownCategoryError

W, H = 64, 48


def lvis_data() -> dict:
    """horse_buggy in images 1-3 (3: not exhaustive); die in 4-5; apple in 6.

    horse_buggy is verified absent (neg_category_ids) in 7 and 8; image 9 lists it as negative AND
    not exhaustive (contradictory, never a negative); images 10-12 say nothing about it (unknown).
    """
    neg = {7: [1], 8: [1], 9: [1], 10: [2], 11: [2, 3]}
    not_exhaustive = {3: [1], 9: [1]}
    images = [
        {
            "id": i,
            "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg",
            "width": W,
            "height": H,
            "neg_category_ids": neg.get(i, []),
            "not_exhaustive_category_ids": not_exhaustive.get(i, []),
        }
        for i in range(1, 13)
    ]
    placed = [(1, 1), (1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 3)]
    anns = [
        {"id": n + 1, "image_id": img, "category_id": cat, "bbox": [2 + n, 3, 20, 15], "area": 300.0}
        for n, (img, cat) in enumerate(placed)
    ]
    cats = [
        {"id": 1, "name": "horse_buggy", "synonyms": ["horse_buggy", "horse buggy"], "frequency": "r"},
        {"id": 2, "name": "die", "synonyms": ["die", "dice"], "frequency": "r"},
        {"id": 3, "name": "apple", "synonyms": ["apple"], "frequency": "f"},
    ]
    return {"images": images, "annotations": anns, "categories": cats}


def write_lvis(fx, data=None, name="lvis.json") -> dict:
    data = lvis_data() if data is None else data
    root = fx.root / "coco"
    for im in data["images"]:
        fx.image(root / "train2017" / f"{im['id']:012d}.jpg", (W, H))
    path = fx.root / name
    path.write_text(json.dumps(data))
    return {"kind": "lvis", "annotations": str(path), "images": str(root)}


def _load(fx, out="out"):
    return datasets.load_from_disk(str(fx.root / out))


def test_negatives_only_from_verified_absent_and_never_not_exhaustive(fx):
    src = write_lvis(fx)
    for seed in range(4):
        result = fx.build(
            f"out{seed}",
            train=src,
            categories=["horse_buggy"],
            shots=2,
            negative_ratio=5.0,
            on_insufficient="use_all",
            seed=seed,
        )
        train = _load(fx, f"out{seed}")["train"]
        negatives = sorted(r["image_id"] for r in train if not r["gt_boxes"])
        assert negatives == ["7", "8"]  # never 9 (not exhaustive) nor 10-12 (unknown)
        assert result.manifest["splits"]["train"]["shortfalls"]["horse_buggy (negatives)"] == {
            "requested": 10,
            "available": 2,
        }


def test_training_positives_skip_not_exhaustive_images_unless_asked(fx):
    src = write_lvis(fx)
    result = fx.build("a", train=src, categories=["horse_buggy"], shots=2)
    train = _load(fx, "a")["train"]
    assert sorted(r["image_id"] for r in train) == ["1", "2"]
    assert [len(r["gt_boxes"]) for r in train] == [2, 1]  # image 1 has two horse buggies
    # the not-exhaustive image 3 is still evaluated (the LVIS evaluator ignores its unmatched boxes)
    evaluation = _load(fx, "a")["eval"]
    assert ("3", 1) in [(r["image_id"], len(r["gt_boxes"])) for r in evaluation]
    assert result.manifest["splits"]["eval"]["negatives"] == {"horse_buggy": 2}
    with pytest.raises(Exception, match="only 2 available .exhaustively annotated."):
        fx.build("b", train=src, categories=["horse_buggy"], shots=3)
    fx.build("c", train=src, categories=["horse_buggy"], shots=3, lvis_exhaustive_only=False)
    assert sorted(r["image_id"] for r in _load(fx, "c")["train"]) == ["1", "2", "3"]


def test_eval_has_federated_negative_rows(fx):
    src = write_lvis(fx)
    fx.build(train=src, categories=["die"], shots=1, seed=0)
    evaluation = _load(fx)["eval"]
    rows = sorted((r["image_id"], len(r["gt_boxes"])) for r in evaluation)
    # the other die image, plus the verified-absent images 10 and 11 as empty rows
    assert len(rows) == 3 and ("10", 0) in rows and ("11", 0) in rows


def test_file_names_from_coco_url_and_synonyms_as_aliases(fx):
    src = write_lvis(fx)
    fx.build(train=src, categories=["horse_buggy", "die"], shots=1)
    row = next(r for r in _load(fx)["train"] if r["category"] == "horse_buggy")
    assert row["file_name"].startswith("train2017/") and row["file_name"].endswith(".jpg")
    assert row["aliases"] == ["horse buggy"]
    assert row["image"].size == (W, H)


def test_frequency_selects_categories(fx):
    src = write_lvis(fx)
    result = fx.build(train=src, lvis_frequencies=["r"], shots=1)
    assert list(result.manifest["splits"]["train"]["positives"]) == ["horse_buggy", "die"]


def test_preset_names_missing_from_the_file(fx):
    src = write_lvis(fx)
    with pytest.raises(UnknownCategoryError) as info:
        fx.build(train=src, preset="lvis_6_rare", shots=1)
    # horse_buggy and die are in the file; kitchen_table (categories[2]) is the first that is not
    assert str(info.value).startswith(
        f"{src['annotations']}: categories[2] of preset 'lvis_6_rare': field 'name': "
        "'kitchen_table' matches no category"
    )
    assert fx.leftovers() == []


@pytest.mark.parametrize(
    "mutate, error, where",
    [
        (
            lambda d: d["images"][2].pop("neg_category_ids"),
            MissingFieldError,
            "images[2] (id 3): field 'neg_category_ids'",
        ),
        (
            lambda d: d["images"][2].update(not_exhaustive_category_ids=[77]),
            DanglingReferenceError,
            "images[2] (id 3): field 'not_exhaustive_category_ids': no category with id 77",
        ),
        (
            lambda d: d["categories"][1].update(frequency="x"),
            InvalidValueError,
            "categories[1] (id 2): field 'frequency'",
        ),
        (lambda d: d["images"][0].pop("coco_url"), MissingFieldError, "images[0] (id 1): field 'coco_url'"),
    ],
)
def test_malformed_lvis(fx, mutate, error, where):
    data = lvis_data()
    mutate(data)
    path = fx.root / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(error) as info:
        fx.build(train={"kind": "lvis", "annotations": str(path), "images": str(fx.root / "coco")}, shots=1)
    assert str(info.value).startswith(f"{path}: {where}")
    assert fx.leftovers() == []
