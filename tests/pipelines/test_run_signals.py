"""`vrft run` killed mid-stage (SIGTERM, then SIGKILL): nothing of the run survives, no port stays
open, and the next run completes, reusing the stages that had finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from vrft.pipelines.local.forkserver import TASK_PROCESS_NAME
from vrft.pipelines.local.services import port_is_open, process_alive

ROOT = Path(__file__).resolve().parents[2]
FAST = [
    "grpo.max_steps=2",
    "sft.max_steps=2",
    "grpo.save_steps=1",
    "sft.save_steps=1",
    "evaluate.max_eval_images=3",
    "dataset.train.n_images=32",
]
MARK = "VRFT_TEST_RUN_MARK"

# Three runs of the pipeline (two cut short): minutes on an idle machine, over 30 min on a loaded one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def marked_processes(mark: str) -> list[int]:
    """Live processes whose environment carries ``MARK=mark``: everything the run started."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            marked = process.environ().get(MARK) == mark
        except psutil.Error:
            continue
        if marked and process_alive(process.pid):
            found.append(process.pid)
    return found


def wait_until(condition, timeout: float, poll: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()


def start_run(state_dir: Path, mark: str, out: Path) -> subprocess.Popen[str]:
    # A temp dir of the run's own: what it leaves there (kfp's ephemeral_component.py dirs) is its own.
    (state_dir / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, MARK: mark, "TMPDIR": str(state_dir / "tmp")}
    for key in ("MLFLOW_TRACKING_URI", "VRFT_ARTIFACT_ROOT", "AWS_ENDPOINT_URL", "VRFT_MLFLOW_PARENT_RUN_ID"):
        env.pop(key, None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vrft.cli",
            "run",
            str(ROOT / "configs" / "default.yaml"),
            *FAST,
            "--state-dir",
            str(state_dir),
            "--output-dir",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=state_dir,
    )


def stage_running(mark: str) -> bool:
    """Whether a task process of the marked run is running: ``python -m vrft.pipelines.local.task``
    or a task forked by the run's fork server (named ``vrft-task``)."""
    for pid in marked_processes(mark):
        try:
            process = psutil.Process(pid)
            if process.name() == TASK_PROCESS_NAME or "vrft.pipelines.local.task" in process.cmdline():
                return True
        except psutil.Error:
            continue
    return False


def kill_mid_stage(state_dir: Path, sig: int, stage: str) -> str:
    """Start a run, wait until ``stage`` runs, send ``sig`` to the `vrft run` process; check that
    nothing of the run survives; return its output."""
    mark = uuid.uuid4().hex
    run = start_run(state_dir, mark, state_dir / f"report-{sig}")
    try:
        assert run.stdout is not None
        lines = []
        for line in run.stdout:  # progress lines: "[1/8] Few-shot dataset (4 shots): running"
            lines.append(line)
            if f"] {stage} (" in line and line.rstrip().endswith(": running"):
                break
        else:
            pytest.fail(f"the run ended before {stage} started:\n{''.join(lines)}")
        state = json.loads((state_dir / "services" / "services.json").read_text())
        assert wait_until(lambda: stage_running(mark), 120), "the stage process did not start"
        run.send_signal(sig)
        rest, _ = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    output = "".join(lines) + rest
    assert run.returncode != 0
    assert wait_until(lambda: not marked_processes(mark), 60), (
        f"processes of the run survived {signal.Signals(sig).name}: {marked_processes(mark)}\n{output}"
    )
    assert wait_until(lambda: not [p for p in state["ports"].values() if port_is_open(p)], 30), (
        f"ports still open: {state['ports']}"
    )
    assert not process_alive(state["pid"], state["start_time"])
    return output


def test_sigterm_and_sigkill_mid_stage_leave_nothing_and_the_next_run_completes(short_tmp_path: Path) -> None:
    state_dir = short_tmp_path / "vrft"
    state_dir.mkdir()
    output = kill_mid_stage(state_dir, signal.SIGTERM, "Few-shot dataset")
    assert "Traceback" not in output and "vrft run: terminated by signal 15" in output, output[-3000:]

    # The dataset task completes this time; the run is killed during the next task.
    kill_mid_stage(state_dir, signal.SIGKILL, "GRPO with verifiable rewards (RFT)")

    mark = uuid.uuid4().hex
    final = start_run(state_dir, mark, state_dir / "report")
    output, _ = final.communicate(timeout=3000)
    assert final.returncode == 0, output[-4000:]
    assert (state_dir / "report" / "report.md").exists()
    # The dataset finished in the second run: it comes from the cache; the killed task runs again.
    assert "Few-shot dataset (4 shots): reused from run" in output, output
    assert "GRPO with verifiable rewards (RFT) (4 shots): running" in output
    assert wait_until(lambda: not marked_processes(mark), 60)
    assert not (state_dir / "services" / "services.json").exists()

    # What the killed runs left is closed or removed by the final one: no MLflow run stays RUNNING
    # (the SIGKILLed pipeline's parent run is FAILED), no task scratch directory is left, and no
    # kfp temp dir (ephemeral_component.py) was made at all.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{state_dir / 'services' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    assert [(r.info.run_name, r.info.status) for r in runs if r.info.status == "RUNNING"] == []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("run_id")]
    closed = [r for r in parents if "closed by a later run" in r.data.tags.get("error", "")]
    assert [r.info.status for r in closed] == ["FAILED"], [(r.info.run_name, r.info.status) for r in parents]
    assert list(state_dir.glob("runs/*/tasks/*/work")) == []
    assert list((state_dir / "tmp").rglob("ephemeral_component.py")) == []
