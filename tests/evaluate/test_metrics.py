"""Detection metrics: vrft's numbers are pycocotools' / the lvis API's, and a hand-computed case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lvis import LVIS, LVISEval, LVISResults
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vrft.evaluate.common import quiet
from vrft.evaluate.detection import (
    Category,
    coco_metrics,
    experiment_categories,
    ground_truth_json,
    group_images,
    lvis_metrics,
    numpy_float_alias,
)


def _random_case(seed: int = 0) -> tuple[dict, list[dict]]:
    """6 images, 3 categories, jittered true positives, duplicates and false positives."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "width": 200, "height": 150, "file_name": f"{i}.jpg"} for i in range(1, 7)]
    categories = [{"id": c, "name": n} for c, n in ((1, "bus"), (3, "cat"), (7, "dog"))]
    annotations, results = [], []
    for image in images:
        for cat in categories:
            for _ in range(int(rng.integers(0, 3))):
                x, y = rng.uniform(0, 120), rng.uniform(0, 90)
                w, h = rng.uniform(8, 70), rng.uniform(8, 50)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image["id"],
                        "category_id": cat["id"],
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
                for _ in range(int(rng.integers(1, 3))):  # a jittered hit, sometimes twice
                    jitter = rng.normal(0, 6, 4)
                    results.append(
                        {
                            "image_id": image["id"],
                            "category_id": cat["id"],
                            "bbox": [
                                x + jitter[0],
                                y + jitter[1],
                                max(1.0, w + jitter[2]),
                                max(1.0, h + jitter[3]),
                            ],
                            "score": float(rng.uniform(0.05, 1)),
                        }
                    )
            for _ in range(int(rng.integers(0, 2))):  # a false positive
                results.append(
                    {
                        "image_id": image["id"],
                        "category_id": cat["id"],
                        "bbox": [float(rng.uniform(0, 150)), float(rng.uniform(0, 100)), 20.0, 20.0],
                        "score": float(rng.uniform(0, 1)),
                    }
                )
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _cocoeval_direct(gt_path: Path, results_path: Path, cat_ids: list[int] | None = None) -> np.ndarray:
    with quiet():
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(results_path))
        evaluator = COCOeval(gt, dt, "bbox")
        if cat_ids is not None:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_map_equals_cocoeval_run_directly_on_the_same_files(tmp_path: Path) -> None:
    gt, results = _random_case()
    gt_path, results_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(results))

    ours = coco_metrics(gt_path, results_path)
    direct = _cocoeval_direct(gt_path, results_path)
    assert 0.05 < direct[0] < 0.95  # a non-trivial case
    assert ours.mAP == pytest.approx(direct[0], abs=1e-9)
    assert ours.AP50 == pytest.approx(direct[1], abs=1e-9)
    for cat_id in (1, 3, 7):
        alone = _cocoeval_direct(gt_path, results_path, [cat_id])
        assert ours.per_category[cat_id]["AP"] == pytest.approx(alone[0], abs=1e-9)
        assert ours.per_category[cat_id]["AP50"] == pytest.approx(alone[1], abs=1e-9)
    # The overall number is the mean over categories, as the paper's tables average them.
    assert ours.mAP == pytest.approx(np.mean([ours.per_category[c]["AP"] for c in (1, 3, 7)]), abs=1e-9)


def test_hand_computed_ap_one_image_two_boxes() -> None:
    """One 100x100 image, two ground-truth boxes of one category, two predictions.

    A = [50, 50, 70, 70] (score 0.9) equals ground truth G1: IoU 1.
    B = [0, 0, 20, 10] (score 0.8) lies inside G2 = [0, 0, 30, 10]: IoU 200 / 300 = 2/3.

    COCO averages AP over the IoU thresholds .50, .55, ..., .95; a match needs IoU >= t.
    * t in {.50, .55, .60, .65} (4 thresholds): A and B both match; recall reaches 1 at precision 1,
      so all 101 recall points have precision 1: AP = 1.
    * t in {.70, ..., .95} (6 thresholds): only A matches. Ranked by score: A (TP, recall .5,
      precision 1), B (FP, recall .5, precision .5). Interpolated precision is 1 for the recall
      points 0.00 .. 0.50 (51 of 101) and 0 above (recall 1 is never reached): AP = 51/101.
    mAP = (4 * 1 + 6 * 51/101) / 10 = 710/1010 = 71/101 = 0.70297...; AP50 = 1.
    """
    rows = [
        {
            "image_id": "42",
            "width": 100,
            "height": 100,
            "file_name": "42.jpg",
            "category": "cat",
            "category_id": 17,
            "gt_boxes": [[50.0, 50.0, 70.0, 70.0], [0.0, 0.0, 30.0, 10.0]],
        }
    ]
    images = group_images(rows)
    categories = experiment_categories(rows, {})
    gt = ground_truth_json(images, categories)
    results = [
        {"image_id": 42, "category_id": 17, "bbox": [50, 50, 20, 20], "score": 0.9},
        {"image_id": 42, "category_id": 17, "bbox": [0, 0, 20, 10], "score": 0.8},
    ]
    metrics = coco_metrics(gt, results, [17])
    assert metrics.mAP == pytest.approx(71 / 101, abs=1e-12)
    assert metrics.AP50 == pytest.approx(1.0, abs=1e-12)
    assert metrics.per_category[17]["AP"] == pytest.approx(71 / 101, abs=1e-12)
    # Swapping the scores changes the ranking at the strict thresholds: B (FP) first, then A (TP)
    # at recall .5 with precision .5, so the 51 low recall points get .5: AP = 51/202 there.
    results[0]["score"], results[1]["score"] = 0.8, 0.9
    swapped = coco_metrics(gt, results, [17])
    assert swapped.mAP == pytest.approx((4 + 6 * 51 / 202) / 10, abs=1e-12)


def test_no_detections_score_zero_where_there_is_ground_truth() -> None:
    rows = [
        {
            "image_id": "1",
            "width": 50,
            "height": 50,
            "category": "dog",
            "category_id": 2,
            "gt_boxes": [[1.0, 1.0, 20.0, 20.0]],
        },
        {"image_id": "2", "width": 50, "height": 50, "category": "cat", "category_id": 3, "gt_boxes": []},
    ]
    images = group_images(rows)
    gt = ground_truth_json(images, [Category("dog", 2), Category("cat", 3)])
    metrics = coco_metrics(gt, [])
    assert metrics.mAP == 0.0
    assert metrics.per_category == {2: {"AP": 0.0, "AP50": 0.0}, 3: {"AP": None, "AP50": None}}


def test_group_images_keeps_source_ids_and_negatives() -> None:
    rows = [
        {
            "image_id": "139",
            "width": 640,
            "height": 480,
            "category": "dog",
            "category_id": 18,
            "gt_boxes": [[1, 2, 3, 4]],
        },
        {
            "image_id": "139",
            "width": 640,
            "height": 480,
            "category": "cat",
            "category_id": 17,
            "gt_boxes": [],
        },
        {
            "image_id": "285",
            "width": 640,
            "height": 480,
            "category": "cat",
            "category_id": 17,
            "gt_boxes": [[5, 5, 9, 9]],
        },
    ]
    images = group_images(rows)
    assert [(i.image_id, i.coco_id, i.row) for i in images] == [("139", 139, 0), ("285", 285, 2)]
    assert images[0].gt == {"dog": [[1.0, 2.0, 3.0, 4.0]]} and images[0].negatives == {"cat"}
    manifest = {"categories": {"eval": ["cat", "dog"]}}
    assert experiment_categories(rows, manifest) == [Category("cat", 17), Category("dog", 18)]
    named = group_images([{**rows[0], "image_id": "a.jpg"}, {**rows[2], "image_id": "b.jpg"}])
    assert [i.coco_id for i in named] == [1, 2]


def test_lvis_ap_equals_the_lvis_api_and_ignores_unverified_categories(tmp_path: Path) -> None:
    """Federated evaluation: a category neither present nor verified absent in an image is not scored there."""
    rows = [
        {
            "image_id": "1",
            "width": 100,
            "height": 100,
            "category": "die",
            "category_id": 5,
            "gt_boxes": [[10, 10, 30, 30]],
        },
        {
            "image_id": "1",
            "width": 100,
            "height": 100,
            "category": "omelet",
            "category_id": 9,
            "gt_boxes": [],
        },
        {
            "image_id": "2",
            "width": 100,
            "height": 100,
            "category": "omelet",
            "category_id": 9,
            "gt_boxes": [[40, 40, 90, 80]],
        },
        {
            "image_id": "3",
            "width": 100,
            "height": 100,
            "category": "die",
            "category_id": 5,
            "gt_boxes": [[0, 0, 10, 10], [50, 50, 70, 70]],
        },
    ]
    gt = ground_truth_json(group_images(rows), experiment_categories(rows, {}), federated=True)
    assert gt["images"][0]["neg_category_ids"] == [9]
    gt_path = tmp_path / "lvis_gt.json"
    gt_path.write_text(json.dumps(gt))
    results = [
        {"image_id": 1, "category_id": 5, "bbox": [10, 10, 20, 20], "score": 0.9},
        {"image_id": 1, "category_id": 9, "bbox": [60, 60, 20, 20], "score": 0.95},  # verified absent: an FP
        {"image_id": 2, "category_id": 9, "bbox": [42, 40, 48, 40], "score": 0.7},
        {"image_id": 3, "category_id": 5, "bbox": [0, 0, 10, 10], "score": 0.6},
        {"image_id": 3, "category_id": 5, "bbox": [80, 80, 10, 10], "score": 0.8},
    ]
    ours = lvis_metrics(gt_path, results)
    lvis_gt = LVIS(str(gt_path))
    direct = LVISEval(lvis_gt, LVISResults(lvis_gt, json.loads(json.dumps(results))), iou_type="bbox")
    with numpy_float_alias():  # lvis 0.5.3 needs it on NumPy >= 1.24, run directly or not
        direct.run()
    assert ours.mAP == pytest.approx(direct.results["AP"], abs=1e-9)
    assert ours.AP50 == pytest.approx(direct.results["AP50"], abs=1e-9)
    assert 0 < ours.mAP < 1

    # Image 2 says nothing about "die": a die detection there is ignored, not a false positive.
    unverified = lvis_metrics(
        gt_path, results + [{"image_id": 2, "category_id": 5, "bbox": [1, 1, 5, 5], "score": 0.99}]
    )
    assert unverified.mAP == pytest.approx(ours.mAP, abs=1e-12)
    # Image 1 verifies "omelet" absent: dropping the false positive there raises omelet's AP.
    without_fp = lvis_metrics(
        gt_path, [r for r in results if not (r["image_id"] == 1 and r["category_id"] == 9)]
    )
    assert without_fp.per_category[9]["AP"] > ours.per_category[9]["AP"]
    assert lvis_metrics(gt_path, []).per_category == {
        5: {"AP": 0.0, "AP50": 0.0},
        9: {"AP": 0.0, "AP50": 0.0},
    }
