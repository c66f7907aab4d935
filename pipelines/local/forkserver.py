"""A warm start for the tasks of a local run: one process imports the stage libraries, each task is a fork of it.

A task process spends most of its life importing: torch, transformers, trl, datasets and MLflow take
6–8 s per process on a 2-core machine, while a stage of the embedded default computes for well
under a second. So a run starts one *fork server* (``python -m vrft.pipelines.local.forkserver FD
MODULE...``) when its first dataset, training or evaluation task runs: it imports :data:`PRELOAD`
once, then forks one child per task on request. The child becomes what ``python -m
vrft.pipelines.local.task SPEC`` would have been:

* a session and process group of its own (the runner and the watchdog stop tasks by group), umask
  077, a SIGTERM when the fork server dies (the server stops its task and exits when the run's end
  of the socket closes), the process name ``vrft-task`` (its command line is still the server's);
* stdin from /dev/null, stdout and stderr to the run's log (its descriptor passed over the socket);
* exactly the task's environment and working directory (``os.environ`` replaced, ``tempfile``
  re-reading ``TMPDIR``), Python's default SIGINT/SIGTERM handling, the task's ``sys.argv``;
* its exit status the task's (``os._exit`` after what interpreter exit does: non-daemon threads
  joined, exit handlers run, buffers flushed), reported back by the fork server, which reaps it.

The server is started with the run's environment, so what a library reads from the environment while
it is imported (``PYTHONPATH``'s ``sitecustomize``, Hugging Face's offline switches) is what a plain
task process would read: within one run only ``TMPDIR`` and the work directory differ between tasks.
A module that fails to import is skipped (the task then imports it itself and reports the error).
Nothing else is shared: the server only imports (and, for ``module:function`` entries of
:data:`PRELOAD`, loads what every task would load again: S3's service description), freezes what it
loaded out of the garbage collector's reach, and forks from its one thread.

Protocol, on a Unix socket pair: the runner sends one JSON line per task
(``{"module", "argv", "env", "cwd"}``: ``python -m MODULE ARGV``) with the log's descriptor
attached; the server answers
``{"pid": N}`` once the child exists and ``{"exit": CODE}`` when it has ended (``CODE`` as
``Popen.returncode``: negative for a signal). End of input: the server exits.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import logging
import os
import runpy
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

#: What a task imports on its way to the stage function: the stage libraries, heaviest first, and
#: what the task entry points import, but not the entry points themselves (runpy warns in the task's
#: log when the module it runs as ``__main__`` is already imported). ``module:function``: import, then
#: call the function (what every task would otherwise load again: S3's service description).
PRELOAD = (
    "torch",
    "transformers",
    "trl",
    "datasets",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "git",  # MLflow records the source's commit of every run it starts
    "boto3",
    "vrft.models.loading",
    "vrft.train.grpo",
    "vrft.train.sft",
    "vrft.evaluate.run",
    "vrft.data.build",
    "vrft.report.build",
    "vrft.pipelines.plan",
    "vrft.signals",
    "vrft.components.dataset",
    "vrft.components.evaluate",
    "vrft.components.train",
    "vrft.components.report",
    "vrft.storage:load_s3_description",
)
#: Stages whose imports (torch, transformers, trl, datasets) cost more than starting the server;
#: ``collect`` and ``report`` alone start faster as fresh processes.
WARM_STAGES = frozenset({"dataset", "grpo", "sft", "evaluate"})
#: The largest request line (a task's environment) the server reads.
MAX_REQUEST_BYTES = 1 << 20


def preload(modules: tuple[str, ...]) -> list[str]:
    """Import ``modules`` (and call ``module:function`` entries' functions); return those that failed
    (the task will meet the same error itself)."""
    failed = []
    for entry in modules:
        name, _, function = entry.partition(":")
        try:
            module = importlib.import_module(name)
            if function:
                getattr(module, function)()
        except Exception:  # noqa: BLE001 - a broken import is the task's to report, not the server's
            failed.append(entry)
    # What was loaded stays for the server's life: out of the collector's reach, a task's collections
    # (accelerate collects after every training) do not walk it, nor copy its pages into the task.
    # Garbage is collected first: frozen, it would live in the server and every task.
    gc.collect()
    gc.freeze()
    return failed


#: The forked task's process name (``ps -o comm``, ``top``; its command line stays the server's).
TASK_PROCESS_NAME = "vrft-task"
PR_SET_NAME = 15


def _name_setter() -> Any:
    """A function naming this process (Linux ``prctl(PR_SET_NAME)``), resolved before any fork."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda name: None
    return lambda name: prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def _libc_fflush() -> None:
    """Flush the C library's stdio buffers (what a C extension printed), as interpreter exit does."""
    import ctypes

    ctypes.CDLL(None).fflush(None)


def _child(request: dict[str, Any], log_fd: int, die_with_parent: Any, set_name: Any) -> int:
    """In the forked child: become the task process described by ``request``; return its exit code."""
    os.setsid()
    set_name(TASK_PROCESS_NAME)
    os.umask(0o077)
    if die_with_parent is not None:
        die_with_parent()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # read TMPDIR again: the task's own scratch directory
    os.chdir(request["cwd"])
    sys.argv = ["-m", *request["argv"]]  # runpy puts the module's file first, as `python -m` does
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:  # what the interpreter makes of sys.exit(...)
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    return 0


def _run_child(request: dict[str, Any], log_fd: int, die_with_parent: Any, set_name: Any) -> None:
    """The forked child's whole life: never returns into the server's loop."""
    code = 1
    try:
        code = _child(request, log_fd, die_with_parent, set_name)
    except BaseException:  # what the interpreter prints for an uncaught exception
        traceback.print_exc()
    finally:  # what interpreter exit does: wait for non-daemon threads, run the exit handlers, flush
        with contextlib.suppress(BaseException):
            threading._shutdown()  # type: ignore[attr-defined]
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()  # MLflow's end of open runs, multiprocessing's children, logging
            logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        with contextlib.suppress(BaseException):
            _libc_fflush()
        os._exit(code)


def serve(channel: socket.socket) -> None:
    """Answer task requests on ``channel`` until it closes."""
    from vrft.pipelines.local.services import die_with_parent_preexec

    die_with_parent = die_with_parent_preexec()
    set_name = _name_setter()
    while True:
        with contextlib.suppress(OSError):
            sys.stdout.flush()
            sys.stderr.flush()
        message, fds, _, _ = socket.recv_fds(channel, MAX_REQUEST_BYTES, 1)
        if not message:
            return
        buffer = message
        while not buffer.endswith(b"\n"):  # a large environment arrives in pieces
            more = channel.recv(MAX_REQUEST_BYTES)
            if not more:
                return
            buffer += more
        request = json.loads(buffer)
        [log_fd] = fds
        if _runner_gone(channel):  # it sent the request, then ended: nobody waits for this task
            return
        pid = os.fork()
        if pid == 0:
            channel.close()
            _run_child(request, log_fd, die_with_parent, set_name)
        os.close(log_fd)
        channel.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        status = _wait_child(pid, channel)
        if status is None:  # the runner is gone: its task went with it
            return
        channel.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")


def _runner_gone(channel: socket.socket) -> bool:
    """Whether the runner's end of ``channel`` has closed with nothing left to read."""
    import select

    if not select.select([channel], [], [], 0)[0]:
        return False
    try:
        return not channel.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True


def _wait_child(pid: int, channel: socket.socket, grace: float = 10.0) -> int | None:
    """Wait for the child ``pid`` and return its wait status; if the runner's end of ``channel``
    closes first (the run was killed, whichever thread started this server), stop the child's group
    (SIGTERM, SIGKILL after ``grace`` seconds) and return ``None``."""
    import select

    pidfd = None
    with contextlib.suppress(AttributeError, OSError):  # Linux >= 5.3; otherwise poll every 0.1 s
        pidfd = os.pidfd_open(pid)
    watch_channel = True
    try:
        while True:
            waiting = ([channel] if watch_channel else []) + ([pidfd] if pidfd is not None else [])
            readable, _, _ = select.select(waiting, [], [], None if pidfd is not None else 0.1)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if channel in readable:
                if _runner_gone(channel):
                    break
                watch_channel = False  # a request before the answer breaks the protocol: ignore it
    finally:
        if pidfd is not None:
            os.close(pidfd)
    from vrft.pipelines.local.supervisor import terminate_groups

    terminate_groups([pid], grace)  # an unreaped child counts as ended once it is a zombie
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return None


def _cuda_driver_loaded() -> bool:
    """Whether CUDA was set up in this process: torch's own flag, or the driver library mapped (a
    device count asked of the runtime loads it without setting torch's flag)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return True
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any("libcuda.so" in line for line in maps)
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or not args[0].isdigit():
        print("usage: python -m vrft.pipelines.local.forkserver FD [MODULE ...]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides when tasks stop
    channel = socket.socket(fileno=int(args[0]))
    # A library that asks torch whether CUDA is there while it is imported must not initialise the
    # CUDA driver here: a forked child could not use it. NVML answers without initialising it.
    ours = "PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    started = time.monotonic()
    failed = preload(tuple(args[1:]))
    imported = {entry.partition(":")[0] for entry in args[1:] if entry not in failed}
    print(
        f"fork server (pid {os.getpid()}): imported {len(imported)} modules in "
        f"{time.monotonic() - started:.1f} s; tasks are forked from it",
        file=sys.stderr,
        flush=True,
    )
    if ours:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK")
    if failed:
        print(f"fork server: not preloaded (tasks import them): {', '.join(failed)}", file=sys.stderr)
    if _cuda_driver_loaded():
        print(
            "fork server: CUDA was initialised while importing; tasks start as fresh processes",
            file=sys.stderr,
        )
        return 3
    try:
        serve(channel)
    except (OSError, ValueError) as exc:  # the runner went away mid-message
        print(f"fork server: stopped: {exc}", file=sys.stderr)
        return 1
    return 0


#: ``0`` runs every task as a fresh interpreter instead (slower; for a library that misbehaves when
#: forked). ``vrft run`` forks unless it is ``0``; an Airflow task process only when it is ``1``
#: (:mod:`vrft.pipelines.airflow.processes`: ``vrft airflow test`` sets it for ``airflow dags test``).
FORK_SERVER_ENV = "VRFT_FORK_SERVER"


class ForkServerGone(RuntimeError):
    """The fork server ended (or never answered): the task was not started by it."""


class ForkServer:
    """The runner's end of a fork server: started with the run's environment, one task at a time.

    Registered with the run's :class:`~vrft.pipelines.local.supervisor.Supervisor` like a task's
    process group. It never outlives the run: when the run's end of the socket closes (the run
    ended or was killed, even by SIGKILL) the server stops the task it is running and exits.
    """

    def __init__(
        self, env: dict[str, str], supervisor: Any | None, log: Any, modules: tuple[str, ...] = PRELOAD
    ) -> None:
        """``supervisor``: the run's watchdog registry (``None`` where there is none: an Airflow
        task process stops its tasks itself); ``log``: where the server's own output goes."""
        import subprocess

        self.supervisor = supervisor
        self.channel, theirs = socket.socketpair()
        log.flush()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vrft.pipelines.local.forkserver", str(theirs.fileno()), *modules],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                umask=0o077,
            )
        finally:
            theirs.close()
        if supervisor is not None:
            supervisor.watch_group(self.process.pid)
        self.replies = self.channel.makefile("rb")

    @staticmethod
    def wanted(environ: dict[str, str] | None = None) -> bool:
        """Whether tasks should be forked (Linux, and not switched off by ``VRFT_FORK_SERVER=0``)."""
        environ = os.environ if environ is None else environ
        return sys.platform == "linux" and environ.get(FORK_SERVER_ENV, "1") != "0"

    def _reply(self, key: str) -> int:
        gone = f"the fork server (pid {self.process.pid}) ended"
        try:
            line = self.replies.readline()  # a server gone with our request unread: ECONNRESET
        except OSError as exc:
            raise ForkServerGone(f"{gone}: {exc}") from exc
        if not line:
            raise ForkServerGone(gone)
        try:
            return int(json.loads(line)[key])
        except (ValueError, KeyError, TypeError) as exc:
            raise ForkServerGone(f"{gone}: it answered {line[:200]!r}") from exc

    def start(self, module: str, argv: list[str], env: dict[str, str], cwd: str, log: Any) -> int:
        """Fork what ``python -m MODULE ARGV`` would run, with ``env`` in ``cwd``, its output to
        ``log``; return its pid."""
        message = json.dumps({"module": module, "argv": argv, "env": env, "cwd": cwd}).encode() + b"\n"
        log.flush()
        try:
            socket.send_fds(self.channel, [message[:1]], [log.fileno()])
            self.channel.sendall(message[1:])
        except OSError as exc:
            raise ForkServerGone(f"the fork server (pid {self.process.pid}) ended: {exc}") from exc
        return self._reply("pid")

    def wait(self) -> int:
        """The exit status of the task last started (``Popen.returncode``'s convention)."""
        return self._reply("exit")

    def close(self, grace: float = 15.0) -> None:
        """End the server (end of input), killing its group if it does not go within ``grace``
        (longer than the server gives a task it stops, so that it can stop it)."""
        import subprocess

        from vrft.pipelines.local.supervisor import terminate_groups

        with contextlib.suppress(OSError):
            self.replies.close()
            self.channel.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        terminate_groups([self.process.pid], grace=0)  # the server if it hangs, or what it left
        self.process.wait()
        if self.supervisor is not None:
            self.supervisor.forget_group(self.process.pid)


if __name__ == "__main__":
    sys.exit(main())
