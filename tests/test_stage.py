"""The one stage wrapper: the stage's MLflow run with the run tags (FAILED or KILLED with the error), a
work dir that goes away, nothing tracked without a store; SIGTERM unwinds a stage process."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vrft.experiment import load_experiment
from vrft.signals import Terminated, restore_sigterm, unwind_on_sigterm
from vrft.stage import open_stage
from vrft.tracking import Tracker

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config():
    return load_experiment(ROOT / "configs" / "default.yaml", ["experiment.tags={team: vision}"])


def test_a_stage_run_carries_the_run_tags_and_its_work_dir_goes_away(config, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("VRFT_IMAGE", "registry/vrft-cpu:1")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "a").as_uri())
    with open_stage(
        "evaluate-sft", config, kind="evaluate", method="sft", run_id="r1", tracker=tracker
    ) as stage:
        work = stage.work_dir
        assert work.is_dir() and stage.local_dir("x") == work / "x"
    assert not work.exists()
    run = MlflowClient(tracker.tracking_uri).get_run(stage.mlflow_run_id)
    tags = run.data.tags
    assert run.info.status == "FINISHED" and run.info.run_name == "evaluate-sft"
    assert tags["stage"] == "evaluate" and tags["method"] == "sft" and "label" not in tags
    assert tags["seed"] == str(config.sft.seed) and tags["run_id"] == "r1" and tags["team"] == "vision"
    assert tags["image"] == "registry/vrft-cpu:1" and tags["config_sha256"] == config.digest()
    assert stage.tags == {k: v for k, v in tags.items() if not k.startswith("mlflow.")}


def test_a_failing_stage_ends_its_run_failed_and_an_untracked_one_logs_nothing(config, tmp_path):
    from mlflow.tracking import MlflowClient

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "a").as_uri())
    with pytest.raises(ValueError, match="bad rows"):
        with open_stage("dataset", config, tracker=tracker) as stage:
            raise ValueError("bad rows")
    run = MlflowClient(tracker.tracking_uri).get_run(stage.mlflow_run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "ValueError: bad rows"
    with open_stage("dataset", config, tracker=Tracker.off()) as untracked:
        assert untracked.mlflow_run_id is None


def test_sigterm_unwinds_only_where_nobody_handles_it_yet():
    previous = unwind_on_sigterm()
    try:
        assert unwind_on_sigterm(only_if_default=True) is None  # already taken over: left as it is
        with pytest.raises(Terminated, match="terminated by signal 15"):
            signal.raise_signal(signal.SIGTERM)
    finally:
        restore_sigterm(previous)


STAGE_PROCESS = textwrap.dedent("""
    import sys, time
    from vrft.experiment import load_experiment
    from vrft.stage import open_stage
    from vrft.tracking import Tracker
    config = load_experiment(sys.argv[1])
    with open_stage("dataset", config, tracker=Tracker.off()) as stage:
        print(stage.work_dir, flush=True)
        time.sleep(60)
""")


def test_a_stage_process_stopped_with_sigterm_leaves_no_work_dir(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", STAGE_PROCESS, str(ROOT / "configs" / "default.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    work = Path(process.stdout.readline().strip())
    assert work.is_dir()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert "Terminated" in err and not work.exists()  # unwound through the wrapper's cleanup
