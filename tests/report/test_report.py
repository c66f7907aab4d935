"""The report end to end, from real MLflow runs in a temporary sqlite store.

The ``shapes_tiny`` table comes from real evaluations of three tiny random checkpoints (standing in
for base, SFT and RFT; their mAP is ~0). The ``coco_8cat`` table (a Table 3 config) is logged from
metrics vrft computed with pycocotools on synthetic predictions of graded quality, so the paper
column, the Δ row and the regression check have non-trivial numbers to show. The training runs'
reward series are vrft's detection reward on synthetic completions that improve over the steps.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from vrft.config import from_dict
from vrft.evaluate import EvaluateConfig, coco_metrics, evaluate_checkpoint
from vrft.models.config import ModelConfig
from vrft.models.tiny import build_tiny_model
from vrft.report import ReportConfig, RunTags, build_report, check_regression, log_evaluation
from vrft.report.paper import TABLES
from vrft.rewards import DetectionReward

COCO8 = TABLES["table3"].columns[1:]
QWEN = "Qwen/Qwen2-VL-2B-Instruct"


def _graded_detection_metrics(noise: float, seed: int) -> dict[str, float]:
    """pycocotools metrics of synthetic predictions: ground truth jittered by ``noise`` pixels."""
    rng = np.random.default_rng(seed)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(COCO8)]
    images = [{"id": i, "width": 320, "height": 240} for i in range(1, 17)]
    annotations, results = [], []
    for image in images:
        for cat in rng.choice(categories, size=2, replace=False):
            x, y, w, h = rng.uniform(0, 200), rng.uniform(0, 150), rng.uniform(30, 100), rng.uniform(30, 80)
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
            j = rng.normal(0, noise, 4)
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": cat["id"],
                    "score": float(rng.uniform(0.3, 1)),
                    "bbox": [x + j[0], y + j[1], max(2.0, w + j[2]), max(2.0, h + j[3])],
                }
            )
    scores = coco_metrics({"images": images, "annotations": annotations, "categories": categories}, results)
    metrics = {"mAP": scores.mAP, "AP50": scores.AP50}
    for cat in categories:
        metrics[f"AP/{cat['name']}"] = scores.per_category[cat["id"]]["AP"]
    return metrics


def _log_computed(uri: str, experiment: str, tags: RunTags, metrics: dict[str, float]) -> str:
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.set_tags({**tags.as_tags("evaluate"), "task": "detection"})
        mlflow.log_metrics(metrics)
    time.sleep(0.01)  # distinct start times: "previous run" is decided by them
    return run.info.run_id


def _log_training(uri: str, experiment: str, tags: RunTags, skill: float) -> str:
    """20 steps of vrft's detection reward on 8 completions per step that get better with ``skill``."""
    reward = DetectionReward()
    gt = [[100, 100, 300, 260], [500, 420, 700, 640]]
    rng = np.random.default_rng(int(skill * 100))
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.set_tags(tags.as_tags("train"))
        for step in range(20):
            progress = min(1.0, skill * step / 19)
            completions = []
            for _ in range(8):
                boxes = [
                    {
                        "Position": [round(v + rng.normal(0, 80 * (1 - progress))) for v in box],
                        "Confidence": round(float(rng.uniform(0.5, 1)), 2),
                    }
                    for box in gt
                ]
                answer = json.dumps(boxes)
                well_formed = rng.random() < 0.2 + 0.8 * progress
                completions.append(
                    f"<think>boxes</think><answer>{answer}</answer>" if well_formed else answer
                )
            parts = [b.as_dict() for b in reward.breakdown(completions, solution_boxes=[gt] * 8)]
            means = {key: sum(p[key] for p in parts) / len(parts) for key in parts[0]}
            mlflow.log_metrics(
                {
                    "rewards/detection_iou/mean": means["iou"],
                    "rewards/detection_conf/mean": means["conf"],
                    "rewards/detection_format/mean": means["format"],
                    "reward": means["overall"],
                    "kl": 0.01 * step,
                },
                step=step,
            )
    time.sleep(0.01)
    return run.info.run_id


@pytest.fixture(scope="module")
def populated(
    mlflow_store: tuple[str, str], shapes_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    uri, experiment = mlflow_store
    tmp = tmp_path_factory.mktemp("runs")
    info: dict[str, Any] = {"real": {}, "computed": {}}

    # Real evaluations: three tiny checkpoints (different seeds) as base / SFT / RFT, 2 shots.
    eval_config = from_dict(
        EvaluateConfig,
        {"max_new_tokens": 12, "batch_size": 4, "progress": False, "detection_mode": "all_categories"},
    )
    for seed, method in enumerate(("base", "sft", "rft")):
        checkpoint = build_tiny_model(tmp / f"tiny-{method}", seed=seed)
        model = ModelConfig(name_or_path=str(checkpoint), min_pixels=56 * 56, max_pixels=112 * 112)
        result = evaluate_checkpoint(
            eval_config, shapes_dataset, tmp / f"eval-{method}", model=model, label=method
        )
        tags = RunTags(
            method=method,
            config="shapes_tiny",
            model="tiny-qwen2-vl",
            dataset="shapes",
            shots=None if method == "base" else 2,
        )
        run_id = log_evaluation(result, tags, experiment=experiment, tracking_uri=uri)
        info["real"][method] = (run_id, result.metrics)
        time.sleep(0.01)

    # A Table 3 config: graded quality, 1 and 4 shots; then a worse rerun of RFT 4-shot.
    plan = [("base", None, 14.0), ("sft", 1, 11.0), ("rft", 1, 6.0), ("sft", 4, 9.0), ("rft", 4, 3.0)]
    for method, shots, noise in plan:
        tags = RunTags(
            method=method,
            config="coco_8cat",
            model=QWEN,
            dataset="coco",
            shots=shots,
            paper_table="table3",
            paper_model="Qwen2-VL-2B",
        )
        metrics = _graded_detection_metrics(noise, seed=7)
        info["computed"][(method, shots)] = (_log_computed(uri, experiment, tags, metrics), metrics)
    for method, skill in (("sft", 0.5), ("rft", 1.0)):
        _log_training(uri, experiment, RunTags(method=method, config="coco_8cat", model=QWEN, shots=4), skill)
    rerun_tags = RunTags(
        method="rft", config="coco_8cat", model=QWEN, dataset="coco", shots=4, paper_table="table3"
    )
    info["rerun_metrics"] = _graded_detection_metrics(7.0, seed=7)
    info["rerun"] = _log_computed(uri, experiment, rerun_tags, info["rerun_metrics"])
    return info


@pytest.fixture(scope="module")
def report(
    populated: dict[str, Any], mlflow_store: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
):
    uri, experiment = mlflow_store
    out = tmp_path_factory.mktemp("report") / "report"
    return build_report(
        from_dict(ReportConfig, {"regression_threshold": 1.0}), out, tracking_uri=uri, experiment=experiment
    )


def test_table3_config_gets_paper_columns_and_delta_rows(report, populated: dict[str, Any]) -> None:
    table = next(t for t in report.tables if t.config == "coco_8cat")
    assert table.paper is not None and table.paper.key == "table3"
    assert [c.label for c in table.columns] == ["mAP", *COCO8]  # the paper's column order
    assert all(c.paper for c in table.columns)
    assert [(r.method, r.shots) for r in table.rows] == [
        ("base", None),
        ("sft", 1),
        ("rft", 1),
        ("delta", 1),
        ("sft", 4),
        ("rft", 4),
        ("delta", 4),
    ]
    base, rft4, delta4 = table.rows[0], table.row("rft", 4), table.row("delta", 4)
    assert base.paper["mAP"] == 19.6 and rft4.paper["mAP"] == 40.6
    assert delta4.paper["mAP"] == pytest.approx(40.6 - 25.2)
    assert base.paper["AP/fire hydrant"] == 25.8
    # Ours: the newest run of each (method, shots), so RFT 4-shot is the worse rerun.
    assert rft4.run_id == populated["rerun"]
    assert rft4.values["mAP"] == pytest.approx(100 * populated["rerun_metrics"]["mAP"])
    sft4 = populated["computed"][("sft", 4)][1]
    assert delta4.values["mAP"] == pytest.approx(100 * (populated["rerun_metrics"]["mAP"] - sft4["mAP"]))
    rft1, sft1 = populated["computed"][("rft", 1)][1], populated["computed"][("sft", 1)][1]
    assert table.row("delta", 1).values["AP/bus"] == pytest.approx(100 * (rft1["AP/bus"] - sft1["AP/bus"]))
    assert table.row("delta", 1).values["mAP"] > 0  # less noise, better boxes

    markdown = report.markdown.read_text()
    # paper columns name the table and the column; the notes name the paper's rows
    assert (
        "| Method | Shots | mAP | mAP (paper: Table 3, mAP) | bus | bus (paper: Table 3, bus) |" in markdown
    )
    assert "Paper values: Table 3, rows Qwen2-VL-2B Base, Qwen2-VL-2B SFT 1-shot" in markdown
    assert re.search(r"\| Base \| – \| \d+\.\d \| 19\.6 \|", markdown)
    assert re.search(r"\| Δ \(RFT − SFT\) \| 4 \| [+-]\d+\.\d \| \+15\.4 \|", markdown)


def test_real_tiny_evaluations_make_their_own_table(report, populated: dict[str, Any], mlflow_store) -> None:
    table = next(t for t in report.tables if t.config == "shapes_tiny")
    assert table.paper is None
    assert [c.key for c in table.columns] == ["mAP", "AP/circle", "AP/square"]
    assert [(r.method, r.shots) for r in table.rows] == [("base", None), ("sft", 2), ("rft", 2), ("delta", 2)]
    for method in ("base", "sft", "rft"):
        run_id, metrics = populated["real"][method]
        row = table.row(method, None if method == "base" else 2)
        assert row.run_id == run_id
        assert row.values["mAP"] == pytest.approx(100 * metrics["mAP"])
    client = MlflowClient(tracking_uri=mlflow_store[0])
    run = client.get_run(populated["real"]["rft"][0])
    assert run.data.tags["eval_mode"] == "all_categories" and run.data.tags["task"] == "detection"
    assert "timing/images_per_second" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/metrics.json" in artifacts and "evaluation/coco_results.json" in artifacts


def test_plots_and_html_are_valid_and_self_contained(report) -> None:
    names = sorted(p.name for p in report.plots)
    assert names == [
        "coco_8cat-Qwen_Qwen2-VL-2B-Instruct-rewards.png",
        "coco_8cat-Qwen_Qwen2-VL-2B-Instruct-shots.png",
        "shapes_tiny-tiny-qwen2-vl-shots.png",
    ]
    for path in report.plots:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= 600 and len(image.getcolors(1 << 20) or []) > 50
    page = report.html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing external
    inlined = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(inlined) == len(report.plots)
    assert base64.b64decode(inlined[0]) == report.plots[0].read_bytes()
    assert "<td>Δ (RFT − SFT)</td>" in page and "mAP (paper: Table 3, mAP)" in page
    markdown = report.markdown.read_text()
    for path in report.plots:
        assert f"]({path.relative_to(report.output_dir).as_posix()})" in markdown


def test_regression_check_flags_the_worse_rerun(
    report, populated: dict[str, Any], mlflow_store, tmp_path
) -> None:
    summary = json.loads((report.output_dir / "regression.json").read_text())
    assert summary == report.regression_summary
    assert summary["status"] == "regressed" and summary["regressed_runs"] == 1
    assert summary["config"] == "coco_8cat, shapes_tiny"
    flat = {r["metric"]: r for r in summary["regressions"]}  # one entry per flagged metric
    assert flat["rft/mAP"]["run_id"] == populated["rerun"] and flat["rft/mAP"]["shots"] == 4
    assert flat["rft/mAP"]["drop"] == pytest.approx(flat["rft/mAP"]["previous"] - flat["rft/mAP"]["current"])
    flagged = next(r for r in summary["runs"] if r["status"] == "regressed")
    assert flagged["run_id"] == populated["rerun"]
    assert flagged["previous_run_id"] == populated["computed"][("rft", 4)][0]
    assert flagged["series"] == {"config": "coco_8cat", "model": QWEN, "method": "rft", "shots": 4}
    drops = {r["metric"]: r["drop_points"] for r in flagged["regressions"]}
    previous = populated["computed"][("rft", 4)][1]["mAP"]
    assert drops["mAP"] == pytest.approx(100 * (previous - populated["rerun_metrics"]["mAP"]))
    assert all(d > 1.0 for d in drops.values())
    assert {r["status"] for r in summary["runs"]} == {"regressed", "no_previous"}
    assert "REGRESSED coco_8cat" in report.markdown.read_text()

    uri, _ = mlflow_store
    result = check_regression(
        populated["rerun"], tracking_uri=uri, threshold_points=100.0, output_path=tmp_path / "nightly.json"
    )
    assert result.status == "ok" and "mAP" in result.compared  # nothing dropped by 100 points
    assert json.loads((tmp_path / "nightly.json").read_text())["status"] == "ok"
    first = check_regression(populated["computed"][("rft", 4)][0], tracking_uri=uri)
    assert first.status == "no_previous" and first.previous_run_id is None


def test_report_is_logged_to_mlflow(report, mlflow_store) -> None:
    uri, _ = mlflow_store
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(report.mlflow_run_id)
    assert run.data.tags["stage"] == "report" and run.data.tags["regression_status"] == "regressed"
    assert run.data.metrics["regressions"] == len(report.regression_summary["regressions"]) > 1
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/regression.json", "report/plots"} <= logged
