"""The authors' evaluation protocols, checked with hand-made model outputs (issue 12).

* classification: the authors' two-way containment beside the reward's strict match;
* detection: one existence gate per evaluation set, shared by base, SFT and RFT;
* COCO: every val image scored (false positives on images without the category count) and crowd
  regions kept — vrft's mAP equals pycocotools' on the official file;
* LVIS: ``not_exhaustive_category_ids`` kept — vrft's AP equals the lvis API's on the official file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from lvis import LVIS, LVISEval, LVISResults
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vrft.config import ConfigError, from_dict
from vrft.data import DatasetConfig, build_dataset
from vrft.evaluate import EvaluateConfig, Request, evaluate_checkpoint
from vrft.evaluate.classification import authors_answer, authors_correct, evaluate_classification
from vrft.evaluate.common import quiet
from vrft.evaluate.data import load_eval_split
from vrft.evaluate.detection import evaluate_detection, numpy_float_alias
from vrft.evaluate.gate import load_gate
from vrft.models.coords import BoxConvention

pytestmark = pytest.mark.timeout(120)

QWEN2 = BoxConvention("relative_1000")
W, H = 64, 48


def _config(**values: object) -> EvaluateConfig:
    return from_dict(EvaluateConfig, {"max_new_tokens": 8, "progress": False, **values})


class Scripted:
    def __init__(self, answer: Callable[[Request], str]) -> None:
        self.answer = answer
        self.seen: list[Request] = []

    def generate(self, requests: Sequence[Request], load_image, desc: str = "") -> list[str]:
        self.seen.extend(requests)
        return [self.answer(r) for r in requests]


# -- classification ---------------------------------------------------------------------------------

# (completion, class name, authors' verdict, strict verdict)
CLASSIFICATION_CASES = [
    (
        "<think>a plane</think><answer>Boeing 737-800</answer>",
        "737-800",
        True,
        False,
    ),  # answer contains truth
    ("<answer>primrose</answer>", "pink primrose", True, False),  # truth contains answer
    ("<answer>Pink_Primrose</answer>", "pink primrose", True, True),  # spaces and _ removed, case folded
    ("<answer></answer>", "cat", True, False),  # "" is in every string: the authors' rule accepts it
    ("<answer>737_800</answer>", "737-800", False, True),  # the authors keep hyphens; strict folds them
    ("<answer>Pink\nPrimrose</answer>", "pink primrose", False, True),  # their regex stops at a line break
    ("pink primrose", "pink primrose", False, True),  # no <answer> block: wrong for the authors
    ("<answer>Airbus A320</answer><answer>737-800</answer>", "737-800", False, True),  # first block counts
]


@pytest.mark.parametrize(("completion", "truth", "paper", "strict"), CLASSIFICATION_CASES)
def test_classification_answers_scored_by_both_protocols(completion, truth, paper, strict) -> None:
    from vrft.answers import labels_match
    from vrft.evaluate.common import answer_of

    assert authors_correct(authors_answer(completion), truth) is paper
    assert labels_match(answer_of(completion, False), truth) is strict


def test_classification_evaluation_reports_the_authors_accuracy_and_the_strict_one(
    classification_dataset: Path,
) -> None:
    split = load_eval_split(classification_dataset)
    truth = {r["image_id"]: r["category"] for r in split.rows}
    # circles: a longer name containing the class (authors right, strict wrong); squares: exact.
    answers = {"circle": "<answer>a big circle</answer>", "square": "<answer>Square</answer>"}
    output = evaluate_classification(
        split, Scripted(lambda r: answers[truth[r.key.split("|")[0]]]), QWEN2, _config()
    )
    assert output.metrics["accuracy"] == 1.0 and output.metrics["accuracy_strict"] == 0.5
    assert output.metrics["accuracy_strict/circle"] == 0.0 and output.metrics["accuracy_strict/square"] == 1.0
    assert set(output.details["protocols"]) == {"accuracy", "accuracy_strict"}


# -- the shared existence gate ----------------------------------------------------------------------


def test_one_gate_for_base_sft_and_rft_whatever_each_says_to_the_yes_no_prompt(
    detection_dataset: Path, tmp_path: Path, scripted_detector
) -> None:
    split = load_eval_split(detection_dataset)
    config = _config(detection_mode="existence_gated")
    base = Scripted(
        scripted_detector(split.rows, QWEN2, lambda image, category: category == "circle", confidence=0.9)
    )
    base_out = tmp_path / "base"
    base_out.mkdir()
    base_result = evaluate_detection(split, base, QWEN2, config, base_out, gate_label="base-model")
    gate = load_gate(base_out)
    assert gate.source == "base_model:base-model"
    opened = {k for k, v in gate.open.items() if v}
    assert opened and {c for _, c in opened} == {"circle"}

    asked = {}
    for label, says in (("sft", lambda i, c: True), ("rft", lambda i, c: False)):
        model = Scripted(scripted_detector(split.rows, QWEN2, says, confidence=0.9))
        out = tmp_path / label
        out.mkdir()
        result = evaluate_detection(split, model, QWEN2, config, out, gate=gate)
        steps = [r.key.split("|")[2] for r in model.seen]
        assert "existence" not in steps  # the checkpoint is never asked its own yes/no question
        asked[label] = {tuple(r.key.split("|")[:2]) for r in model.seen}
        assert json.loads((out / "gate.json").read_text()) == json.loads((base_out / "gate.json").read_text())
        assert result.metrics["existence/recall"] == base_result.metrics["existence/recall"]
        assert result.details["gate"]["source"] == "base_model:base-model"
    assert asked["sft"] == asked["rft"] == opened
    assert 0 < base_result.metrics["existence/recall"] < 1


def test_a_trained_checkpoint_cannot_gate_itself_and_ground_truth_gates_need_no_model(
    detection_dataset: Path, tiny_qwen2, tmp_path: Path, scripted_detector
) -> None:
    with pytest.raises(ConfigError, match="needs the base model's gate"):
        evaluate_checkpoint(
            _config(detection_mode="existence_gated"),
            detection_dataset,
            tmp_path / "x",
            model=tiny_qwen2,
            label="sft",
        )
    split = load_eval_split(detection_dataset)
    model = Scripted(scripted_detector(split.rows, QWEN2, lambda i, c: False, confidence=0.9))
    output = evaluate_detection(
        split, model, QWEN2, _config(detection_mode="existence_gated", gate_source="ground_truth"), tmp_path
    )
    assert output.metrics["existence/recall"] == 1.0 and output.metrics["mAP"] == pytest.approx(1.0)
    assert output.details["gate"]["source"] == "ground_truth"


# -- COCO: the whole image set, crowd regions kept ------------------------------------------------


def _write_images(directory: Path, images: list[dict]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for im in images:
        Image.new("RGB", (im["width"], im["height"]), (im["id"] * 30 % 255, 90, 40)).save(
            directory / im["file_name"]
        )


def _coco_sources(tmp_path: Path) -> tuple[dict, dict, dict]:
    cats = [{"id": 1, "name": "person"}, {"id": 6, "name": "bus"}, {"id": 17, "name": "cat"}]
    train_images = [{"id": 100 + i, "file_name": f"t{i}.png", "width": W, "height": H} for i in range(2)]
    train = {
        "images": train_images,
        "categories": cats,
        "annotations": [
            {"id": 1, "image_id": 100, "category_id": 6, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 101, "category_id": 17, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0},
        ],
    }
    images = [{"id": i, "file_name": f"v{i}.png", "width": W, "height": H} for i in range(1, 7)]
    placed = [
        (1, 6, [5, 5, 20, 20], 0),
        (2, 17, [30, 10, 20, 20], 0),
        (2, 6, [2, 2, 10, 10], 0),
        (3, 17, [10, 10, 20, 20], 0),
        (3, 17, [35, 5, 25, 35], 1),  # image 3: a cat and a crowd of cats
        (4, 1, [5, 5, 30, 30], 0),  # image 4: only a person (not evaluated); image 5: nothing
        (6, 17, [0, 0, 40, 40], 1),
    ]  # image 6: only a crowd region of cats
    val = {
        "images": images,
        "categories": cats,
        "annotations": [
            {"id": n + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": crowd}
            for n, (i, c, b, crowd) in enumerate(placed)
        ],
    }
    for name, data in (("train", train), ("val", val)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
        _write_images(tmp_path / name, data["images"])
    train_src = {
        "kind": "coco",
        "annotations": str(tmp_path / "train.json"),
        "images": str(tmp_path / "train"),
    }
    val_src = {"kind": "coco", "annotations": str(tmp_path / "val.json"), "images": str(tmp_path / "val")}
    return train_src, val_src, val


def _official_detector(
    official: dict, extra: dict[tuple[str, str], list[list[float]]]
) -> Callable[[Request], str]:
    """Every non-crowd box of the pair (confidence 0.8) plus ``extra`` boxes (confidence 0.95)."""
    names = {c["name"]: c["id"] for c in official["categories"]}

    def answer(request: Request) -> str:
        image_id, category, _ = request.key.split("|")
        boxes = [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in official["annotations"]
            if str(a["image_id"]) == image_id
            and a["category_id"] == names[category]
            and not a.get("iscrowd", 0)
        ]
        found = [{"Position": QWEN2.to_model(b, W, H), "Confidence": 0.8} for b in boxes]
        found += [
            {"Position": QWEN2.to_model(b, W, H), "Confidence": 0.95}
            for b in extra.get((image_id, category), [])
        ]
        return f"<answer>{json.dumps(found)}</answer>" if found else "<answer>No Objects</answer>"

    return answer


def _cocoeval(gt_path: Path, results: list[dict], cat_ids: list[int]) -> float:
    with quiet():
        gt = COCO(str(gt_path))
        evaluator = COCOeval(gt, gt.loadRes(json.loads(json.dumps(results))), "bbox")
        evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def test_coco_false_positives_on_images_without_the_category_count_as_pycocotools_on_the_full_set(
    tmp_path: Path,
) -> None:
    train_src, val_src, official = _coco_sources(tmp_path)
    dataset = tmp_path / "dataset"
    build_dataset(
        from_dict(
            DatasetConfig, {"train": train_src, "eval": val_src, "categories": ["bus", "cat"], "shots": 1}
        ),
        dataset,
        progress=False,
    )
    split = load_eval_split(dataset)
    assert {r["image_id"] for r in split.rows} == {"1", "2", "3", "4", "5", "6"}  # every val image

    on_crowd = [[36, 6, 58, 38]]  # a cat detection on image 3's crowd region: ignored, not a false positive
    false_positives = {
        ("4", "bus"): [[10, 10, 40, 40]],
        ("5", "cat"): [[10, 10, 40, 40]],
        ("3", "cat"): on_crowd,
        ("6", "cat"): [[1, 1, 39, 39]],
    }
    scores = {}
    for name, extra in (
        ("clean", {k: v for k, v in false_positives.items() if k[0] in ("3", "6")}),
        ("with_fp", false_positives),
    ):
        out = tmp_path / name
        out.mkdir()
        result = evaluate_detection(
            split,
            Scripted(_official_detector(official, extra)),
            QWEN2,
            _config(detection_mode="all_categories"),
            out,
        )
        assert result.details["ground_truth"] == "official"
        results = json.loads(json.dumps(result.files["coco_results.json"]))
        direct = _cocoeval(tmp_path / "val.json", results, [6, 17])  # the official file, every image
        assert result.metrics["mAP"] == pytest.approx(direct, abs=1e-12)
        scores[name] = result.metrics["mAP"]
    # Crowd detections are ignored: perfect answers elsewhere still score 1 ...
    assert scores["clean"] == pytest.approx(1.0)
    # ... while confident false positives on images 4 and 5 (no bus, no cat there) lower AP.
    assert scores["with_fp"] < scores["clean"]


# -- LVIS: not-exhaustive categories kept -----------------------------------------------------------


def _lvis_file(
    path: Path, image_dir: Path, images: list[dict], anns: list[tuple[int, int, list[float]]]
) -> dict:
    cats = [
        {"id": 5, "name": "die", "synonyms": ["die", "dice"], "frequency": "r"},
        {"id": 9, "name": "omelet", "synonyms": ["omelet"], "frequency": "r"},
    ]
    data = {
        "images": images,
        "categories": cats,
        "annotations": [
            {"id": n + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3]}
            for n, (i, c, b) in enumerate(anns)
        ],
    }
    path.write_text(json.dumps(data))
    _write_images(image_dir, [{**im, "file_name": im["coco_url"].rsplit("/", 1)[1]} for im in images])
    return data


def _lvis_image(i: int, split: str, neg: list[int] = (), not_exhaustive: list[int] = ()) -> dict:
    return {
        "id": i,
        "coco_url": f"http://images.cocodataset.org/{split}/{i:012d}.jpg",
        "width": W,
        "height": H,
        "neg_category_ids": list(neg),
        "not_exhaustive_category_ids": list(not_exhaustive),
    }


def test_lvis_with_not_exhaustive_categories_kept_equals_the_lvis_api_on_the_official_file(
    tmp_path: Path,
) -> None:
    root = tmp_path / "coco"
    _lvis_file(
        tmp_path / "train.json",
        root / "train2017",
        [_lvis_image(100, "train2017"), _lvis_image(101, "train2017")],
        [(100, 5, [5, 5, 20, 20]), (101, 9, [5, 5, 20, 20])],
    )
    val_images = [
        _lvis_image(1, "val2017", not_exhaustive=[5]),  # die present, not every die annotated
        _lvis_image(2, "val2017", neg=[5]),
        _lvis_image(3, "val2017"),
        _lvis_image(4, "val2017", neg=[9]),
    ]
    official = _lvis_file(
        tmp_path / "val.json",
        root / "val2017",
        val_images,
        [
            (1, 5, [5, 5, 20, 20]),
            (2, 9, [30, 10, 20, 20]),
            (3, 5, [10, 10, 20, 20]),
            (3, 9, [35, 20, 20, 20]),
        ],
    )
    dataset = tmp_path / "dataset"
    build_dataset(
        from_dict(
            DatasetConfig,
            {
                "train": {"kind": "lvis", "annotations": str(tmp_path / "train.json"), "images": str(root)},
                "eval": {"kind": "lvis", "annotations": str(tmp_path / "val.json"), "images": str(root)},
                "categories": ["die", "omelet"],
                "shots": 1,
            },
        ),
        dataset,
        progress=False,
    )
    split = load_eval_split(dataset)
    gt_file = json.loads((dataset / "eval_ground_truth.json").read_text())
    assert gt_file["images"][0]["not_exhaustive_category_ids"] == [5]

    # An unmatched, confident die on image 1 (die not exhaustive there): the lvis API ignores it.
    extra = {
        ("1", "die"): [[40, 20, 60, 44]],
        ("2", "die"): [[1, 1, 20, 20]],
        ("4", "omelet"): [[2, 2, 30, 30]],
    }
    out = tmp_path / "eval"
    out.mkdir()
    result = evaluate_detection(
        split,
        Scripted(_official_detector(official, extra)),
        QWEN2,
        _config(detection_mode="all_categories"),
        out,
    )
    assert result.details["metric"] == "lvis" and result.details["ground_truth"] == "official"
    results = json.loads(json.dumps(result.files["coco_results.json"]))
    gt = LVIS(str(tmp_path / "val.json"))
    direct = LVISEval(gt, LVISResults(gt, results), iou_type="bbox")
    with numpy_float_alias():
        direct.run()
    assert result.metrics["mAP"] == pytest.approx(direct.results["AP"], abs=1e-12)
    assert result.metrics["AP/die"] < 1.0  # the false positive on image 2 (die verified absent) counts
    # Without image 1's not-exhaustive mark the same detection would be a false positive:
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    strict = evaluate_detection(
        split,
        Scripted(_official_detector(official, extra)),
        QWEN2,
        _config(detection_mode="all_categories", ground_truth="rebuilt"),
        rebuilt,
    )
    assert strict.metrics["AP/die"] < result.metrics["AP/die"]

    # The authors' LVIS notebook (issue 22, point 5): per-category AP averaged over the four area
    # ranges too, mAP the mean of those per-category APs.
    ranges = tmp_path / "ranges"
    ranges.mkdir()
    authors = evaluate_detection(
        split,
        Scripted(_official_detector(official, extra)),
        QWEN2,
        _config(detection_mode="all_categories", lvis_ap_average="area_ranges"),
        ranges,
    )
    precision = direct.eval["precision"]  # [IoU, recall, category, area range]
    assert precision.ndim == 4 and precision.shape[3] == 4
    expected = {}
    for k, cat_id in enumerate(direct.params.cat_ids):
        p = precision[:, :, k, :]
        expected[cat_id] = float(p[p > -1].mean())
    names = {5: "die", 9: "omelet"}
    for cat_id, value in expected.items():
        assert authors.metrics[f"AP/{names[cat_id]}"] == pytest.approx(value, abs=1e-12)
    assert authors.metrics["mAP"] == pytest.approx(sum(expected.values()) / len(expected), abs=1e-12)
    # Here every box is small (area "all" = "small"); where the ranges differ, so do the averages:
    from vrft.evaluate.detection import _per_category

    synthetic = np.full((2, 3, 1, 4), -1.0)  # IoU x recall x category x area (all, small, medium, large)
    synthetic[:, :, 0, 0], synthetic[:, :, 0, 2] = 0.5, 1.0
    assert _per_category(synthetic, [7])[7]["AP"] == 0.5
    assert _per_category(synthetic, [7], area_ranges=True)[7]["AP"] == 0.75


# -- the shipped configs --------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_configs_follow_the_authors_protocols() -> None:
    from vrft.experiment import load_experiment

    lisa = load_experiment(ROOT / "configs" / "lisa.yaml")
    assert (
        lisa.grpo.reward,
        lisa.evaluate.max_new_tokens,
        lisa.evaluate.system_prompt,
        lisa.evaluate.grounding_instructions,
    ) == ("grounding_giou", 128, "r1", "first")
    for name in ("ovd_coco", "ovd_lvis"):  # 2 epochs of 6k rows at 16 prompts per step
        config = load_experiment(ROOT / "configs" / f"{name}.yaml")
        assert config.grpo.max_steps == config.sft.max_steps == 2 * 6000 // 16
    for name in ("coco_8cat", "lvis_6rare", "ovd_coco", "ovd_lvis", "mg"):
        evaluate = load_experiment(ROOT / "configs" / f"{name}.yaml").evaluate
        # paper mode: the authors' gate lists, except for MG, which has none published
        assert (evaluate.detection_mode, evaluate.gate_source, evaluate.ground_truth) == (
            "existence_gated",
            "base_model" if name == "mg" else "authors_file",
            "official",
        ), name


def test_seeds_repeat_rft_and_sft_for_every_shot_count() -> None:
    from vrft.experiment import load_experiment
    from vrft.pipelines.plan import sweep_configs

    config = load_experiment(
        ROOT / "configs" / "default.yaml", ["experiment.shots=[1,2]", "experiment.seeds=[3,4]"]
    )
    swept = sweep_configs(config)
    assert [(c.dataset.shots, c.grpo.seed, c.sft.seed) for c in swept] == [
        (1, 3, 3),
        (1, 4, 4),
        (2, 3, 3),
        (2, 4, 4),
    ]
    assert {c.dataset.seed for c in swept} == {config.dataset.seed}  # the same few-shot sample
    with pytest.raises(ConfigError, match="repeated seed"):
        load_experiment(ROOT / "configs" / "default.yaml", ["experiment.seeds=[1,1]"])
