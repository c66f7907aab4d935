"""COCO-format detection: the k-per-category rule, negatives, OVD, the eval split, determinism."""

from __future__ import annotations

import json

import datasets
import pytest

from vrft.config import ConfigError, from_dict, load_config
from vrft.data import DatasetConfig, build_dataset, check_example, resolve_plan
from vrft.io import verify_manifest


def _rows(out, split):
    return [r for r in datasets.load_from_disk(str(out))[split]]


def _boxes_of(data, image_id, cat_id):
    return sorted(
        [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
        for a in data["annotations"]
        if a["image_id"] == image_id and a["category_id"] == cat_id and not a["iscrowd"]
    )


def test_k_shot_keeps_every_instance_and_writes_a_valid_dataset(fx):
    src = fx.coco()
    result = fx.build(train=src, categories=["cat", "dog"], shots=2, seed=3)
    out = fx.root / "out"
    data = fx.tiny()
    train = _rows(out, "train")
    assert [r["category"] for r in train] == ["cat", "cat", "dog", "dog"]
    for row in train:
        check_example(row)
        cat_id = {"cat": 1, "dog": 2}[row["category"]]
        assert row["category_id"] == cat_id
        assert row["gt_boxes"] == _boxes_of(data, int(row["image_id"]), cat_id)  # ALL instances, xyxy pixels
        assert (row["width"], row["height"]) == (64, 48) and row["image"].size == (64, 48)
        assert row["task"] == "detection" and row["source"] == "coco" and row["noun"] == ""
    # image 7 only has a crowd region of "cat": it is never a cat sample
    assert all(not (r["image_id"] == "7" and r["category"] == "cat") for r in train)
    manifest = verify_manifest(out)
    assert manifest == result.manifest
    assert manifest["splits"]["train"]["positives"] == {"cat": 2, "dog": 2}
    assert (
        manifest["sources"]["train"]["files"]["instances.json"]["size"]
        == (fx.root / "coco/instances.json").stat().st_size
    )
    assert result.num_rows["train"] == 4


def test_image_with_three_cats_keeps_all_three(fx):
    fx.build(train=fx.coco(), categories=["cat"], shots=5, seed=0)
    rows = {r["image_id"]: r for r in _rows(fx.root / "out", "train")}
    full = [
        r for r in _rows(fx.root / "out", "train") + _rows(fx.root / "out", "eval") if r["image_id"] == "1"
    ]
    assert len(full) == 1
    assert len(full[0]["gt_boxes"]) == 3
    assert full[0]["gt_boxes"] == [[1.0, 1.0, 11.0, 11.0], [20.0, 5.0, 32.0, 13.0], [40.0, 20.0, 60.0, 40.0]]
    assert len(rows) == 5


def test_eval_split_never_overlaps_train_and_keeps_every_present_category(fx):
    fx.build(train=fx.coco(), categories=["cat", "dog"], shots=3, seed=1)
    train = _rows(fx.root / "out", "train")
    evaluation = _rows(fx.root / "out", "eval")
    assert not {r["image_id"] for r in train} & {r["image_id"] for r in evaluation}
    # every eval image lists every category present in it (complete ground truth per image)
    data = fx.tiny()
    for image_id in {r["image_id"] for r in evaluation}:
        present = {
            a["category_id"]
            for a in data["annotations"]
            if a["image_id"] == int(image_id) and a["category_id"] in (1, 2) and not a["iscrowd"]
        }
        rows = [r for r in evaluation if r["image_id"] == image_id]
        assert {r["category_id"] for r in rows} == present
    # together they cover the 9 images holding a cat or a dog (image 7: its dog only, the cat is a crowd)
    assert {r["image_id"] for r in train} | {r["image_id"] for r in evaluation} == {
        str(i) for i in range(1, 10)
    }
    assert [r["category"] for r in evaluation if r["image_id"] == "7"] in (["dog"], [])


def test_eval_from_a_separate_source_drops_images_used_for_training(fx):
    src = fx.coco()
    # A second annotation file over the SAME image directory: its images are the train images.
    data = fx.tiny()
    other = fx.root / "coco" / "val.json"
    other.write_text(json.dumps(data))
    fx.build(train=src, eval={**src, "annotations": str(other)}, categories=["dog"], shots=2, seed=0)
    train_ids = {r["image_id"] for r in _rows(fx.root / "out", "train")}
    eval_ids = {r["image_id"] for r in _rows(fx.root / "out", "eval")}
    # A separate eval source is a val set: every image but the train ones is scored (4 hold a dog).
    assert len(train_ids) == 2 and not train_ids & eval_ids and len(eval_ids) == 8
    dog_rows = [r for r in _rows(fx.root / "out", "eval") if r["gt_boxes"]]
    assert len(dog_rows) == 4
    manifest = json.loads((fx.root / "out/manifest.json").read_text())
    assert manifest["splits"]["eval"]["excluded_train_images"] == 2
    assert manifest["sources"]["eval"]["files"]["val.json"]["sha256"]


def test_eval_cap_per_category(fx):
    fx.build(train=fx.coco(), categories=["cat", "dog"], shots=1, eval_max_per_category=2, seed=0)
    manifest = json.loads((fx.root / "out/manifest.json").read_text())
    # 2 chosen per category, but a chosen image contributes a row for each category it holds
    assert len(manifest["splits"]["eval"]["image_ids"]) <= 4
    assert all(n >= 2 for n in manifest["splits"]["eval"]["positives"].values())


def test_same_seed_gives_byte_identical_output_and_another_seed_another_selection(fx):
    cfg = dict(
        train={"kind": "shapes", "path": str(fx.root / "shapes"), "n_images": 48},
        shots=3,
        negative_ratio=0.5,
        seed=7,
    )
    a = fx.build("a", **cfg)
    b = fx.build("b", **cfg)
    c = fx.build("c", **{**cfg, "seed": 8})
    assert (fx.root / "a/manifest.json").read_bytes() == (fx.root / "b/manifest.json").read_bytes()
    assert a.manifest["files"] == b.manifest["files"]  # every output file has the same SHA-256
    assert a.manifest["splits"]["train"]["image_ids"] != c.manifest["splits"]["train"]["image_ids"]
    assert a.manifest["seed"] == 7 and c.manifest["seed"] == 8
    assert a.manifest["config"]["train"]["kind"] == "shapes"


def test_selection_of_a_category_does_not_depend_on_the_other_categories(fx):
    src = fx.coco()
    fx.build("one", train=src, categories=["dog"], shots=3, seed=5)
    fx.build("two", train=src, categories=["cat", "dog"], shots=3, seed=5)
    dogs = [
        [r["image_id"] for r in _rows(fx.root / name, "train") if r["category"] == "dog"]
        for name in ("one", "two")
    ]
    assert dogs[0] == dogs[1]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_any_positive_k(fx, k):
    result = fx.build(train={"kind": "shapes", "path": str(fx.root / "shapes"), "n_images": 64}, shots=k)
    assert set(result.manifest["splits"]["train"]["positives"].values()) == {k}


def test_negatives_are_images_without_the_category(fx):
    result = fx.build(train=fx.coco(), categories=["cat", "dog"], shots=2, negative_ratio=1.0, seed=2)
    data = fx.tiny()
    rows = _rows(fx.root / "out", "train")
    negatives = [r for r in rows if not r["gt_boxes"]]
    assert len(negatives) == 4
    for r in negatives:
        cat_id = {"cat": 1, "dog": 2}[r["category"]]
        assert not any(
            a["image_id"] == int(r["image_id"]) and a["category_id"] == cat_id for a in data["annotations"]
        )
        check_example(r)
    assert result.manifest["splits"]["train"]["negatives"] == {"cat": 2, "dog": 2}


def test_tolerance_clips_boxes_just_outside_the_image(fx):
    data = fx.tiny()
    data["annotations"][0]["bbox"] = [-0.4, 0, 64.6, 10]  # 0.4 px out on both sides
    fx.build(train=fx.coco(data), categories=["cat"], eval_categories=["dog"], shots=6)
    row = next(r for r in _rows(fx.root / "out", "train") if r["image_id"] == "1")
    assert row["gt_boxes"][0] == [0.0, 0.0, 64.0, 10.0]


def test_ovd_samples_annotations_from_base_categories_only(fx):
    src = fx.coco()
    result = fx.build(
        train=src, mode="ovd", categories=["cat", "dog"], eval_categories=["bus"], ovd_annotations=5, seed=0
    )
    data = fx.tiny()
    train = _rows(fx.root / "out", "train")
    assert {r["category"] for r in train} <= {"cat", "dog"}
    ovd = result.manifest["splits"]["train"]["ovd"]
    assert ovd["annotations_requested"] == 5 and ovd["annotations_sampled"] == 5
    assert ovd["samples"] == len(train) <= 5
    for row in train:  # each (image, category) sample holds all instances, not just the sampled one
        assert row["gt_boxes"] == _boxes_of(data, int(row["image_id"]), row["category_id"])
    assert [r["category"] for r in _rows(fx.root / "out", "eval")] == ["bus"]


def test_ovd_with_too_few_annotations(fx):
    from vrft.data import InsufficientSamplesError

    with pytest.raises(InsufficientSamplesError, match="ovd_annotations"):
        fx.build(train=fx.coco(), mode="ovd", categories=["bus"], eval_categories=["cat"], ovd_annotations=2)
    result = fx.build(
        train=fx.coco(),
        mode="ovd",
        categories=["bus"],
        eval_categories=["cat"],
        ovd_annotations=2,
        on_insufficient="use_all",
    )
    assert result.manifest["splits"]["train"]["shortfalls"] == {
        "ovd_annotations": {"requested": 2, "available": 1}
    }


def test_use_all_takes_every_candidate_and_records_the_shortfall(fx):
    result = fx.build(
        train=fx.coco(),
        categories=["bus", "cat"],
        shots=4,
        on_insufficient="use_all",
        eval_categories=["cat"],
    )
    assert result.manifest["splits"]["train"]["positives"] == {"bus": 1, "cat": 4}
    assert result.manifest["splits"]["train"]["shortfalls"] == {"bus": {"requested": 4, "available": 1}}


def test_presets_fill_empty_fields_and_explicit_values_win():
    plan = resolve_plan(from_dict(DatasetConfig, {"preset": "coco_ovd", "train": {"kind": "shapes"}}))
    assert plan.mode == "ovd" and len(plan.categories) == 65 and len(plan.eval_categories) == 15
    assert "cat" in plan.eval_categories and "cat" not in plan.categories
    plan = resolve_plan(
        from_dict(DatasetConfig, {"preset": "coco_8", "categories": ["dog"], "train": {"kind": "shapes"}})
    )
    assert plan.categories == ["dog"] and plan.eval_categories == ["dog"]
    plan = resolve_plan(from_dict(DatasetConfig, {"preset": "coco_8", "train": {"kind": "shapes"}}))
    assert plan.categories == ["bus", "train", "fire hydrant", "stop sign", "cat", "dog", "bed", "toilet"]
    with pytest.raises(ConfigError, match="unknown preset 'coco_9'"):
        from_dict(DatasetConfig, {"preset": "coco_9"})
    with pytest.raises(ConfigError, match="classification setting"):
        from_dict(DatasetConfig, {"preset": "pets37", "train": {"kind": "shapes"}})


def test_load_config_reads_the_dataset_section(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "dataset:\n  preset: coco_8\n  shots: 2\n  train: {kind: coco, annotations: a.json, images: im}\n"
    )
    cfg = load_config(DatasetConfig, path, ["dataset.seed=4", "negative_ratio=0.5"], section="dataset")
    assert (cfg.preset, cfg.shots, cfg.seed, cfg.negative_ratio, cfg.train.kind) == (
        "coco_8",
        2,
        4,
        0.5,
        "coco",
    )
    with pytest.raises(ConfigError, match="exp.yaml: train: kind 'coco' needs 'images'"):
        load_config(DatasetConfig, path, ["train.images="], section="dataset")


def test_load_images_false_stores_paths_and_opens_nothing(fx):
    src = fx.coco(write_images=False)
    fx.build(train=src, categories=["cat"], shots=2, load_images=False, verify_images=False)
    ds = datasets.load_from_disk(str(fx.root / "out"))
    assert ds["train"].features["image"] == datasets.Value("string")
    assert ds["train"][0]["image"].endswith(".png") and (fx.root / "coco/images").exists() is False


def test_build_api_matches_the_brief(fx):
    cfg = fx.config(train=fx.coco(), categories=["cat"], shots=1)
    result = build_dataset(cfg, fx.root / "built", progress=False)
    assert result.output_dir == fx.root / "built"
    assert sorted(p.name for p in result.output_dir.iterdir()) == [
        "dataset_dict.json",
        "eval",
        "eval_ground_truth.json",
        "manifest.json",
        "train",
    ]
