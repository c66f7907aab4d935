"""How a local-process Airflow task runs the task entry point: in a process of its own, its output
printed into the task's log, stopped with its process group.

An Airflow deployment runs each task instance in a process of its own, so each task's process is a
fresh ``python -m vrft.pipelines.airflow.task``. ``airflow dags test`` (what ``vrft airflow test``
runs) runs every task of the DAG run in one process; with ``VRFT_FORK_SERVER=1``, which ``vrft
airflow test`` sets unless it is ``0``, that process starts a fork server
(:mod:`vrft.pipelines.local.forkserver`) at its first dataset, training or evaluation task and
forks that task and every later one from it, as ``vrft run`` does: each sees the same environment,
files and signals, without importing torch, transformers, trl, datasets and MLflow again. Imports no
Airflow.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys

from vrft.pipelines.local.forkserver import FORK_SERVER_ENV, PRELOAD, WARM_STAGES, ForkServer, ForkServerGone
from vrft.pipelines.local.supervisor import GRACE_SECONDS, terminate_groups

#: The task entry point every executor runs (``python -m ENTRY_MODULE``).
ENTRY_MODULE = "vrft.pipelines.airflow.task"

#: This process's fork server, once started; ``False`` once it failed (tasks then start fresh).
_server: ForkServer | None | bool = None


def forking_wanted(environ: dict[str, str] | None = None) -> bool:
    """Whether this process forks tasks: ``VRFT_FORK_SERVER=1`` (only ``airflow dags test`` runs
    several tasks in one process) on Linux."""
    environ = os.environ if environ is None else environ
    return environ.get(FORK_SERVER_ENV) == "1" and ForkServer.wanted(environ)


def run_entry_point(stage: str, argv: list[str], env: dict[str, str]) -> int:
    """Run ``python -m vrft.pipelines.airflow.task ARGV`` with ``env``; return its exit status
    (negative: the signal that ended it)."""
    server = _fork_server(env, start=stage in WARM_STAGES) if forking_wanted(env) else None
    if server is not None:
        readable, writable = os.pipe()
        try:
            with os.fdopen(writable, "wb") as output:  # the child's stdout and stderr; ours closes here
                pid = server.start(ENTRY_MODULE, argv, env, os.getcwd(), output)
        except ForkServerGone as gone:
            os.close(readable)
            print(f"{gone}; this and later tasks start as fresh processes", flush=True)
            _close_server(failed=True)
        except BaseException:  # stopped while starting: the server's answers would be out of step
            os.close(readable)
            _close_server()  # its end of input: it stops the task it may have forked
            raise
        else:
            return _wait_forked(server, pid, readable)
    return _run_fresh(argv, env)


def _fork_server(env: dict[str, str], start: bool) -> ForkServer | None:
    """This process's fork server; with ``start``, started if there is none yet (a collect or report
    task alone starts faster as a fresh process, but is forked from a server that is running)."""
    global _server
    if _server is None and start:
        # Its own output (one line, or why it stopped) goes to this process's stderr, not a task's.
        log = sys.__stderr__ if sys.__stderr__ is not None else open(os.devnull, "w")  # noqa: SIM115
        _server = ForkServer(env, None, log, PRELOAD)
        atexit.register(_close_server)
    return _server if isinstance(_server, ForkServer) else None


def _close_server(failed: bool = False, stop: bool = True) -> None:
    """Forget this process's fork server (``failed``: start no other) and, with ``stop``, end it."""
    global _server
    server, _server = _server, (False if failed else None)
    if stop and isinstance(server, ForkServer):
        server.close()


def _wait_forked(server: ForkServer, pid: int, readable: int) -> int:
    code = None
    try:
        with os.fdopen(readable, "r", errors="replace") as lines:
            for line in lines:
                print(line, end="", flush=True)
        code = server.wait()
        return code
    except ForkServerGone as gone:
        print(f"{gone}; later tasks start as fresh processes", flush=True)
        _close_server(failed=True)
        code = -signal.SIGTERM  # the server died, and with it (parent-death signal) the task
        return code
    finally:  # also when Airflow stops the task (timeout, kill)
        try:
            if code is None:  # its answer for this task would be read as the next task's: drop it
                _close_server(stop=False)
                terminate_groups([pid], GRACE_SECONDS)
            terminate_groups([pid], grace=0)  # what the task left in its group
        finally:
            if code is None:
                server.close()


def _run_fresh(argv: list[str], env: dict[str, str]) -> int:
    process = subprocess.Popen(
        [sys.executable, "-m", ENTRY_MODULE, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: stopped with whatever it started
        text=True,
        errors="replace",
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
        return process.wait()
    finally:  # also when Airflow stops the task (timeout, kill)
        if process.poll() is None:
            terminate_groups([process.pid], GRACE_SECONDS)
        terminate_groups([process.pid], grace=0)
        process.wait()
