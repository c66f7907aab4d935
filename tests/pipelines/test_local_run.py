"""End to end: the whole DAG on the tiny model with kfp's local runner, real S3 (SeaweedFS) and MLflow.

One pipeline run (module fixture) is inspected from several sides: the report, the MLflow runs,
the S3 objects and their manifests, secret hygiene, the cache on a second run, what happens
when an artifact is corrupted or a stage fails, and that a deliberately broken stage trips the
regression check and its notice.
"""

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from mlflow.tracking import MlflowClient

from vrft.components.runtime import iteration_key
from vrft.experiment import load_experiment
from vrft.pipelines.local import run_local
from vrft.storage import ArtifactIntegrityError

ROOT = Path(__file__).resolve().parents[2]
# The default (colour of a shape, the shipped pre-trained tiny base) with fewer steps and images.
FAST = ["grpo.max_steps=2", "sft.max_steps=2", "grpo.save_steps=1", "sft.save_steps=1",
        "evaluate.max_eval_images=8", "dataset.train.n_images=4"]
ITERATION = iteration_key(load_experiment(ROOT / "configs" / "default.yaml", FAST))  # its artifact prefix segment


@pytest.fixture(scope="module")
def state(tmp_path_factory, default_run_with_services):
    state_dir = tmp_path_factory.mktemp("vrft-state")
    with default_run_with_services(state_dir, FAST) as (services, result):
        yield SimpleNamespace(dir=state_dir, services=services, result=result, env=services.env())


def mlflow_runs(state):
    client = MlflowClient(tracking_uri=state.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("default")
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def test_report_has_base_sft_rft_rows(state):
    report = (state.result.report_dir / "report.md").read_text()
    for row in ("| Base |", "| SFT |", "| RFT |", "| Δ (RFT − SFT) |"):
        assert row in report
    assert (state.result.report_dir / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert list((state.result.report_dir / "plots").glob("*.png"))


def test_mlflow_holds_the_parent_and_every_stage_run(state):
    _, runs = mlflow_runs(state)
    parent = [r for r in runs if r.info.run_id == state.result.mlflow_parent_run_id]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == state.result.mlflow_parent_run_id]
    names = sorted(r.info.run_name for r in children)
    assert names == ["dataset", "evaluate-base", "evaluate-rft", "evaluate-sft", "grpo", "report", "sft"]
    assert all(r.info.status == "FINISHED" for r in children)
    by_name = {r.info.run_name: r for r in children}
    assert {by_name["grpo"].data.tags["method"], by_name["sft"].data.tags["method"]} == {"rft", "sft"}
    assert "rewards/classification_accuracy/mean" in by_name["grpo"].data.metrics
    assert "accuracy" in by_name["evaluate-rft"].data.metrics
    assert by_name["grpo"].data.params["grpo.max_steps"] == "2"


def test_every_stage_put_its_artifacts_with_a_manifest_in_s3(state):
    s3 = boto3.client("s3", endpoint_url=state.env["AWS_ENDPOINT_URL"])
    prefix = f"runs/{state.result.run_id}/{ITERATION}/"  # the config's one iteration
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="vrft", Prefix=prefix)["Contents"]]
    for stage in ("dataset/dataset", "grpo/grpo", "sft/sft", "evaluate-base/evaluation-base",
                  "evaluate-sft/evaluation-sft", "evaluate-rft/evaluation-rft", "report/report"):
        assert f"{prefix}{stage}/manifest.json" in keys, stage
    assert f"{prefix}grpo/grpo/final/model.safetensors" in keys
    assert not any("/checkpoint-" in k for k in keys)  # resumable states stay on the stage's disk


def test_no_secret_in_mlflow_store_or_logs(state):
    secret = state.env["AWS_SECRET_ACCESS_KEY"]
    assert len(secret) >= 16
    for path in [state.dir / "services" / "mlflow.db", state.result.log_file]:
        assert secret.encode() not in path.read_bytes(), path
    _, runs = mlflow_runs(state)
    for run in runs:
        assert secret not in json.dumps([run.data.params, run.data.tags, list(run.data.metrics)])


def test_second_run_reuses_cached_stages(state):
    again = run_local(ROOT / "configs" / "default.yaml", FAST, state_dir=state.dir, output_dir=state.dir / "again")
    log = again.log_file.read_text()
    assert "finished with status" in log and "Executing task" not in log, log[-2000:]  # nothing re-ran
    assert again.report_uri == state.result.report_uri  # the cached report, not a new one
    _, runs = mlflow_runs(state)
    assert not [r for r in runs if r.data.tags.get("mlflow.parentRunId") == again.mlflow_parent_run_id]


def test_corrupted_artifact_fails_the_next_stage_and_marks_its_run_failed(state):
    from vrft.components import evaluate as evaluate_component

    s3 = boto3.client("s3", endpoint_url=state.env["AWS_ENDPOINT_URL"])
    dataset_uri = f"s3://vrft/runs/{state.result.run_id}/{ITERATION}/dataset/dataset/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="vrft", Prefix=dataset_uri[len("s3://vrft/"):])["Contents"]]
    manifest = s3.get_object(Bucket="vrft", Key=dataset_uri[len("s3://vrft/"):] + "manifest.json")["Body"].read()
    victim = next(k for k in keys if k.endswith(".arrow"))
    original = s3.get_object(Bucket="vrft", Key=victim)["Body"].read()
    corrupted = bytearray(original)
    corrupted[len(corrupted) // 2] ^= 0xFF
    s3.put_object(Bucket="vrft", Key=victim, Body=bytes(corrupted))
    try:
        config = load_experiment(ROOT / "configs" / "default.yaml", FAST)
        dataset = SimpleNamespace(metadata={"uri": dataset_uri, "manifest_sha256": hashlib.sha256(manifest).hexdigest()})
        evaluation = SimpleNamespace(metadata={}, path=str(state.dir / "unused"), log_metric=lambda *a: None)
        with pytest.raises(ArtifactIntegrityError, match=victim.rsplit("/", 1)[1]):
            evaluate_component.run(config.to_json(), "corrupt-check", "base", dataset, evaluation)
    finally:
        s3.put_object(Bucket="vrft", Key=victim, Body=original)
    _, runs = mlflow_runs(state)
    failed = [r for r in runs if r.data.tags.get("run_id") == "corrupt-check"]
    assert [r.info.status for r in failed] == ["FAILED"]
    assert "ArtifactIntegrityError" in failed[0].data.tags["error"]


def test_a_failing_stage_stops_the_pipeline_with_a_clear_error(state, capsys):
    from vrft.pipelines.local import PipelineFailed

    with pytest.raises(PipelineFailed, match=r"dataset-stage.*See .*\.log"):
        run_local(ROOT / "configs" / "default.yaml", [*FAST, "dataset.shots=1000", "pipeline.retries=0"], state_dir=state.dir,
                  output_dir=state.dir / "never")
    assert not (state.dir / "never").exists()
    _, runs = mlflow_runs(state)
    failed = [r for r in runs if r.info.run_name == "dataset" and r.info.status == "FAILED"]
    assert failed and "shots" in failed[0].data.tags["error"]


# Imported by every Python process of the broken run (through PYTHONPATH), before any vrft module
# binds the name: the answer parser then finds no answer in any completion.
BROKEN_ANSWER_PARSER = """
import vrft.answers
vrft.answers.extract_answer = lambda text: None
"""


class _Webhook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Webhook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.timeout(900)
def test_a_broken_stage_flips_the_regression_check_and_writes_the_notice(state, tmp_path, monkeypatch):
    before = json.loads((state.result.report_dir / "regression.json").read_text())
    assert before["status"] == "ok" and not (state.result.report_dir / "regression-notice.md").exists()
    client, runs = mlflow_runs(state)
    base = next(r for r in runs if r.info.run_name == "evaluate-base"
                and r.data.tags.get("mlflow.parentRunId") == state.result.mlflow_parent_run_id)
    assert base.data.metrics["accuracy"] > 0.5 and base.data.metrics["format_rate"] > 0.9  # a drop can show

    (tmp_path / "sitecustomize.py").write_text(BROKEN_ANSWER_PARSER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("VRFT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    _Webhook.received.clear()
    try:
        broken = run_local(ROOT / "configs" / "default.yaml", [*FAST, "pipeline.caching=false"], state_dir=state.dir,
                           output_dir=state.dir / "broken")
    finally:
        server.shutdown()
    after = json.loads((broken.report_dir / "regression.json").read_text())
    assert after["status"] == "regressed"
    flagged = {item["metric"] for item in after["regressions"]}
    # The reward's strict match reads the answer through vrft's parser (the authors' containment rule,
    # `accuracy`, extracts the answer itself), so the broken parser shows there.
    assert {"base/accuracy_strict", "sft/accuracy_strict", "rft/accuracy_strict"} <= flagged, flagged
    assert "REGRESSED" in (broken.report_dir / "report.md").read_text()
    notice = (broken.report_dir / "regression-notice.md").read_text()
    assert "base/accuracy_strict" in notice and "regression" in notice
    assert [post["text"].strip() for post in _Webhook.received] == [notice.strip()]
