"""Nightly reruns in the report (issue 19): the regression check compares each row with what the
previous pipeline run of the benchmark reported (naming it, with deltas, 0.0 for a reused
evaluation), the report says which run each result came from, and the pipeline run in MLflow
carries the RFT vs SFT comparison as its own metrics, the report as its artifact, and the
experiment the kind that opens MLflow's UI on its runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from vrft.config import from_dict
from vrft.evaluate import load_result
from vrft.io import write_manifest
from vrft.report import ReportConfig, RunTags, build_report, log_evaluation
from vrft.report.build import log_on_pipeline_run
from vrft.report.comparison import comparison_metrics, comparison_url, producing_run
from vrft.tracking import PARENT_RUN_ENV, Tracker

pytestmark = pytest.mark.timeout(300)

QWEN = "Qwen/Qwen2-VL-2B-Instruct"
EXPERIMENT = "nightly"
LABELS = ("base", "sft", "rft")


def write_evaluation(directory: Path, label: str, value: float, run: str) -> Path:
    """An evaluation output directory as evaluate_checkpoint writes it (metrics.json + manifest)."""
    directory.mkdir(parents=True)
    context = {
        "config": "nightly",
        "model": QWEN,
        "run_id": run,
        **({"shots": "4"} if label != "base" else {}),
    }
    summary = {
        "format": "vrft.evaluation/1",
        "label": label,
        "task": "detection",
        "backend": "hf",
        "model": {"name_or_path": QWEN},
        "context": context,
        "dataset": {"manifest_sha256": "m", "eval_split_sha256": "split"},
        "metrics": {"mAP": value, "AP/bus": value},
        "per_category": {},
        "details": {"mode": "existence_gated", "ground_truth": "official"},
        "timing": {"seconds": 1.0},
        "config": {"max_eval_images": None, "detection_mode": "existence_gated"},
    }
    (directory / "metrics.json").write_text(json.dumps(summary))
    write_manifest(directory, {"format": "vrft.evaluation/1"})
    return directory


class Benchmark:
    """One MLflow store; pipeline runs whose evaluations ran (logged, like the evaluate stage) or were
    reused from an earlier run (the earlier artifacts, as the stage cache hands them on)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.uri = f"sqlite:///{tmp}/mlflow.db"
        MlflowClient(tracking_uri=self.uri).create_experiment(
            EXPERIMENT, artifact_location=(tmp / "mlruns").as_uri()
        )
        self.evaluations: dict[str, tuple[Path, str]] = {}  # "run/label" -> (directory, URI)

    def evaluate(self, run: str, label: str, value: float) -> None:
        directory = write_evaluation(self.tmp / run / label, label, value, run)
        result = load_result(directory)
        mlflow_id = log_evaluation(
            result,
            RunTags(label, "nightly", QWEN, shots=None if label == "base" else 4),
            experiment=EXPERIMENT,
            tracking_uri=self.uri,
            artifacts=False,
        )
        MlflowClient(tracking_uri=self.uri).set_tag(mlflow_id, "run_id", run)
        uri = f"s3://vrft/runs/{run}/shots-4/evaluate-{label}/evaluation-{label}/"
        self.evaluations[f"{run}/{label}"] = (directory, uri)

    def report(self, run: str, shown: dict[str, str]):
        """Run ``run``'s report over the evaluations ``shown`` (label -> the run that made it) and
        record it on its pipeline run, as the report stage does."""
        picked = [self.evaluations[f"{shown[label]}/{label}"] for label in LABELS]
        result = build_report(
            from_dict(ReportConfig, {"log_to_mlflow": False}),
            self.tmp / f"report-{run}",
            tracking_uri=self.uri,
            experiment=EXPERIMENT,
            evaluations=[d for d, _ in picked],
            sources=[u for _, u in picked],
            run_id=run,
            overwrite=True,
        )
        parent = log_on_pipeline_run(Tracker(self.uri), result, EXPERIMENT, "nightly")
        return result, parent

    @staticmethod
    def check(result, method: str):
        return next(r for r in result.regressions if r.series["method"] == method)


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Benchmark:
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)  # no runner around: the report makes the parent
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Benchmark(tmp_path)


def test_a_rerun_that_reused_everything_names_the_previous_run_with_zero_deltas(bench: Benchmark) -> None:
    for label, value in zip(LABELS, (0.20, 0.25, 0.40), strict=True):
        bench.evaluate("run-a", label, value)
    first, _ = bench.report("run-a", dict.fromkeys(LABELS, "run-a"))
    assert {r.status for r in first.regressions} == {"no_previous"}

    second, _ = bench.report("run-b", dict.fromkeys(LABELS, "run-a"))  # every stage reused
    for method in LABELS:
        check = bench.check(second, method)
        assert check.status == "ok" and check.previous_pipeline_run == "run-a"
        assert check.evaluated_in == "run-a" and check.headline == "mAP"
        assert check.deltas == {"AP/bus": 0.0, "mAP": 0.0}
    markdown = second.markdown.read_text()
    assert "no previous run" not in markdown
    assert (
        "ok nightly / Qwen/Qwen2-VL-2B-Instruct / rft / 4-shot vs run run-a (evaluation reused from run run-a)"
        in markdown
    )
    assert "mAP 40.0 → 40.0 (Δ +0.0)" in markdown
    assert "shots-4 evaluate-rft: reused from run run-a" in markdown
    html = second.html.read_text()
    assert "vs run run-a" in html and "Where the results come from" in html
    summary = json.loads((second.output_dir / "regression.json").read_text())
    assert {r["previous_pipeline_run"] for r in summary["runs"]} == {"run-a"}


def test_the_previous_run_is_what_the_last_report_showed_even_when_it_reused(bench: Benchmark) -> None:
    for label, value in zip(LABELS, (0.20, 0.25, 0.40), strict=True):
        bench.evaluate("run-a", label, value)
    bench.report("run-a", dict.fromkeys(LABELS, "run-a"))
    # run-c retrained RFT (a change) and scored lower ...
    bench.evaluate("run-c", "rft", 0.30)
    third, _ = bench.report("run-c", {"base": "run-a", "sft": "run-a", "rft": "run-c"})
    rft = bench.check(third, "rft")
    assert rft.status == "regressed" and rft.previous_pipeline_run == "run-a"
    assert rft.deltas["mAP"] == pytest.approx(-0.10) and rft.evaluated_in == "run-c"
    # ... run-d reverted the change: the cache hands back run-a's RFT; compared with run-c's report.
    fourth, _ = bench.report("run-d", dict.fromkeys(LABELS, "run-a"))
    rft = bench.check(fourth, "rft")
    assert (rft.status, rft.previous_pipeline_run) == ("ok", "run-c")
    assert rft.deltas["mAP"] == pytest.approx(0.10)
    # run-e reuses run-a's again: compared with run-d, which showed the same numbers (not with run-c,
    # the newest evaluation another pipeline run logged).
    fifth, _ = bench.report("run-e", dict.fromkeys(LABELS, "run-a"))
    rft = bench.check(fifth, "rft")
    assert (rft.previous_pipeline_run, rft.deltas["mAP"]) == ("run-d", 0.0)


def test_the_pipeline_run_carries_the_comparison_and_the_report(bench: Benchmark) -> None:
    for label, value in zip(LABELS, (0.20, 0.25, 0.40), strict=True):
        bench.evaluate("run-a", label, value)
    result, parent = bench.report("run-a", dict.fromkeys(LABELS, "run-a"))
    client = MlflowClient(tracking_uri=bench.uri)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "pipeline"
    assert run.data.tags["run_id"] == "run-a" and run.data.tags["config"] == "nightly"
    assert run.data.metrics == pytest.approx(
        {
            "shots-4/mAP/base": 20.0,
            "shots-4/mAP/sft": 25.0,
            "shots-4/mAP/rft": 40.0,
            "shots-4/mAP/rft_minus_sft": 15.0,
        }
    )
    assert comparison_metrics(result.tables) == run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.html", "report/report.md", "report/regression.json"} <= artifacts
    assert json.loads(run.data.tags["evaluation_runs"])  # what the next run compares with
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags["mlflow.experimentKind"] == "finetuning"  # also on one vrft did not make
    # The view the comparison link opens: the pipeline runs with these metrics as columns.
    view = json.loads(experiment.tags["mlflow.sharedViewState.vrft-rft-vs-sft"])
    assert view["searchFilter"] == "tags.stage = 'pipeline'"
    assert view["selectedColumns"] == [f"metrics.`{key}`" for key in comparison_metrics(result.tables)]
    # A second report of the same pipeline run writes into the same parent run.
    _, again = bench.report("run-a", dict.fromkeys(LABELS, "run-a"))
    assert again == parent


def test_the_experiment_kind_is_set_on_experiments_vrft_creates(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = Tracker(uri, artifact_root=(tmp_path / "artifacts").as_uri()).experiment_id("fresh")
    experiment = MlflowClient(tracking_uri=uri).get_experiment(experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "finetuning"
    MlflowClient(tracking_uri=uri).set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom")
    Tracker(uri).experiment_id("fresh")  # a kind someone chose stays
    assert (
        MlflowClient(tracking_uri=uri).get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom"
    )


def test_comparison_url_and_producing_run() -> None:
    assert comparison_url("7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
        "&viewStateShareKey=vrft-rft-vs-sft"
    )
    assert comparison_url("7", "http://h:1/", chart=True).endswith("&compareRunsMode=CHART")
    assert producing_run("s3://vrft/runs/R1/shots-2/grpo/grpo/") == ("R1", "shots-2", "grpo")
    assert producing_run("/tmp/evaluation-rft") == ("", "", "")
