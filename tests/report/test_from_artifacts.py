"""The report from a pipeline run's own evaluation artifacts (issue 12): only its own numbers even
when other runs share the MLflow experiment, comparability refusal with a reason, seeds as
mean ± sd with Δ inside the spread flagged, the protocol and gate recall named, the HTML output."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from vrft.config import from_dict
from vrft.evaluate import load_result
from vrft.io import write_manifest
from vrft.report import ReportConfig, RunTags, build_report, log_evaluation

pytestmark = pytest.mark.timeout(180)

QWEN = "Qwen/Qwen2-VL-2B-Instruct"


def write_evaluation(
    directory: Path,
    label: str,
    metrics: dict[str, float],
    *,
    run: str,
    shots: int | None = 4,
    seed: int | None = None,
    mode: str = "existence_gated",
    split: str = "split-a",
    cap: int | None = None,
    config: str = "coco_8cat",
    task: str = "detection",
    gate_recall: float | None = 0.625,
) -> Path:
    """An evaluation output directory as evaluate_checkpoint writes it (metrics.json + manifest)."""
    directory.mkdir(parents=True)
    metrics = dict(metrics)
    details: dict = {"mode": mode, "ground_truth": "official"} if task == "detection" else {}
    if gate_recall is not None and task == "detection":
        metrics["existence/recall"] = gate_recall
        details["gate"] = {"source": f"base_model:{QWEN}", "recall": gate_recall}
    context = {
        "config": config,
        "model": QWEN,
        "run_id": run,
        "paper_table": "table3" if config == "coco_8cat" else "",
    }
    if shots is not None and label != "base":
        context["shots"] = str(shots)
    if seed is not None:
        context["seed"] = str(seed)
    summary = {
        "format": "vrft.evaluation/1",
        "label": label,
        "task": task,
        "backend": "hf",
        "model": {"name_or_path": QWEN},
        "context": {k: v for k, v in context.items() if v},
        "dataset": {"manifest_sha256": f"m-{run}", "eval_split_sha256": split},
        "metrics": metrics,
        "per_category": {},
        "details": details,
        "timing": {"seconds": 1.0},
        "config": {"max_eval_images": cap, "detection_mode": mode},
    }
    (directory / "metrics.json").write_text(json.dumps(summary))
    write_manifest(directory, {"format": "vrft.evaluation/1"})
    return directory


def _config(**values) -> ReportConfig:
    return from_dict(ReportConfig, {"log_to_mlflow": False, **values})


def _run(tmp: Path, run: str, numbers: dict[str, float], labels=("base", "sft", "rft")) -> list[Path]:
    return [
        write_evaluation(tmp / run / label, label, {"mAP": numbers[label], "AP/bus": numbers[label]}, run=run)
        for label in labels
    ]


def _table(result) -> dict:
    return result.tables[0].to_dict()


def _values(table: dict) -> dict[str, float]:
    return {r["method"]: r["values"]["mAP"] for r in table["rows"]}


def test_two_pipeline_runs_in_one_mlflow_experiment_each_report_shows_only_its_own(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = "shared"
    MlflowClient(tracking_uri=uri).create_experiment(
        experiment, artifact_location=(tmp_path / "mlruns").as_uri()
    )
    run_a = _run(tmp_path, "run-a", {"base": 0.20, "sft": 0.25, "rft": 0.40})
    run_b = _run(
        tmp_path, "run-b", {"base": 0.21, "sft": 0.30, "rft": 0.35}, labels=("base", "rft")
    )  # no SFT
    for run, dirs in (("run-a", run_a), ("run-b", run_b)):  # both runs log every evaluation to MLflow
        for directory in dirs:
            result = load_result(directory)
            mlflow_id = log_evaluation(
                result,
                RunTags(result.label, "coco_8cat", QWEN, shots=None if result.label == "base" else 4),
                experiment=experiment,
                tracking_uri=uri,
                artifacts=False,
            )
            MlflowClient(tracking_uri=uri).set_tag(mlflow_id, "run_id", run)

    report_a = build_report(
        _config(),
        tmp_path / "report-a",
        tracking_uri=uri,
        experiment=experiment,
        evaluations=run_a,
        run_id="run-a",
    )
    report_b = build_report(
        _config(),
        tmp_path / "report-b",
        tracking_uri=uri,
        experiment=experiment,
        evaluations=run_b,
        run_id="run-b",
    )
    assert _values(_table(report_a)) == pytest.approx({"base": 20.0, "sft": 25.0, "rft": 40.0, "delta": 15.0})
    # Run B evaluated no SFT: the row stays missing rather than being filled from run A.
    assert _values(_table(report_b)) == pytest.approx({"base": 21.0, "rft": 35.0})
    assert all(
        src.startswith(str(tmp_path / "run-b")) for r in _table(report_b)["rows"] for src in r["sources"]
    )
    markdown_b = report_b.markdown.read_text()
    assert "| SFT |" not in markdown_b and "25.0" not in markdown_b
    # MLflow still serves as history: run B's RFT is compared with run A's (another pipeline run).
    rft_check = next(r for r in report_b.regressions if r.series["method"] == "rft")
    assert rft_check.status == "regressed" and rft_check.regressions[0].drop_points == pytest.approx(5.0)
    # ... and reading the whole experiment (no evaluations given) would have mixed the runs.
    mixed = build_report(_config(), tmp_path / "mixed", tracking_uri=uri, experiment=experiment)
    assert {r["method"] for r in _table(mixed)["rows"]} == {"base", "sft", "rft", "delta"}


def test_rows_cite_the_sources_they_are_given_instead_of_the_local_copies(tmp_path: Path) -> None:
    dirs = _run(tmp_path, "r", {"base": 0.2, "sft": 0.3, "rft": 0.4})
    uris = [
        f"s3://vrft/runs/r/shots-4/evaluate-{label}/evaluation-{label}/" for label in ("base", "sft", "rft")
    ]
    rows = _table(build_report(_config(), tmp_path / "report", evaluations=dirs, sources=uris))["rows"]
    assert {r["method"]: r["sources"] for r in rows if r["method"] != "delta"} == {
        "base": [uris[0]],
        "sft": [uris[1]],
        "rft": [uris[2]],
    }
    with pytest.raises(ValueError, match="3 evaluation directories but 2 sources"):
        build_report(_config(), tmp_path / "short", evaluations=dirs, sources=uris[:2])
    with pytest.raises(ValueError, match="sources name evaluations"):
        build_report(
            _config(),
            tmp_path / "none",
            tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
            experiment="x",
            sources=uris,
        )


def test_rows_evaluated_differently_are_refused_with_a_reason(tmp_path: Path) -> None:
    dirs = [
        write_evaluation(tmp_path / "base", "base", {"mAP": 0.2}, run="r"),
        write_evaluation(tmp_path / "sft", "sft", {"mAP": 0.3}, run="r", mode="all_categories"),
        write_evaluation(tmp_path / "rft", "rft", {"mAP": 0.4}, run="r", cap=50),
        write_evaluation(tmp_path / "rft8", "rft", {"mAP": 0.5}, run="r", shots=8, split="split-b"),
    ]
    result = build_report(_config(), tmp_path / "report", evaluations=dirs)
    table = _table(result)
    assert [r["method"] for r in table["rows"]] == ["base"]
    notes = "\n".join(table["notes"])
    assert "Refused SFT 4-shot" in notes and "eval mode all_categories ≠ existence_gat" in notes
    assert "Refused RFT 4-shot" in notes and "image cap 50 ≠ all" in notes
    assert "Refused RFT 8-shot" in notes and "evaluated split split-b ≠ split-a" in notes
    assert "Refused SFT 4-shot" in result.markdown.read_text()


def test_seeds_show_mean_and_spread_and_a_delta_inside_the_spread_is_flagged(tmp_path: Path) -> None:
    dirs = [write_evaluation(tmp_path / "base", "base", {"mAP": 0.2}, run="r")]
    sft, rft = [0.30, 0.34, 0.32], [0.31, 0.37, 0.34]  # Δ 2.0 points, sd 2.0 and 3.0: inside the spread
    for seed, (s, r) in enumerate(zip(sft, rft, strict=True)):
        dirs.append(write_evaluation(tmp_path / f"sft{seed}", "sft", {"mAP": s}, run="r", seed=seed))
        dirs.append(write_evaluation(tmp_path / f"rft{seed}", "rft", {"mAP": r}, run="r", seed=seed))
    result = build_report(_config(), tmp_path / "report", evaluations=dirs)
    rows = {r["method"]: r for r in _table(result)["rows"]}
    assert rows["sft"]["n"] == rows["rft"]["n"] == 3 and rows["rft"]["seeds"] == ["0", "1", "2"]
    assert rows["sft"]["values"]["mAP"] == pytest.approx(32.0) and rows["sft"]["spread"][
        "mAP"
    ] == pytest.approx(2.0)
    assert rows["rft"]["spread"]["mAP"] == pytest.approx(3.0)
    assert (
        rows["delta"]["values"]["mAP"] == pytest.approx(2.0) and rows["delta"]["within_spread"]["mAP"] is True
    )
    markdown = result.markdown.read_text()
    assert "| SFT | 4 | 32.0 ± 2.0 |" in markdown and "+2.0 ± 3.6 ~" in markdown
    assert "inside the seeds' spread" in markdown


def test_single_seed_delta_is_not_presented_as_certain_and_protocol_and_gate_recall_are_named(
    tmp_path: Path,
) -> None:
    dirs = _run(tmp_path, "r", {"base": 0.2, "sft": 0.25, "rft": 0.4})
    result = build_report(_config(), tmp_path / "report", evaluations=dirs)
    notes = "\n".join(_table(result)["notes"])
    assert "One training seed per row" in notes
    assert (
        "one existence gate for every row, from base_model:Qwen/Qwen2-VL-2B-Instruct (recall 62.5%)" in notes
    )
    assert "Paper columns: same protocol as ours." in notes
    assert [c["key"] for c in _table(result)["columns"]][:2] == ["mAP", "existence/recall"]
    capped = [
        write_evaluation(tmp_path / "capped" / label, label, {"mAP": 0.3}, run="c", cap=100)
        for label in ("base", "sft", "rft")
    ]
    capped_notes = "\n".join(
        _table(build_report(_config(), tmp_path / "capped-report", evaluations=capped))["notes"]
    )
    assert (
        "Paper columns: NOT the same protocol — ours differs: only the first 100 eval images" in capped_notes
    )


def test_classification_table_shows_the_authors_accuracy_and_the_strict_one(tmp_path: Path) -> None:
    dirs = [
        write_evaluation(
            tmp_path / label,
            label,
            {"accuracy": 0.8, "accuracy_strict": 0.6},
            run="r",
            task="classification",
            config="cls_aircraft100",
        )
        for label in ("base", "sft", "rft")
    ]
    table = _table(build_report(_config(), tmp_path / "report", evaluations=dirs))
    assert [c["key"] for c in table["columns"]][:2] == ["accuracy", "accuracy_strict"]
    assert any("accuracy = the authors' rule" in n for n in table["notes"])


@pytest.mark.timeout(120)
def test_report_component_reads_the_collected_evaluations_and_writes_html_into_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vrft.components import evaluate as evaluate_component
    from vrft.components import report as report_component
    from vrft.experiment import load_experiment
    from vrft.io import MANIFEST_NAME, sha256_file
    from vrft.storage import ArtifactStore

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = (tmp_path / "store").as_uri()
    artifacts = {}
    for directory in _run(tmp_path, "r", {"base": 0.2, "sft": 0.25, "rft": 0.4}):
        uri = f"{root}/runs/r/{directory.name}/"
        ArtifactStore.from_uri(uri).upload_dir(directory, "")
        manifest_sha = sha256_file(directory / MANIFEST_NAME)
        artifacts[directory.name] = SimpleNamespace(metadata={"uri": uri, "manifest_sha256": manifest_sha})
    collected = SimpleNamespace(metadata={}, path=str(tmp_path / "collected.json"))
    evaluate_component.collect([(k, artifacts[k]) for k in ("base", "sft", "rft")], collected)
    config = load_experiment(
        Path(__file__).resolve().parents[2] / "configs" / "shapes_detection.yaml",
        [f"pipeline.artifact_root={root}", "report.log_to_mlflow=false"],
    )
    report = SimpleNamespace(metadata={}, path=str(tmp_path / "report.html"))
    report_component.run(config.to_json(), "r", collected, report)
    page = Path(report.path).read_text()
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page and "40.0" in page
    assert report.metadata["markdown"].endswith("report.md") and len(report.metadata["evaluations"]) == 3
