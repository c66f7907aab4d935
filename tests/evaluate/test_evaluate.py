"""End-to-end evaluation of the tiny model, and the protocol's wiring with a scripted model.

The tiny model has random weights, so its metrics are ~0: those tests check files, structure and
that batching does not change greedy answers. Tests with a scripted generator (answers known in
advance) check that a perfect answer really scores 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vrft.config import ConfigError, from_dict, load_config
from vrft.evaluate import EvaluateConfig, Request, evaluate_checkpoint, load_result
from vrft.evaluate.classification import evaluate_classification
from vrft.evaluate.data import load_eval_split
from vrft.evaluate.detection import evaluate_detection
from vrft.evaluate.grounding import evaluate_grounding
from vrft.evaluate.inference import resolve_backend
from vrft.io import verify_manifest
from vrft.models.config import ModelConfig

FAST = {"max_new_tokens": 12, "progress": False}


def _config(**values: object) -> EvaluateConfig:
    return from_dict(EvaluateConfig, {**FAST, **values})


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class ScriptedGenerator:
    """A stand-in model: ``answer(request)`` gives each completion; images are still loaded."""

    def __init__(self, answer: Callable[[Request], str]) -> None:
        self.answer = answer
        self.seen: list[Request] = []

    def generate(
        self, requests: Sequence[Request], load_image: Callable[[int], Image.Image], desc: str = ""
    ) -> list[str]:
        self.seen.extend(requests)
        for r in requests:
            assert load_image(r.row).size[0] > 0
        return [self.answer(r) for r in requests]


def test_detection_end_to_end_writes_predictions_completions_results_and_metrics(
    tiny_qwen2: ModelConfig, detection_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    result = evaluate_checkpoint(
        _config(detection_mode="all_categories", batch_size=4),
        detection_dataset,
        out,
        model=tiny_qwen2,
        label="base",
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "coco_gt.json",
        "coco_results.json",
        "completions.jsonl",
        "manifest.json",
        "metrics.json",
        "predictions.jsonl",
    ]
    verify_manifest(out)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["label"] == "base" and summary["task"] == "detection" and summary["backend"] == "hf"
    assert summary["details"]["mode"] == "all_categories" and summary["details"]["metric"] == "coco"
    assert summary["model"]["convention"] == "relative_1000"
    assert summary["config"]["max_new_tokens"] == 12
    assert summary["dataset"]["images"] == 5 and summary["dataset"]["eval_rows"] == 8
    assert set(summary["per_category"]) == {"circle", "square"}
    for key in ("mAP", "AP50", "AP/circle", "AP/square", "AP50/circle", "format_rate"):
        assert 0.0 <= result.metrics[key] <= 1.0
    assert result.metrics == summary["metrics"] and result.primary_metric == "mAP"

    predictions = _lines(out / "predictions.jsonl")
    completions = _lines(out / "completions.jsonl")
    assert len(predictions) == len(completions) == 5 * 2  # every image asked about both categories
    assert {c["step"] for c in completions} == {"boxes"}
    assert all("'circle'" in c["prompt"] or "'square'" in c["prompt"] for c in completions)
    gt = json.loads((out / "coco_gt.json").read_text())
    assert len(gt["images"]) == 5 and {c["name"] for c in gt["categories"]} == {"circle", "square"}
    assert sum(len(p["gt_boxes"]) for p in predictions) == len(gt["annotations"])
    assert isinstance(json.loads((out / "coco_results.json").read_text()), list)
    assert load_result(out).metrics == result.metrics

    with pytest.raises(FileExistsError):
        evaluate_checkpoint(_config(), detection_dataset, out, model=tiny_qwen2)


@pytest.mark.parametrize("mode", ["existence_gated", "all_categories"])
def test_batching_gives_the_same_greedy_predictions_as_batch_size_one(
    tiny_qwen2: ModelConfig, detection_dataset: Path, tmp_path: Path, mode: str
) -> None:
    runs = {}
    for batch_size in (1, 4):
        out = tmp_path / f"b{batch_size}"
        evaluate_checkpoint(
            _config(detection_mode=mode, batch_size=batch_size),
            detection_dataset,
            out,
            model=tiny_qwen2,
            label="base",
        )
        runs[batch_size] = (
            {c["key"]: c["completion"] for c in _lines(out / "completions.jsonl")},
            (out / "predictions.jsonl").read_text(),
        )
    assert len(runs[1][0]) == 10
    assert any(text.strip() for text in runs[1][0].values())  # the random model does say something
    assert runs[4] == runs[1]


def test_perfect_answers_score_map_one_in_every_mode(
    tiny_qwen2: ModelConfig,
    tiny_qwen25: ModelConfig,
    detection_dataset: Path,
    tmp_path: Path,
    scripted_detector,
) -> None:
    split = load_eval_split(detection_dataset)
    # Qwen2.5-VL boxes are pixels of the processor-resized image, here only 112x84: integer rounding
    # there moves small boxes by up to ~0.6 original pixels, which costs AP at the strictest thresholds.
    qwen25 = tiny_qwen25.convention(tiny_qwen25.load_processor())
    generator = ScriptedGenerator(scripted_detector(split.rows, qwen25, think=True))
    approximate = evaluate_detection(split, generator, qwen25, _config(detection_mode="gt_present"), tmp_path)
    assert 0.9 < approximate.metrics["mAP"] < 1.0 and approximate.metrics["AP50"] == pytest.approx(1.0)

    convention = tiny_qwen2.convention(tiny_qwen2.load_processor())  # 0-1000: ~0.06 px of rounding here
    for mode in ("existence_gated", "all_categories", "gt_present"):
        out = tmp_path / mode
        out.mkdir()
        generator = ScriptedGenerator(scripted_detector(split.rows, convention, think=True))
        output = evaluate_detection(split, generator, convention, _config(detection_mode=mode), out)
        assert output.metrics["mAP"] == pytest.approx(1.0) and output.metrics["AP/square"] == pytest.approx(
            1.0
        )
        assert output.metrics["format_rate"] == 1.0
        steps = [r.key.split("|")[2] for r in generator.seen]
        asked_boxes = steps.count("boxes")
        assert asked_boxes == {"existence_gated": 8, "all_categories": 10, "gt_present": 8}[mode]
        assert steps.count("existence") == (10 if mode == "existence_gated" else 0)
    assert output.metrics.get("existence/recall") is None  # only the gated mode asks


def test_the_existence_gate_caps_recall(
    tiny_qwen2: ModelConfig, detection_dataset: Path, tmp_path: Path, scripted_detector
) -> None:
    split = load_eval_split(detection_dataset)
    convention = tiny_qwen2.convention()
    generator = ScriptedGenerator(scripted_detector(split.rows, convention, skip="square", think=True))
    output = evaluate_detection(
        split, generator, convention, _config(detection_mode="existence_gated"), tmp_path
    )
    assert output.metrics["AP/circle"] == pytest.approx(1.0)
    assert output.metrics["AP/square"] == 0.0  # never asked for boxes: the model said "no"
    assert output.metrics["existence/recall"] == pytest.approx(3 / 8)
    missed = {p["category"] for p in output.predictions if p["gate_open"] is False and p["gt_boxes"]}
    assert missed == {"square"}
    ungated = evaluate_detection(
        split,
        generator,
        convention,
        _config(detection_mode="all_categories", category_groups={"round": ["circle"]}),
        tmp_path,
    )
    assert ungated.metrics["mAP"] == pytest.approx(1.0) and ungated.metrics["mAP/round"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="hexagon"):
        evaluate_detection(
            split, generator, convention, _config(category_groups={"x": ["hexagon"]}), tmp_path
        )


def test_classification_end_to_end_and_matching_rule(
    tiny_qwen2: ModelConfig, classification_dataset: Path, tmp_path: Path
) -> None:
    result = evaluate_checkpoint(
        _config(batch_size=3), classification_dataset, tmp_path / "cls", model=tiny_qwen2
    )
    assert result.task == "classification" and result.primary_metric == "accuracy"
    rows = load_eval_split(classification_dataset).rows
    assert len(_lines(tmp_path / "cls" / "predictions.jsonl")) == len(rows) == 4
    assert {"accuracy", "accuracy/circle", "accuracy/square", "format_rate"} <= set(result.metrics)

    split = load_eval_split(classification_dataset)
    truth = {r["image_id"]: r["category"] for r in split.rows}
    # Right answers (case/punctuation folded) for circles; a list of classes for squares: wrong for the
    # strict (reward) rule, right for the authors' two-way containment.
    generator = ScriptedGenerator(
        lambda r: (
            "<answer>Circle.</answer>"
            if truth[r.key.split("|")[0]] == "circle"
            else "<answer>square, circle</answer>"
        )
    )
    output = evaluate_classification(split, generator, tiny_qwen2.convention(), _config())
    assert output.metrics["accuracy_strict/circle"] == 1.0 and output.metrics["accuracy_strict/square"] == 0.0
    assert output.metrics["accuracy_strict"] == 0.5
    assert output.metrics["accuracy"] == 1.0 and output.metrics["accuracy/square"] == 1.0
    assert "shape" in generator.seen[0].prompt


def test_grounding_end_to_end_and_mask_giou(
    tiny_qwen2: ModelConfig, grounding_dataset: Path, tmp_path: Path
) -> None:
    result = evaluate_checkpoint(_config(), grounding_dataset, tmp_path / "lisa", model=tiny_qwen2)
    assert result.task == "grounding" and {"mIoU", "box_accuracy", "format_rate"} <= set(result.metrics)
    assert "gIoU" not in result.metrics

    split = load_eval_split(grounding_dataset)
    convention = tiny_qwen2.convention()
    boxes = {
        r["image_id"]: convention.to_model(r["gt_boxes"][0], r["width"], r["height"]) for r in split.rows
    }
    generator = ScriptedGenerator(lambda r: f"<think>t</think><answer>{boxes[r.key.split('|')[0]]}</answer>")

    def box_mask(image: Image.Image, box: list[float]) -> np.ndarray:  # stands in for SAM: fills the box
        mask = np.zeros((image.height, image.width), dtype=bool)
        x1, y1, x2, y2 = (round(v) for v in box)
        mask[y1:y2, x1:x2] = True
        return mask

    lisa_dir = Path(json.loads((grounding_dataset / "manifest.json").read_text())["config"]["train"]["path"])
    config = _config(sam_checkpoint="unused.pth", masks_dir=str(lisa_dir))
    output = evaluate_grounding(split, generator, convention, config, mask_predictor=box_mask)
    assert output.metrics["mIoU"] == pytest.approx(1.0, abs=0.05)  # 0-1000 rounding only
    assert output.metrics["box_accuracy"] == 1.0
    assert output.metrics["gIoU"] > 0.85  # the target polygon is a rectangle: the box mask nearly equals it


def test_sam_without_segment_anything_is_a_clear_error(
    tiny_qwen2: ModelConfig, grounding_dataset: Path, tmp_path: Path
) -> None:
    config = _config(sam_checkpoint=str(tmp_path / "sam.pth"), masks_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="segment_anything"):
        evaluate_checkpoint(config, grounding_dataset, tmp_path / "out", model=tiny_qwen2)
    assert not (tmp_path / "out").exists()


def test_max_eval_images_keeps_whole_images(
    tiny_qwen2: ModelConfig, detection_dataset: Path, tmp_path: Path
) -> None:
    result = evaluate_checkpoint(
        _config(max_eval_images=2, detection_mode="gt_present"),
        detection_dataset,
        tmp_path / "capped",
        model=tiny_qwen2,
    )
    split = load_eval_split(detection_dataset, max_images=2)
    assert len({r["image_id"] for r in split.rows}) == 2
    assert result.summary["dataset"]["images"] == 2 and result.summary["dataset"]["eval_rows_total"] == 8
    assert len(_lines(tmp_path / "capped" / "predictions.jsonl")) == len(split.rows)


def test_backend_resolution() -> None:
    assert resolve_backend("hf") == "hf"
    assert resolve_backend("auto") == "hf"  # vllm is not installed here
    with pytest.raises(ConfigError, match="vllm"):
        resolve_backend("vllm")


def test_config_section_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("evaluate:\n  batch_size: 32\n  detection_mode: gt_present\n  temperature: 0.7\n")
    config = load_config(EvaluateConfig, path, ["evaluate.max_eval_images=100"], section="evaluate")
    assert (config.batch_size, config.detection_mode, config.max_eval_images) == (32, "gt_present", 100)
    assert not config.greedy and EvaluateConfig().greedy and EvaluateConfig().max_new_tokens == 1024
    for bad, message in (
        ({"batch_size": 0}, "batch_size"),
        ({"temperature": -1}, "temperature"),
        ({"sam_checkpoint": "sam.pth"}, "masks_dir"),
        ({"backend": "tgi"}, "backend"),
    ):
        with pytest.raises(ConfigError, match=message):
            from_dict(EvaluateConfig, bad)


def test_a_family_that_contradicts_the_checkpoint_is_refused_before_anything_is_read(
    tiny_qwen25: ModelConfig, classification_dataset: Path, tmp_path: Path
) -> None:
    """A Qwen2.5-VL checkpoint scored as Qwen2-VL would misread every box (issue 21); the pipeline's
    evaluate stage and `vrft evaluate` both come through here."""
    from dataclasses import replace

    with pytest.raises(
        ConfigError, match=r"model.family: 'qwen2_vl', but the checkpoint .* is a 'qwen2_5_vl' model"
    ):
        evaluate_checkpoint(
            _config(),
            classification_dataset,
            tmp_path / "eval",
            model=replace(tiny_qwen25, family="qwen2_vl"),
        )
    assert not (tmp_path / "eval").exists()
