"""Nothing a run starts outlives it: task process groups, task containers and local services die with the run.

``vrft run`` starts tasks (each in its own process group, so a group signal reaches every process a
task started, or in its own container) and the local services. Three layers make sure none
survives the run:

* normal ends, errors, Ctrl-C and SIGTERM unwind through ``finally`` blocks that stop them
  (:func:`terminate_groups`: SIGTERM to each group, SIGKILL after a grace period; containers are
  removed);
* SIGKILL of the run runs no code at all, so a small **watchdog** process (``python -m
  vrft.pipelines.local.supervisor``, in its own session so that terminal and ``timeout`` signals do
  not reach it) holds the read end of a pipe from the run. When the run dies, however it dies, the
  kernel closes the pipe; the watchdog reads end-of-file and stops every group, container and
  services directory still registered, then exits;
* the services started by a run also get Linux's parent-death signal
  (:func:`vrft.pipelines.local.services.die_with_parent_preexec`).

The protocol on the pipe is one line per change: ``+group PGID``, ``-group PGID``,
``+container ID``, ``-container ID``, ``+services PID START_TIME STATE_DIR``,
``-services PID START_TIME STATE_DIR``. Services are registered by identity (the SeaweedFS process's
pid and start time): a watchdog outliving its run stops that process only, never the services a
later run started in the same state directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

GRACE_SECONDS = 10.0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _group_has_live_members(pgid)


def _group_has_live_members(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies waiting to be reaped do not count)."""
    from vrft.pipelines.local.services import process_alive

    for process in psutil.process_iter():
        try:
            in_group = os.getpgid(process.pid) == pgid
        except OSError:
            continue
        if in_group and process_alive(process.pid):
            return True
    return False


def terminate_groups(pgids: Iterable[int], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM every process group, wait up to ``grace`` seconds, SIGKILL what is left, wait for it."""
    pgids = list(pgids)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(p) for p in pgids):
        time.sleep(0.1)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_group_alive(p) for p in pgids):
        time.sleep(0.05)


def remove_containers(ids: Iterable[str]) -> None:
    """Force-remove containers (running ones are killed) on the engine ``DOCKER_HOST`` names."""
    ids = list(ids)
    if not ids:
        return
    import docker

    client = docker.from_env(timeout=120)
    try:
        for container_id in ids:
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(container_id).remove(force=True)
    finally:
        client.close()


class Supervisor:
    """The process groups, containers and services of one run, and the watchdog that stops them
    if the run is killed."""

    def __init__(self) -> None:
        self._groups: set[int] = set()
        self._lock = threading.Lock()
        self._watchdog: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Supervisor:
        self._watchdog = subprocess.Popen(
            [sys.executable, "-m", "vrft.pipelines.local.supervisor"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.terminate_groups()
        finally:
            if self._watchdog is not None:
                with contextlib.suppress(OSError):
                    self._watchdog.stdin.close()  # type: ignore[union-attr]
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._watchdog.wait(30)
                self._watchdog = None

    def _send(self, line: str) -> None:
        if self._watchdog is None or self._watchdog.stdin is None:
            return
        with self._lock, contextlib.suppress(OSError):
            self._watchdog.stdin.write(line.encode() + b"\n")
            self._watchdog.stdin.flush()

    @property
    def groups(self) -> set[int]:
        with self._lock:
            return set(self._groups)

    def watch_group(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)
        self._send(f"+group {pgid}")

    def forget_group(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)
        self._send(f"-group {pgid}")

    def watch_container(self, container_id: str) -> None:
        self._send(f"+container {container_id}")

    def forget_container(self, container_id: str) -> None:
        self._send(f"-container {container_id}")

    def watch_services(self, state_dir: str | Path, pid: int, start_time: float | None) -> None:
        self._send(f"+services {_services_entry(state_dir, pid, start_time)}")

    def forget_services(self, state_dir: str | Path, pid: int, start_time: float | None) -> None:
        self._send(f"-services {_services_entry(state_dir, pid, start_time)}")

    def terminate_groups(self, grace: float = GRACE_SECONDS) -> None:
        groups = self.groups
        if groups:
            terminate_groups(groups, grace)
        for pgid in groups:
            self.forget_group(pgid)


def _services_entry(state_dir: str | Path, pid: int, start_time: float | None) -> str:
    return f"{int(pid)} {start_time!r} {Path(state_dir).resolve()}"


def _stop_services(entry: str) -> None:
    """Stop the SeaweedFS process an entry names, if it is still that process."""
    from vrft.pipelines.local.services import LocalServices

    pid, start_time, state_dir = entry.split(" ", 2)
    LocalServices(state_dir).stop_instance(int(pid), None if start_time == "None" else float(start_time))


def _watchdog(stream: Iterable[bytes]) -> None:
    """Track the run's registrations until its end of the pipe closes, then stop what is left."""
    groups: set[int] = set()
    containers: set[str] = set()
    services: set[str] = set()
    for raw in stream:
        sign, _, rest = raw.decode(errors="replace").strip().partition(" ")
        if sign == "+group":
            groups.add(int(rest))
        elif sign == "-group":
            groups.discard(int(rest))
        elif sign == "+container":
            containers.add(rest)
        elif sign == "-container":
            containers.discard(rest)
        elif sign == "+services":
            services.add(rest)
        elif sign == "-services":
            services.discard(rest)
    if groups:
        terminate_groups(groups)
    with contextlib.suppress(Exception):  # nobody is left to report to
        remove_containers(containers)
    for entry in services:
        with contextlib.suppress(Exception):
            _stop_services(entry)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe's end stops the watchdog
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _watchdog(sys.stdin.buffer)
