"""The local runner's robustness without a pipeline run (issue 21): what a killed run leaves behind is
closed or removed by the next one, a SIGKILLed task leaves no scratch files, a task never outlives a
run whose watchdog was killed too, a (nearly) full disk is named, a moved state directory keeps its
stage cache. Tasks here are small stand-in scripts run by the real :class:`TaskProcesses`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from vrft.experiment import load_experiment
from vrft.pipelines.local import runner
from vrft.pipelines.local.errors import PipelineFailed
from vrft.pipelines.local.runner import (
    OWNER_FILE,
    TaskProcesses,
    end_abandoned_runs,
    run_local,
    run_plan,
    storage_cause,
)
from vrft.pipelines.local.services import ServicesError, process_alive, process_start_time
from vrft.pipelines.local.supervisor import Supervisor
from vrft.pipelines.plan import build_plan
from vrft.tracking import Tracker

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "configs" / "default.yaml"

# A task that fills its scratch space the way a training does (tempfile, $VRFT_WORK_DIR), says
# where, then is SIGKILLed (nothing of its own cleanup runs): a fresh process runs this script, a
# forked one the probe's `sigkill` action (the same steps).
SIGKILLED_TASK = textwrap.dedent("""
    import os, signal, sys, tempfile
    scratch = tempfile.mkdtemp(prefix="vrft-sft-")
    open(os.path.join(scratch, "checkpoint.bin"), "wb").write(b"x" * 1_000_000)
    print(scratch, os.environ["VRFT_WORK_DIR"], flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")
PROBE = (
    "tests.pipelines.forkserver_probe"  # what a forked task runs here (tests/pipelines/forkserver_probe.py)
)


@pytest.mark.parametrize("fork", [False, True], ids=["fresh", "forked"])
def test_a_sigkilled_task_leaves_no_scratch_directory(tmp_path: Path, monkeypatch, fork: bool) -> None:
    monkeypatch.chdir(ROOT)
    spec = tmp_path / "run" / "tasks" / "01-sft" / "spec.json"
    spec.parent.mkdir(parents=True)
    spec.write_text("{}")
    tasks = TaskProcesses(Supervisor(), module=PROBE, preload=("json",), fork=fork)  # no watchdog
    tasks.command = [sys.executable, "-c", SIGKILLED_TASK]
    log_file = tmp_path / "task.log"
    with open(log_file, "w") as log:
        try:
            code = tasks.run(spec, {**os.environ, "PROBE_ACTION": "sigkill"}, log)
            assert (tasks.server is not None) == fork
        finally:
            tasks.close()
    assert code == -signal.SIGKILL
    scratch, work = [line for line in log_file.read_text().splitlines() if "vrft-sft-" in line][0].split()
    assert Path(scratch).parent == Path(work) == spec.parent / "work", (
        "scratch space is in the task's directory"
    )
    assert not Path(scratch).exists() and not Path(work).exists(), "the killed task's scratch space is left"


# Stands in for `vrft run`: starts its watchdog and one long task, prints the watchdog's pid, waits.
# The task writes its pid next to the spec (fresh: a script; forked: the probe's JSON, into the spec).
RUN_WITH_A_TASK = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from vrft.pipelines.local.runner import TaskProcesses
    from vrft.pipelines.local.supervisor import Supervisor
    spec, fork = Path(sys.argv[1]), sys.argv[2] == "forked"
    with Supervisor() as supervisor:
        tasks = TaskProcesses(supervisor, module="tests.pipelines.forkserver_probe", preload=("json",), fork=fork)
        tasks.command = [sys.executable, "-c",
                         "import os, sys, time; open(sys.argv[1] + '.pid', 'w').write(str(os.getpid())); time.sleep(300)"]
        print(json.dumps({"watchdog": supervisor._watchdog.pid}), flush=True)
        with open(os.devnull, "w") as log:
            tasks.run(spec, {**os.environ, "PROBE_ACTION": "sleep"}, log)
""")


def _task_pid(spec: Path, fork: bool) -> int | None:
    try:
        if fork:
            return int(json.loads(spec.read_text())["pid"])
        return int(Path(f"{spec}.pid").read_text())
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.parametrize("fork", [False, True], ids=["fresh", "forked"])
def test_a_task_dies_when_the_run_and_its_watchdog_are_both_sigkilled(tmp_path: Path, fork: bool) -> None:
    spec = tmp_path / "tasks" / "01-grpo" / "spec.json"
    spec.parent.mkdir(parents=True)
    spec.write_text("{}")
    run = subprocess.Popen(
        [sys.executable, "-c", RUN_WITH_A_TASK, str(spec), "forked" if fork else "fresh"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    task_pid = None
    try:
        watchdog = json.loads(run.stdout.readline())["watchdog"]
        deadline = time.monotonic() + 60
        while _task_pid(spec, fork) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        task_pid = _task_pid(spec, fork)
        assert task_pid is not None, "the task did not start"
        task_started = process_start_time(task_pid)
        os.kill(watchdog, signal.SIGKILL)
        run.kill()
        run.wait(30)
        deadline = time.monotonic() + 30
        while process_alive(task_pid, task_started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not process_alive(task_pid, task_started), "the task outlived its run and watchdog"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if task_pid is not None and process_alive(task_pid):
            os.kill(task_pid, signal.SIGKILL)


def test_runs_left_running_by_a_killed_run_are_closed_by_the_next(tmp_path: Path) -> None:
    state = tmp_path / "vrft"
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "artifacts"))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    owners = {
        "killed": {"pid": int(gone.stdout), "start_time": 1.0},  # its `vrft run` was SIGKILLed
        "alive": {"pid": os.getpid(), "start_time": process_start_time(os.getpid())},  # still running
    }
    runs = {}
    for name, owner in owners.items():
        (state / "runs" / name).mkdir(parents=True)
        (state / "runs" / name / OWNER_FILE).write_text(json.dumps(owner))
        (state / "runs" / name / "tasks" / "02-sft" / "work").mkdir(parents=True)  # a killed task's scratch
        parent = tracker.create_run("default", f"pipeline-{name}", {"run_id": name})
        stage = tracker.create_run("default", "sft", {"run_id": name}, parent_run_id=parent)
        runs[name] = (parent, stage)

    ended = end_abandoned_runs(state, tracker, current_run="now")
    client = tracker._client()
    status = {name: [client.get_run(r).info.status for r in ids] for name, ids in runs.items()}
    assert status == {"killed": ["FAILED", "KILLED"], "alive": ["RUNNING", "RUNNING"]}
    assert sorted(ended) == sorted(runs["killed"])
    assert "killed" in client.get_run(runs["killed"][1]).data.tags["error"]
    assert not (state / "runs" / "killed" / "tasks" / "02-sft" / "work").exists()
    assert (state / "runs" / "alive" / "tasks" / "02-sft" / "work").exists()


def test_a_nearly_full_disk_refuses_the_run_before_anything_starts(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        runner.shutil, "disk_usage", lambda path: SimpleNamespace(total=10 << 30, used=10 << 30, free=5 << 20)
    )
    with pytest.raises(ServicesError, match=r"only 5 MiB free on its disk") as err:
        run_local(DEFAULT, state_dir=tmp_path / "vrft")
    assert "\n" not in str(err.value) and str(tmp_path / "vrft") in str(err.value)
    assert not (tmp_path / "vrft" / "services").exists(), "services were started"


class _FailingTasks:
    where = "nowhere"

    def run(self, spec_file: Path, env: dict[str, str], log, stage: str | None = None) -> int:
        (spec_file.parent / "error.txt").write_text("ClientError: An error occurred (InternalError)\n")
        return 1


def test_a_task_failing_on_a_full_disk_names_the_cause(tmp_path: Path) -> None:
    state = tmp_path / "vrft"
    (state / "services").mkdir(parents=True)
    (state / "services" / "weed.log").write_text(
        "I1204 volume started\n"
        "E1204 23:10:01 needle write: write /x/vrft_1.dat: no space left on device\n"
        "I1204 heartbeat\n"
    )
    plan = build_plan(load_experiment(DEFAULT))
    with open(tmp_path / "log", "w") as log, pytest.raises(PipelineFailed) as err:
        run_plan(
            plan,
            run_id="r",
            state_dir=state,
            executor=_FailingTasks(),
            env={},
            cache=None,
            log=log,
            console=log,
        )
    message = str(err.value)
    assert "InternalError" in message and "no space left on device" in message and "weed.log" in message
    assert "\n" not in message
    assert storage_cause(tmp_path / "elsewhere") == ""
    # Any S3 error gets SeaweedFS's last error line; another error, nothing from weed.log.
    (state / "services" / "weed.log").write_text(
        "E1204 23:11:02 filer: store: database is locked\nI1204 ok\n"
    )
    assert "database is locked" in storage_cause(state, "ClientError: An error occurred (InternalError)")
    assert storage_cause(state, "ValueError: bad config") == ""


def test_a_moved_state_directory_keeps_its_stage_cache(tmp_path: Path) -> None:
    first = tmp_path / "a" / "mlflow.db"
    first.parent.mkdir()
    identity = Tracker(f"sqlite:///{first}").store_identity()
    moved = tmp_path / "b" / "moved" / "mlflow.db"
    moved.parent.mkdir(parents=True)
    shutil.move(first, moved)
    assert Tracker(f"sqlite:///{moved}").store_identity() == identity
    other = tmp_path / "c" / "mlflow.db"  # another store, even at a path
    other.parent.mkdir()
    assert Tracker(f"sqlite:///{other}").store_identity() != identity
