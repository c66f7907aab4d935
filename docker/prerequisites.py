#!/usr/bin/env python3
"""What `make test-containers` needs on this machine: installed where it can be, else one line naming it.

    python3 docker/prerequisites.py [--engine-dir DIR]     # exit 0: ready; exit 1: one line on stderr

The containers test needs a Docker engine and the air-gapped base image in it (docker/airgap-base.sh).
With ``DOCKER_HOST`` naming an engine that answers and already holds that image, nothing else is needed.
Otherwise it starts a private engine (docker/engine.sh: ``dockerd`` and root) and makes the base with
``debootstrap`` (root). Missing ``dockerd``/``docker`` (Debian's ``docker.io``) and ``debootstrap`` are
installed with apt-get when running as root; the apt log goes to ``DIR/logs/apt.log``. Anything else
missing (root, apt-get, Linux, free disk) ends with one line saying what and exit status 1.

Standard library only, so that it runs before ``make setup`` and fails a newcomer in a second.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path

AIRGAP_BASE = "vrft-airgap-base:bookworm"
DEFAULT_ENGINE_DIR = "/tmp/vrft-test-engine"
# The Debian package of each command.
PACKAGES = {"dockerd": "docker.io", "docker": "docker.io", "debootstrap": "debootstrap"}
# The engine directory during a first run (peak) and after it (kept: the image, its base and their
# layers, reused by the next run): 5.5 GB and 3.1 GB measured (docs/images.md), with a margin.
PEAK_DISK_GB = 7.0
KEPT_DISK_GB = 3.5


class Missing(Exception):
    """A prerequisite that cannot be installed here; the message is the one line to show."""


def engine_request(docker_host: str, path: str, timeout: float = 10.0) -> int | None:
    """HTTP status of ``GET path`` on the engine at ``docker_host`` (unix:// or tcp://), None if none answers."""
    url = urllib.parse.urlsplit(docker_host)
    try:
        if url.scheme == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(url.path)
                sock.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
                status_line = sock.makefile("rb").readline().decode("latin-1")
        elif url.scheme in ("tcp", "http"):
            connection = http.client.HTTPConnection(
                url.hostname or "localhost", url.port or 2375, timeout=timeout
            )
            try:
                connection.request("GET", path)
                return connection.getresponse().status
            finally:
                connection.close()
        else:  # ssh://, https:// with client certificates: the docker SDK decides later
            return None
    except OSError:
        return None
    parts = status_line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def needed_commands(docker_host: str | None, base_image: str = AIRGAP_BASE) -> list[str]:
    """The commands the test will run: none if DOCKER_HOST answers and holds the base image."""
    engine = bool(docker_host) and engine_request(docker_host, "/_ping") == 200
    commands = [] if engine else ["dockerd", "docker"]  # docker/engine.sh
    has_base = (
        engine
        and engine_request(docker_host, f"/images/{urllib.parse.quote(base_image, safe='/:@')}/json") == 200
    )
    if not has_base:
        commands += ["debootstrap", "docker"]  # docker/airgap-base.sh: debootstrap, then `docker import`
    return list(dict.fromkeys(commands))


def _tail(log: Path, lines: int = 3) -> str:
    """The last error lines of a log, joined on one line (apt's ``E:`` lines first)."""
    text = log.read_text(errors="replace").splitlines() if log.is_file() else []
    errors = [line.strip() for line in text if line.startswith(("E:", "dpkg: error"))]
    chosen = errors[-lines:] or [line.strip() for line in text if line.strip()][-lines:]
    return " | ".join(chosen)


def apt_install(packages: list[str], log: Path) -> None:
    """``apt-get install`` (after ``apt-get update`` when the package lists are stale); Missing on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    print(f"test-containers: installing {' '.join(packages)} with apt-get (log: {log})", flush=True)
    with open(log, "a") as out:
        if subprocess.run(install, stdout=out, stderr=subprocess.STDOUT, env=env).returncode == 0:
            return
        updated = subprocess.run(["apt-get", "update"], stdout=out, stderr=subprocess.STDOUT, env=env)
        if (
            updated.returncode == 0
            and subprocess.run(install, stdout=out, stderr=subprocess.STDOUT, env=env).returncode == 0
        ):
            return
    raise Missing(f"apt-get install {' '.join(packages)} failed: {_tail(log)} (full log: {log})")


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def ensure(engine_dir: Path, docker_host: str | None = None, base_image: str = AIRGAP_BASE) -> list[str]:
    """Make the machine ready for the containers test; return the packages installed. Missing otherwise."""
    if not sys.platform.startswith("linux"):
        raise Missing(f"needs Linux (a Docker engine on this machine); this is {sys.platform}")
    commands = needed_commands(docker_host, base_image)
    root = os.geteuid() == 0
    missing = [command for command in commands if shutil.which(command) is None]
    packages = sorted({PACKAGES[command] for command in missing})
    if {"dockerd", "debootstrap"} & set(commands) and not root:
        needs = [f"install {' and '.join(packages)}"] if packages else []
        needs += ["start a private Docker engine"] if "dockerd" in commands else []
        needs += ["debootstrap the air-gapped base"]
        where = (
            "no DOCKER_HOST engine answers"
            if "dockerd" in commands
            else f"{docker_host} holds no {base_image}"
        )
        raise Missing(f"needs root (running as uid {os.geteuid()}): to {', '.join(needs)} ({where})")
    if packages:
        if shutil.which("apt-get") is None:
            raise Missing(
                f"{', '.join(missing)} missing and no apt-get to install them: install "
                f"{' and '.join(packages)} with this system's package manager"
            )
        apt_install(packages, engine_dir / "logs" / "apt.log")
        still = [command for command in missing if shutil.which(command) is None]
        if still:
            raise Missing(f"{', '.join(still)} still missing after apt-get install {' '.join(packages)}")
    if "dockerd" in commands:  # a private engine: its data goes to engine_dir
        free_gb = shutil.disk_usage(_existing_parent(engine_dir)).free / 1e9
        reused = (engine_dir / "data").is_dir()
        needed_gb = PEAK_DISK_GB - KEPT_DISK_GB if reused else PEAK_DISK_GB
        if free_gb < needed_gb:
            raise Missing(
                f"needs {needed_gb:.0f} GB free for the engine directory {engine_dir}, "
                f"its filesystem has {free_gb:.1f} GB (VRFT_ENGINE_DIR=... elsewhere)"
            )
    return packages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--engine-dir", type=Path, default=Path(os.environ.get("VRFT_ENGINE_DIR") or DEFAULT_ENGINE_DIR)
    )
    args = parser.parse_args(argv)
    try:
        ensure(args.engine_dir, os.environ.get("DOCKER_HOST") or None)
    except Missing as exc:
        print(f"make test-containers: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
