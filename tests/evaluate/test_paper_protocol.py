"""The authors' evaluation protocol, point by point (issue 22, points 3, 6, 7), on small data made here:
their gate lists, the <image> placeholder, the evaluation's max_pixels, LISA's first integer pair and
first polygon, and the protocol every evaluation records for the report."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from vrft.config import ConfigError, from_dict
from vrft.evaluate import EvaluateConfig, Request, evaluate_checkpoint
from vrft.evaluate.data import load_eval_split
from vrft.evaluate.detection import evaluate_detection
from vrft.evaluate.gate import answered_gate, load_gate
from vrft.evaluate.grounding import evaluate_grounding
from vrft.evaluate.run import evaluation_model
from vrft.models.coords import BoxConvention
from vrft.tracking import evaluation_tags

pytestmark = pytest.mark.timeout(180)

QWEN2 = BoxConvention("relative_1000")


def _config(**values: object) -> EvaluateConfig:
    return from_dict(EvaluateConfig, {"max_new_tokens": 8, "progress": False, **values})


class Scripted:
    def __init__(self, answer: Callable[[Request], str]) -> None:
        self.answer = answer
        self.seen: list[Request] = []

    def generate(self, requests: Sequence[Request], load_image, desc: str = "") -> list[str]:
        self.seen.extend(requests)
        return [self.answer(r) for r in requests]


def test_the_gate_read_from_the_authors_list(
    detection_dataset: Path, tmp_path: Path, scripted_detector
) -> None:
    split = load_eval_split(detection_dataset)
    images = sorted({r["image_id"] for r in split.rows})
    # Their format: image id -> the category names the base model said were there.
    listed = {image: (["circle"] if n % 2 == 0 else ["square", "triangle"]) for n, image in enumerate(images)}
    gate_file = tmp_path / "exist_map.json"
    gate_file.write_text(json.dumps(listed))
    model = Scripted(scripted_detector(split.rows, QWEN2, confidence=0.9))
    out = tmp_path / "eval"
    out.mkdir()
    config = _config(detection_mode="existence_gated", gate_source="authors_file", gate_file=str(gate_file))
    result = evaluate_detection(split, model, QWEN2, config, out)
    asked = {tuple(r.key.split("|")[:2]) for r in model.seen}
    assert "existence" not in {r.key.split("|")[2] for r in model.seen}  # nobody is asked yes/no
    assert asked == {
        (image, c) for image, names in listed.items() for c in names if c in ("circle", "square")
    }
    gate = load_gate(out)
    digest = hashlib.sha256(gate_file.read_bytes()).hexdigest()
    assert gate.source == "authors_file:exist_map.json" and gate.file_sha256 == digest
    assert result.details["gate"]["file_sha256"] == digest
    # The same list gzipped (as vrft ships it) is the same gate, with the same content hash.
    packed = tmp_path / "exist_map.json.gz"
    packed.write_bytes(gzip.compress(gate_file.read_bytes()))
    again = tmp_path / "again"
    again.mkdir()
    evaluate_detection(split, model, QWEN2, _config(**{**vars(config), "gate_file": str(packed)}), again)
    assert load_gate(again).open == gate.open and load_gate(again).file_sha256 == digest
    # A list made for other images is refused, naming the file and an image.
    gate_file.write_text(json.dumps({"999999": ["circle"]}))
    with pytest.raises(ConfigError, match=r"exist_map.json: no entry for \d+ eval image"):
        evaluate_detection(split, model, QWEN2, config, tmp_path / "eval")
    gate_file.write_text(json.dumps({images[0]: "circle"}))
    with pytest.raises(ConfigError, match="expected a list of category names"):
        evaluate_detection(split, model, QWEN2, config, tmp_path / "eval")
    with pytest.raises(ConfigError, match="gate_file: gate_source authors_file needs"):
        _config(detection_mode="existence_gated", gate_source="authors_file")


def test_the_shipped_coco_list_is_the_authors_file() -> None:
    from vrft.evaluate.gate import read_authors_gate
    from vrft.paper_files import content_sha256

    name = "paper:gates/exist_map_coco_Qwen2_vl_2B_baseline.json.gz"
    listed = read_authors_gate(name)
    assert len(listed) == 5000 and sum(map(len, listed.values())) == 25067
    assert "stop sign" in listed["397133"] or "person" in listed["397133"]
    assert content_sha256(name) == "1ef0642b6fa76d509a7504726ccab353e844f96a5afcd75ac37a36211707e618"


def test_a_sentence_answer_opens_the_gate() -> None:
    pairs = [("1", "stop sign"), ("1", "cat"), ("2", "cat")]
    answers = ["Yes, there is a stop sign.", "No, there isn't.", "Yesterday I saw one."]
    gate = answered_gate(pairs, answers, "base_model:m", {("1", "stop sign")}, "")
    assert [gate.open[p] for p in pairs] == [True, False, False]


def test_the_image_placeholder_precedes_detection_and_classification_prompts(
    detection_dataset: Path, classification_dataset: Path, tmp_path: Path, scripted_detector
) -> None:
    from vrft.evaluate.classification import evaluate_classification

    split = load_eval_split(detection_dataset)
    model = Scripted(scripted_detector(split.rows, QWEN2))
    evaluate_detection(
        split, model, QWEN2, _config(detection_mode="all_categories", image_placeholder=True), tmp_path
    )
    assert model.seen and all(r.prompt.startswith("<image>\nDetect all objects") for r in model.seen)
    classifier = Scripted(lambda r: "<answer>x</answer>")
    evaluate_classification(
        load_eval_split(classification_dataset), classifier, QWEN2, _config(image_placeholder=True)
    )
    assert all(r.prompt.startswith("<image>\nThis is an image containing") for r in classifier.seen)
    plain = Scripted(lambda r: "<answer>x</answer>")
    evaluate_classification(load_eval_split(classification_dataset), plain, QWEN2, _config())
    assert all(r.prompt.startswith("This is an image") for r in plain.seen)


def test_lisa_first_integer_pair_and_first_polygon(tmp_path: Path) -> None:
    from PIL import Image

    from vrft.config import from_dict as build
    from vrft.data import DatasetConfig, build_dataset

    lisa = tmp_path / "lisa"
    lisa.mkdir()
    shapes = [
        {"label": "ignore", "points": [[0, 0], [39, 0], [39, 29], [0, 29]]},
        {"label": "target", "points": [[40, 30], [79, 30], [79, 59], [40, 59]]},
    ]
    for stem in ("a", "b"):
        Image.new("RGB", (80, 60)).save(lisa / f"{stem}.jpg")
        (lisa / f"{stem}.json").write_text(json.dumps({"text": [f"thing {stem}"], "shapes": shapes}))
    dataset = tmp_path / "dataset"
    build_dataset(
        build(DatasetConfig, {"train": {"kind": "lisa", "path": str(lisa)}, "shots": 1}),
        dataset,
        progress=False,
    )
    split = load_eval_split(dataset)
    # The box in the think block comes first: the authors' rule takes it, vrft's reads the answer.
    completion = "<think>maybe (0,0),(500,500)</think><answer>(500,500),(1000,1000)</answer>"
    whole_image = lambda image, box: np.ones((60, 80), dtype=bool)  # noqa: E731  a stand-in SAM
    common = {"masks_dir": str(lisa), "sam_checkpoint": "unused"}
    ours = evaluate_grounding(split, Scripted(lambda r: completion), QWEN2, _config(**common), whole_image)
    theirs = evaluate_grounding(
        split,
        Scripted(lambda r: completion),
        QWEN2,
        _config(**common, grounding_answer="first_pair", grounding_mask="first_polygon"),
        whole_image,
    )
    assert ours.predictions[0]["box"] == pytest.approx([40.0, 30.0, 80.0, 60.0])
    assert ours.metrics["mIoU"] > 0.9  # the target polygon's box [40, 30, 79, 59]
    assert theirs.predictions[0]["box"] == pytest.approx([0.0, 0.0, 40.0, 30.0])
    assert theirs.metrics["mIoU"] == 0.0
    # gIoU: vrft leaves the ignore polygon's pixels out and scores the target polygon (a quarter of the
    # image); the authors score the first polygon (the ignore one, a quarter too) over the whole image.
    assert ours.metrics["gIoU"] == pytest.approx(
        39 * 29 / (80 * 60 - 39 * 29), abs=0.02
    )  # target / (image - ignore)
    assert theirs.metrics["gIoU"] == pytest.approx(40 * 30 / (80 * 60), abs=0.02)  # PIL fills the outline too
    assert (theirs.details["answer"], theirs.details["mask"]) == ("first_pair", "first_polygon")


def test_evaluation_resolution_and_the_recorded_protocol(
    classification_dataset: Path, tiny_qwen2, tmp_path: Path
) -> None:
    model = evaluation_model(_config(max_pixels=8192), tiny_qwen2)
    assert model.max_pixels == 8192 and tiny_qwen2.max_pixels != 8192
    with pytest.raises(ConfigError, match="below model.min_pixels"):
        evaluation_model(_config(max_pixels=1), tiny_qwen2)
    result = evaluate_checkpoint(
        _config(max_pixels=8192, image_placeholder=True, max_new_tokens=4),
        classification_dataset,
        tmp_path / "eval",
        model=tiny_qwen2,
        label="base",
    )
    assert result.summary["model"]["max_pixels"] == 8192  # what the processor was given
    assert result.summary["protocol"] == {
        "system_prompt": "none",
        "max_new_tokens": "4",
        "max_pixels": "8192",
        "image_placeholder": "yes",
        "class_names": "vrft",
        "test_list": "none",
    }
    tags = evaluation_tags(result)
    assert tags["protocol.max_pixels"] == "8192" and tags["protocol.image_placeholder"] == "yes"


def test_the_training_tag_comes_from_the_checkpoints_own_record(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from vrft.evaluate.run import checkpoint_training

    out = tmp_path / "rft"
    (out / "final").mkdir(parents=True)
    (out / "final" / "config.json").write_text('{"model_type": "qwen2_vl"}')  # the model's own config
    record = {"method": "grpo", "task": "classification", "grpo": {"reward": "", "reward_options": {}}}
    (out / "config.json").write_text(json.dumps(record))  # what `vrft train` writes beside final/
    assert checkpoint_training(out / "final") == "reward:classification"
    record["grpo"] = {"reward": "classification_containment", "reward_options": {}}
    (out / "config.json").write_text(json.dumps(record))
    assert checkpoint_training(out / "final") == "reward:classification_containment"
    assert checkpoint_training(tmp_path / "elsewhere") == "" and checkpoint_training(None) == ""
    result = SimpleNamespace(
        task="classification",
        label="rft",
        summary={"training": "reward:classification_containment", "details": {}, "dataset": {}, "config": {}},
    )
    assert evaluation_tags(result)["training"] == "reward:classification_containment"
