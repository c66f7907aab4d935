"""A local `vrft run` of a two-shot sweep: every iteration keeps its own artifacts, a swapped prefix
is caught by the manifest hash KFP carries, and a training-only change reuses the other stages."""

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from mlflow.tracking import MlflowClient

from vrft.components import evaluate as evaluate_component
from vrft.components.runtime import stage_config_json
from vrft.experiment import load_experiment
from vrft.pipelines.local import run_local
from vrft.storage import ArtifactIntegrityError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ["experiment.shots=[1,2]", "grpo.max_steps=2", "sft.max_steps=2", "grpo.save_steps=1", "sft.save_steps=1",
         "evaluate.max_eval_images=3", "dataset.train.n_images=32"]
STAGES = ("dataset/dataset", "grpo/grpo", "sft/sft", "evaluate-base/evaluation-base", "evaluate-sft/evaluation-sft",
          "evaluate-rft/evaluation-rft")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, default_run_with_services):
    state_dir = tmp_path_factory.mktemp("vrft-sweep")
    with default_run_with_services(state_dir, SWEEP) as (services, result):
        s3 = boto3.client("s3", endpoint_url=services.env()["AWS_ENDPOINT_URL"])
        yield SimpleNamespace(dir=state_dir, result=result, env=services.env(), s3=s3)


def keys(sweep, prefix: str) -> list[str]:
    pages = sweep.s3.get_paginator("list_objects_v2").paginate(Bucket="vrft", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def manifest_sha(sweep, prefix: str) -> str:
    body = sweep.s3.get_object(Bucket="vrft", Key=f"{prefix}manifest.json")["Body"].read()
    return hashlib.sha256(body).hexdigest()


def test_each_iteration_keeps_its_own_artifacts(sweep):
    run = f"runs/{sweep.result.run_id}"
    for stage in STAGES:
        one, two = f"{run}/shots-1/{stage}/", f"{run}/shots-2/{stage}/"
        assert f"{one}manifest.json" in keys(sweep, one) and f"{two}manifest.json" in keys(sweep, two), stage
    datasets = [json.loads(sweep.s3.get_object(Bucket="vrft", Key=f"{run}/shots-{k}/dataset/dataset/manifest.json")
                           ["Body"].read()) for k in (1, 2)]
    assert datasets[0]["files"] != datasets[1]["files"]  # two different datasets, neither overwritten
    for k in (1, 2):
        assert f"{run}/shots-{k}/grpo/grpo/final/model.safetensors" in keys(sweep, f"{run}/shots-{k}/grpo/")


def test_the_report_has_both_shot_counts(sweep):
    tables = json.loads((sweep.result.report_dir / "tables.json").read_text())
    rows = {(row["method"], row["shots"]) for table in tables for row in table["rows"]}
    assert {(m, k) for m in ("sft", "rft", "delta") for k in (1, 2)} <= rows
    assert any(method == "base" for method, _ in rows)  # the base model's row does not depend on shots


def test_a_prefix_swapped_for_another_iterations_fails_the_next_stage(sweep):
    run = f"runs/{sweep.result.run_id}"
    one, two = f"{run}/shots-1/dataset/dataset/", f"{run}/shots-2/dataset/dataset/"
    recorded = manifest_sha(sweep, two)  # what KFP recorded in the shots-2 dataset artifact's metadata
    saved = {key: sweep.s3.get_object(Bucket="vrft", Key=key)["Body"].read() for key in keys(sweep, two)}
    try:
        sweep.s3.delete_objects(Bucket="vrft", Delete={"Objects": [{"Key": k} for k in saved]})
        for key in keys(sweep, one):  # shots-1's complete, self-consistent dataset under shots-2's prefix
            sweep.s3.copy_object(Bucket="vrft", Key=two + key[len(one):], CopySource={"Bucket": "vrft", "Key": key})
        config = load_experiment(ROOT / "configs" / "default.yaml", [*SWEEP[1:], "dataset.shots=2"])
        dataset = SimpleNamespace(metadata={"uri": f"s3://vrft/{two}", "manifest_sha256": recorded})
        evaluation = SimpleNamespace(metadata={}, path=str(sweep.dir / "unused"), log_metric=lambda *a: None)
        with pytest.raises(ArtifactIntegrityError, match="manifest is not the one its writer published"):
            evaluate_component.run(stage_config_json(config, "evaluate"), "swap-check", "base", dataset, evaluation)
    finally:
        for key in keys(sweep, two):
            sweep.s3.delete_object(Bucket="vrft", Key=key)
        for key, body in saved.items():
            sweep.s3.put_object(Bucket="vrft", Key=key, Body=body)
    assert manifest_sha(sweep, two) == recorded


def test_changing_grpo_steps_reruns_only_grpo_and_its_evaluation(sweep):
    again = run_local(ROOT / "configs" / "default.yaml", [*SWEEP, "grpo.max_steps=3"], state_dir=sweep.dir,
                      output_dir=sweep.dir / "again")
    client = MlflowClient(tracking_uri=sweep.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("default")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    rerun = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == again.mlflow_parent_run_id)
    # The dataset, SFT and both evaluations that read nothing of grpo came from KFP's cache.
    assert rerun == ["evaluate-rft", "evaluate-rft", "grpo", "grpo", "report"]
    tables = json.loads((again.report_dir / "tables.json").read_text())
    rows = {(row["method"], row["shots"]) for table in tables for row in table["rows"]}
    assert {(m, k) for m in ("sft", "rft") for k in (1, 2)} <= rows
