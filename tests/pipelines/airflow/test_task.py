"""The entry point every Airflow task runs: its spec, its parent run, a failure in one line."""

import subprocess
import sys

import pytest

from tests.pipelines.airflow.conftest import failing_dataset_task_env
from tests.pipelines.local_sweep import DEFAULT
from vrft.experiment import load_experiment
from vrft.pipelines.airflow.task import pipeline_run_id, task_spec
from vrft.pipelines.plan import build_plan


@pytest.mark.parametrize(
    "airflow_run_id, expected",
    [
        ("scheduled__2026-12-05T02:00:00+00:00", "airflow-scheduled-2026-12-05T02-00-00-00-00"),
        ("manual__2026-12-05T00:00:00.123456+00:00", "airflow-manual-2026-12-05T00-00-00-123456-00-00"),
        ("../../etc", "airflow-etc"),
    ],
)
def test_pipeline_run_ids_are_one_safe_path_segment(airflow_run_id, expected):
    from vrft.storage import run_prefix

    assert pipeline_run_id(airflow_run_id) == expected
    assert run_prefix("s3://vrft", expected, "dataset").endswith(f"/runs/{expected}/dataset/")


def test_a_task_without_its_upstream_output_is_refused():
    plan = build_plan(load_experiment(DEFAULT, ["dataset.shots=1"]))
    with pytest.raises(ValueError, match="input 'dataset'.*pushed no output 'dataset'"):
        task_spec(plan, "shots-1/grpo", {"shots-1.dataset": {"other": {}}}, "manual__1")


@pytest.mark.timeout(300)
def test_a_failing_task_fails_in_one_line_and_marks_its_parent_run_failed(tmp_path):
    """A dataset task that cannot be built (more shots than the source has) exits 1 with the stage's
    reason; the DAG run's parent run, created by this first task, ends FAILED with it."""
    from mlflow.tracking import MlflowClient

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = failing_dataset_task_env(tmp_path)
    work = tmp_path / "task"
    done = subprocess.run(
        [sys.executable, "-m", "vrft.pipelines.airflow.task", "--work-dir", str(work)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("vrft: task shots-1000/dataset (Few-shot dataset (1000 shots)) failed:")
        and "shots" in last
    )
    assert (work / "error.txt").is_file() and not (work / "outputs.json").exists()
    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("default").experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == "pipeline-airflow-manual-2026-12-05"]
    assert parent.info.status == "FAILED" and "shots" in parent.data.tags["error"]
    (child,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert child.info.run_name == "dataset" and child.info.status == "FAILED"
