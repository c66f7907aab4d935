"""The fork server of a local run (vrft.pipelines.local.forkserver): a forked task is the process a
fresh ``python -m MODULE ARGV`` would be — environment, directory, scratch space, session, umask,
signals, stdin, output, exit status — it stops on SIGTERM like one, and a run whose fork server is
gone goes on with fresh processes. (The end-to-end run and the SIGTERM/SIGKILL test of `vrft run`
use it with the real stages.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vrft.pipelines.local.forkserver import FORK_SERVER_ENV, ForkServer
from vrft.pipelines.local.runner import TaskProcesses
from vrft.pipelines.local.supervisor import Supervisor

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
PROBE = "tests.pipelines.forkserver_probe"
MODES = {"fresh": "0", "forked": "1"}


def task_env(action: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ONLY_IN_THE_RUN"}
    return {**env, "PROBE_ACTION": action, "ONLY_IN_THE_TASK": "yes"}


def run_probes(tmp_path: Path, mode: str, monkeypatch, actions=("3",)) -> tuple[list[dict], list[int], str]:
    """Run the probe once per action, as tasks of one executor; return what each saw, their exit
    statuses and the log."""
    monkeypatch.setenv(FORK_SERVER_ENV, MODES[mode])
    monkeypatch.setenv("ONLY_IN_THE_RUN", "the run's, not the task's")
    monkeypatch.chdir(ROOT)  # `python -m tests.pipelines...` resolves from the checkout, as the runner's cwd
    seen, codes = [], []
    tmp_path.mkdir(exist_ok=True)
    log_file = tmp_path / "run.log"
    with Supervisor() as supervisor, open(log_file, "a", encoding="utf-8") as log:
        executor = TaskProcesses(supervisor, module=PROBE, preload=("json",), fork=mode == "forked")
        try:
            for n, action in enumerate(actions):
                task_dir = tmp_path / f"task-{n}"
                task_dir.mkdir()
                out = task_dir / "seen.json"  # in the runner's call: the spec file
                monkeypatch.setenv("PROBE_ACTION", action)
                codes.append(executor.run(out, {**task_env(action)}, log))
                assert (executor.server is not None) == (mode == "forked")
                seen.append(json.loads(out.read_text()))
                # forked: a child of the server; fresh: a child of this process
                parent = executor.server.process.pid if executor.server is not None else os.getpid()
                assert seen[-1]["ppid"] == parent, mode
                assert not (task_dir / "work").exists(), "the task's scratch directory was left"
        finally:
            executor.close()
    return seen, codes, log_file.read_text()


def test_a_forked_task_sees_what_a_fresh_process_sees(tmp_path: Path, monkeypatch) -> None:
    results = {}
    for mode in MODES:
        [seen], [code], log = run_probes(tmp_path / mode, mode, monkeypatch, actions=["3"])
        work = str(tmp_path / mode / "task-0" / "work")
        assert code == 3, (mode, log)
        assert seen["pid"] == seen["pgid"] == seen["sid"], mode  # a session and process group of its own
        assert seen["umask"] == 0o077, mode
        assert seen["tempdir"] == seen["env"]["TMPDIR"] == seen["env"]["VRFT_WORK_DIR"] == work, mode
        assert seen["env"]["ONLY_IN_THE_TASK"] == "yes" and "ONLY_IN_THE_RUN" not in seen["env"], mode
        assert seen["cwd"] == str(ROOT), mode
        assert seen["argv"][0].endswith("forkserver_probe.py"), mode
        assert seen["argv"][1:] == [str(tmp_path / mode / "task-0" / "seen.json")], mode
        assert seen["name"] == "__main__" and seen["sigint"] and seen["sigterm"], mode
        assert seen["stdin"] == "", mode
        assert "probe 3: stdout" in log and "probe 3: stderr" in log, (mode, log)
        results[mode] = seen
    fresh, forked = results["fresh"], results["forked"]
    for key in ("TMPDIR", "VRFT_WORK_DIR", FORK_SERVER_ENV):  # the scratch directories and the switch itself
        fresh["env"].pop(key), forked["env"].pop(key)
    assert forked["env"] == fresh["env"]


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_to_a_tasks_group_stops_it_and_the_next_task_runs(tmp_path: Path, monkeypatch, mode) -> None:
    monkeypatch.setenv(FORK_SERVER_ENV, MODES[mode])
    monkeypatch.chdir(ROOT)
    codes: list[int] = []
    with Supervisor() as supervisor, open(tmp_path / "run.log", "a", encoding="utf-8") as log:
        executor = TaskProcesses(supervisor, module=PROBE, preload=("json",), fork=mode == "forked")
        try:
            for n, action in enumerate(["sleep", "0"]):
                (tmp_path / f"task-{n}").mkdir()
                out = tmp_path / f"task-{n}" / "seen.json"
                monkeypatch.setenv("PROBE_ACTION", action)
                env = task_env(action)
                if action == "sleep":
                    worker = threading.Thread(
                        target=lambda out=out, env=env: codes.append(executor.run(out, env, log))
                    )
                    worker.start()
                    deadline = time.monotonic() + 60
                    while not out.exists() and time.monotonic() < deadline:
                        time.sleep(0.05)
                    time.sleep(0.2)  # the JSON is complete once the lines are printed
                    assert (executor.server is not None) == (mode == "forked")
                    os.killpg(json.loads(out.read_text())["pgid"], signal.SIGTERM)
                    worker.join(60)
                    assert not worker.is_alive()
                else:
                    codes.append(executor.run(out, env, log))
        finally:
            executor.close()
    assert codes == [-signal.SIGTERM, 0]
    assert supervisor.groups == set()


def test_when_the_fork_server_is_gone_tasks_start_as_fresh_processes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    codes = []
    with Supervisor() as supervisor, open(tmp_path / "run.log", "a", encoding="utf-8") as log:
        executor = TaskProcesses(supervisor, module=PROBE, preload=("json",), fork=True)
        for n, action in enumerate(["4", "5", "6"]):
            (tmp_path / f"task-{n}").mkdir()
            codes.append(executor.run(tmp_path / f"task-{n}" / "seen.json", task_env(action), log))
            if n == 0:
                server = executor.server
                assert server is not None
                server.process.kill()
                server.process.wait()
        assert executor.server is None and not executor.fork  # not started again
        executor.close()
    assert codes == [4, 5, 6]
    log_text = (tmp_path / "run.log").read_text()
    assert f"the fork server (pid {server.process.pid})" in log_text
    assert "this and later tasks start as fresh processes" in log_text and "probe 6: stdout" in log_text


def test_a_server_that_ends_before_reading_the_request_leaves_the_task_to_a_fresh_process(
    tmp_path: Path, monkeypatch
) -> None:
    """The server ends while it imports (a crash, the OOM killer, CUDA set up by an import): the
    request is still unread, the runner's read fails (connection reset) and the task runs fresh."""
    monkeypatch.chdir(ROOT)
    with Supervisor() as supervisor, open(tmp_path / "run.log", "a", encoding="utf-8") as log:
        executor = TaskProcesses(supervisor, module=PROBE, preload=(PROBE,), fork=True)
        (tmp_path / "task").mkdir()
        env = {**task_env("7"), "PROBE_CRASH_IN_FORK_SERVER": "1"}
        code = executor.run(tmp_path / "task" / "seen.json", env, log)
        assert executor.server is None and not executor.fork
    assert code == 7
    assert json.loads((tmp_path / "task" / "seen.json").read_text())["ppid"] == os.getpid()
    assert "this and later tasks start as fresh processes" in (tmp_path / "run.log").read_text()


def test_only_dataset_training_and_evaluation_tasks_start_the_server(tmp_path: Path, monkeypatch) -> None:
    """A run whose heavy stages all come from the cache runs its collect and report tasks as fresh
    processes: starting the server (importing torch, trl, ...) would cost more than they do."""
    monkeypatch.chdir(ROOT)
    started = []
    with Supervisor() as supervisor, open(tmp_path / "run.log", "a", encoding="utf-8") as log:
        executor = TaskProcesses(supervisor, module=PROBE, preload=("json",), fork=True)
        try:
            for n, stage in enumerate(["collect", "report", "evaluate", "report"]):
                out = tmp_path / f"task-{n}" / "seen.json"
                out.parent.mkdir()
                assert executor.run(out, task_env("0"), log, stage=stage) == 0
                started.append(executor.server is not None)
        finally:
            executor.close()
    assert started == [False, False, True, True]


def test_the_fork_server_is_linux_only_and_can_be_switched_off(monkeypatch) -> None:
    assert ForkServer.wanted({}) == (os.uname().sysname == "Linux")
    assert not ForkServer.wanted({FORK_SERVER_ENV: "0"})


def test_preload_imports_calls_and_freezes_what_it_loaded() -> None:
    """``module:function`` entries are called after the import (S3's service description is parsed
    once, in the server); what fails is named, not raised; what was loaded is frozen out of the
    collector's reach, so a task's ``gc.collect()`` (accelerate's, after every training) does not walk
    it. In a fresh interpreter: freezing is for the server's life."""
    probe = (
        "import gc, json\n"
        "from vrft.pipelines.local.forkserver import preload\n"
        "failed = preload(('json', 'vrft.storage:load_s3_description', 'no_such_module', 'json:no_such'))\n"
        "import vrft.storage\n"
        "print(json.dumps([failed, vrft.storage._BOTO3_SESSION is not None, gc.get_freeze_count() > 10000]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [["no_such_module", "json:no_such"], True, True]
