"""docker/prerequisites.py and docker/engine.sh where they refuse: what `make test-containers` does on a
machine where it cannot run (no root, no apt-get, a failing apt-get, no disk), each one line. Cheap: no
engine is started and nothing is installed (a fake apt-get stands in for the real one)."""

from __future__ import annotations

import http.server
import importlib.util
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docker" / "prerequisites.py"


@pytest.fixture(scope="module")
def prerequisites() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vrft_docker_prerequisites", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _as_nobody() -> list[str]:
    """The command prefix that drops root (the test's own user when it is not root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to run a check as an unprivileged user"
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def test_without_root_it_fails_with_one_line_naming_root(shared_dir: Path) -> None:
    """A real run as an unprivileged user, as `make test-containers` starts it (before `make setup`)."""
    script = _readable_copy(SCRIPT, shared_dir)
    env = {
        "PATH": os.environ["PATH"],
        "DOCKER_HOST": f"unix://{shared_dir}/no-engine.sock",
        "VRFT_ENGINE_DIR": str(shared_dir / "engine"),
    }
    done = subprocess.run(
        [*_as_nobody(), _system_python(), str(script)],
        env=env,
        capture_output=True,
        text=True,
        cwd=shared_dir,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("make test-containers: needs root (running as uid "), line
    assert "start a private Docker engine, debootstrap the air-gapped base" in line
    assert line.endswith("(no DOCKER_HOST engine answers)")


def test_without_root_the_message_names_what_root_is_for(
    prerequisites: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prerequisites.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(prerequisites.shutil, "which", lambda name: None)
    with pytest.raises(prerequisites.Missing) as missing:
        prerequisites.ensure(tmp_path, None)
    assert str(missing.value) == (
        "needs root (running as uid 1000): to install debootstrap and docker.io, start a private Docker "
        "engine, debootstrap the air-gapped base (no DOCKER_HOST engine answers)"
    )
    monkeypatch.setattr(prerequisites.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(prerequisites.Missing) as missing:
        prerequisites.ensure(tmp_path, None)
    assert str(missing.value) == (
        "needs root (running as uid 1000): to start a private Docker engine, debootstrap the air-gapped "
        "base (no DOCKER_HOST engine answers)"
    )


def _root(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> None:
    monkeypatch.setattr(module.os, "geteuid", lambda: 0)


def test_as_root_without_apt_get_it_names_what_to_install(
    prerequisites: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _root(monkeypatch, prerequisites)
    monkeypatch.setenv("PATH", str(tmp_path))  # no dockerd, docker, debootstrap or apt-get
    with pytest.raises(prerequisites.Missing) as missing:
        prerequisites.ensure(tmp_path / "engine", None)
    assert str(missing.value) == (
        "dockerd, docker, debootstrap missing and no apt-get to install them: install debootstrap and "
        "docker.io with this system's package manager"
    )


def _fake_apt_get(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "apt-get $*" >> {bin_dir}/calls\n{script}\n')
    apt.chmod(0o755)


def test_a_failing_apt_get_is_one_line_with_its_error_and_log(
    prerequisites: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _root(monkeypatch, prerequisites)
    bin_dir = tmp_path / "bin"
    _fake_apt_get(
        bin_dir,
        'echo "Reading package lists..."\n[ "$1" = update ] && exit 0\n'
        'echo "E: Unable to locate package docker.io"\nexit 100',
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(
        prerequisites.shutil, "which", lambda name: str(bin_dir / name) if name == "apt-get" else None
    )
    with pytest.raises(prerequisites.Missing) as missing:
        prerequisites.ensure(tmp_path / "engine", None)
    log = tmp_path / "engine" / "logs" / "apt.log"
    assert str(missing.value) == (
        "apt-get install debootstrap docker.io failed: E: Unable to locate package docker.io | "
        f"E: Unable to locate package docker.io (full log: {log})"
    )
    # the package lists were refreshed once before the second try
    assert (bin_dir / "calls").read_text().splitlines() == [
        "apt-get install -y --no-install-recommends debootstrap docker.io",
        "apt-get update",
        "apt-get install -y --no-install-recommends debootstrap docker.io",
    ]


def test_an_apt_get_that_installs_nothing_is_not_taken_for_success(
    prerequisites: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _root(monkeypatch, prerequisites)
    bin_dir = tmp_path / "bin"
    _fake_apt_get(bin_dir, "exit 0")
    monkeypatch.setattr(
        prerequisites.shutil, "which", lambda name: str(bin_dir / name) if name == "apt-get" else None
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    with pytest.raises(
        prerequisites.Missing, match=r"^dockerd, docker, debootstrap still missing after apt-get"
    ):
        prerequisites.ensure(tmp_path / "engine", None)


def test_too_little_disk_for_a_private_engine_is_one_line(
    prerequisites: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _root(monkeypatch, prerequisites)
    monkeypatch.setattr(prerequisites.shutil, "which", lambda name: f"/usr/bin/{name}")
    usage = shutil.disk_usage(tmp_path)._replace(free=int(1.5e9))
    monkeypatch.setattr(prerequisites.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(prerequisites.Missing) as missing:
        prerequisites.ensure(tmp_path / "engine" / "dir", None)
    assert str(missing.value).startswith(
        f"needs {prerequisites.PEAK_DISK_GB:.0f} GB free for the engine directory {tmp_path}/engine/dir, "
        "its filesystem has 1.5 GB"
    )
    (tmp_path / "engine" / "dir" / "data").mkdir(parents=True)  # a kept engine: its layers are reused
    monkeypatch.setattr(
        prerequisites.shutil,
        "disk_usage",
        lambda path: usage._replace(free=int(prerequisites.PEAK_DISK_GB * 1e9 * 0.6)),
    )
    assert prerequisites.ensure(tmp_path / "engine" / "dir", None) == []


class _Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def fake_engine(tmp_path: Path) -> Iterator[tuple[str, set[str]]]:
    """A unix socket answering the two engine requests the check makes; the set holds the images."""
    images: set[str] = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            found = self.path == "/_ping" or any(self.path == f"/images/{i}/json" for i in images)
            self.send_response(200 if found else 404)
            self.end_headers()

        def address_string(self) -> str:
            return "unix"

        def log_message(self, *args: object) -> None:
            pass

    path = tmp_path / "engine.sock"
    server = _Engine(str(path), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}", images
    finally:
        server.shutdown()
        server.server_close()


def test_an_engine_that_holds_the_base_needs_nothing_else(
    prerequisites: ModuleType, fake_engine: tuple[str, set[str]], tmp_path: Path
) -> None:
    host, images = fake_engine
    assert prerequisites.engine_request(host, "/_ping") == 200
    assert prerequisites.needed_commands(host) == ["debootstrap", "docker"]  # the base is still to make
    images.add("vrft-airgap-base:bookworm")
    assert prerequisites.needed_commands(host) == []
    assert prerequisites.needed_commands(f"unix://{tmp_path}/nothing.sock") == [
        "dockerd",
        "docker",
        "debootstrap",
    ]


def test_engine_remove_deletes_only_an_engine_directory(tmp_path: Path) -> None:
    engine = REPO / "docker" / "engine.sh"
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    refused = subprocess.run([str(engine), "remove", str(precious)], capture_output=True, text=True)
    assert refused.returncode == 1 and (precious / "notes.txt").exists()
    assert refused.stderr.splitlines() == [
        f"engine.sh: {precious} does not look like an engine directory (no data/ or logs/): not removed"
    ]
    stopped_engine = tmp_path / "engine"  # what `engine.sh stop` leaves: data and logs
    (stopped_engine / "data" / "overlay2").mkdir(parents=True)
    (stopped_engine / "logs").mkdir()
    removed = subprocess.run([str(engine), "remove", str(stopped_engine)], capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr
    assert not stopped_engine.exists()
    assert subprocess.run([str(engine), "remove", str(stopped_engine)]).returncode == 0  # nothing to do


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged user can reach (pytest's tmp_path lies under a private one)."""
    directory = Path(tempfile.mkdtemp(prefix="vrft-prereq-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _readable_copy(script: Path, directory: Path) -> Path:
    """``script`` copied where the unprivileged user can read it: the checkout itself may lie under a
    private directory (a CI workspace, a clone made in a ``mktemp -d`` directory)."""
    copy = directory / script.name
    shutil.copy(script, copy)
    copy.chmod(0o755)
    return copy


def _system_python() -> str:
    """The interpreter behind the virtual environment (its ``bin/python`` link may lie in the private
    checkout too); the scripts under docker/ need only the standard library, as they run before
    `make setup`."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def test_engine_start_without_root_is_one_line(shared_dir: Path) -> None:
    bin_dir = shared_dir / "bin"  # dockerd and docker present (never run: the root check comes first)
    bin_dir.mkdir()
    for name in ("dockerd", "docker"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    done = subprocess.run(
        [
            *_as_nobody(),
            str(_readable_copy(REPO / "docker" / "engine.sh", shared_dir)),
            "start",
            str(shared_dir / "engine"),
        ],
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )
    assert (done.returncode, done.stderr.splitlines()) == (1, ["engine.sh: dockerd needs root"])
