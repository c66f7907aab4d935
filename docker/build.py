#!/usr/bin/env python3
"""Build and push the vrft images, in dependency order: vrft-base, then vrft, vrft-cpu, vrft-mlflow.

    VRFT_REGISTRY=ghcr.io/your-org VRFT_TAG=0.1.0 python docker/build.py            # build + push
    VRFT_REGISTRY=localhost:5000 VRFT_TAG=dev python docker/build.py --no-push      # build only
    VRFT_REGISTRY=... VRFT_TAG=... python docker/build.py --only vrft vrft-cpu       # skip the base
    VRFT_REGISTRY=... VRFT_TAG=... python docker/build.py --dry-run                  # print the plan
    # air-gapped: every image FROM a local base (docker/airgap-base.sh), packages from a mirror
    ... python docker/build.py --no-push --base-image vrft-airgap-base:bookworm \\
        --build-arg PIP_INDEX_URL=https://mirror.example/simple --network host

Images are ``$VRFT_REGISTRY/<name>:$VRFT_TAG``. ``vrft`` (GPU) and ``vrft-cpu`` are built from the same
``docker/vrft.Dockerfile`` and differ only in their base (``vrft`` is FROM the ``vrft-base`` of the same
registry and tag: CUDA, torch for CUDA, DeepSpeed) and torch wheel (``TORCH_VARIANT``: ``cpu`` installs
``docker/torch-cpu.lock``). The pipeline's stages use them as ``vrft.components.cluster.image_refs``
names them; ``k8s/`` runs ``vrft-mlflow``. Builds go through the ``docker`` Python SDK (the engine's
classic builder: no BuildKit frontend is fetched); ``DOCKER_HOST`` selects the engine.

Before building ``vrft-cpu``, this machine's pip (with its own configuration: index, mirrors, local
wheel directories) fetches the locked CPU torch wheel into ``docker/wheels/``, hash-checked against
``docker/torch-cpu.lock``; the build installs it from there without any index. Where it cannot, the build
fetches it from ``TORCH_INDEX_URL`` itself.

Each image's build output goes to ``--log-dir``/<image>.log (and to stdout unless ``--quiet``); a failed
build is one line: the failing step, its last error lines and that log file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
PLATFORM = "linux/amd64"
# Creating a container for a build step can take minutes on a slow storage driver (vfs): the SDK's
# default of 60 s is too short.
ENGINE_TIMEOUT_S = 1800


class BuildError(RuntimeError):
    """A build or push failed; the message is the one line to show."""


@dataclass(frozen=True)
class Image:
    """One image: its Dockerfile, build context (relative to the repository), base image if ours, and
    the build arguments that make it this image."""

    name: str
    dockerfile: str
    context: str
    base: str | None = None
    buildargs: Mapping[str, str] = field(default_factory=dict)


IMAGES: tuple[Image, ...] = (
    Image("vrft-base", "docker/base.Dockerfile", context="docker"),
    # The two stage images: one Dockerfile, a different base and torch wheel.
    Image("vrft", "docker/vrft.Dockerfile", context=".", base="vrft-base", buildargs={"TORCH_VARIANT": ""}),
    Image("vrft-cpu", "docker/vrft.Dockerfile", context=".", buildargs={"TORCH_VARIANT": "cpu"}),
    Image("vrft-mlflow", "docker/mlflow.Dockerfile", context="docker"),
)
# Where the torch wheels fetched on this machine go: inside the build context of the stage images.
WHEELS = REPO / "docker" / "wheels"
# The interpreter and platform of the stage images (Debian bookworm's and python:3.11's Python).
IMAGE_PYTHON, IMAGE_PLATFORM = "3.11", "manylinux_2_28_x86_64"


@dataclass(frozen=True)
class Step:
    """One build (or push) of the plan."""

    action: str  # "build" or "push"
    ref: str
    image: Image
    buildargs: Mapping[str, str] = field(default_factory=dict)

    def command(self, network: str | None = None) -> list[str]:
        """The equivalent docker CLI command (for --dry-run and messages)."""
        if self.action == "push":
            return ["docker", "push", self.ref]
        command = ["docker", "build", "--platform", PLATFORM, "-f", self.image.dockerfile, "-t", self.ref]
        for key, value in self.buildargs.items():
            command += ["--build-arg", f"{key}={value}"]
        if network:
            command += ["--network", network]
        return [*command, self.image.context]


def image_ref(registry: str, name: str, tag: str) -> str:
    """``registry/name:tag``."""
    return f"{registry.rstrip('/')}/{name}:{tag}"


def git_commit() -> str:
    """The repository's HEAD commit, which the stage images record (VRFT_GIT_COMMIT); "unknown" outside git."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        )
    except OSError:
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


# Images whose Dockerfile takes VRFT_GIT_COMMIT (the package's own images).
STAGE_IMAGES = frozenset({"vrft", "vrft-cpu"})


def plan(
    registry: str,
    tag: str,
    *,
    push: bool = True,
    only: Sequence[str] = (),
    base_image: str | None = None,
    build_args: Mapping[str, str] | None = None,
    commit: str | None = None,
) -> list[Step]:
    """The builds (and pushes) in build order.

    ``base_image``: the BASE_IMAGE of every image that is not built FROM one of ours (an air-gapped
    base); ``build_args``: passed to every build (index mirrors); ``commit``: VRFT_GIT_COMMIT of the
    stage images.
    """
    unknown = sorted(set(only) - {image.name for image in IMAGES})
    if unknown:
        raise ValueError(
            f"unknown image(s) {', '.join(unknown)} (known: {', '.join(i.name for i in IMAGES)})"
        )
    steps = []
    for image in IMAGES:
        if only and image.name not in only:
            continue
        ref = image_ref(registry, image.name, tag)
        args = {**image.buildargs, **(build_args or {})}
        if image.base:
            args["BASE_IMAGE"] = image_ref(registry, image.base, tag)
        elif base_image:
            args["BASE_IMAGE"] = base_image
        if commit and image.name in STAGE_IMAGES:
            args["VRFT_GIT_COMMIT"] = commit
        steps.append(Step("build", ref, image, args))
        if push:
            steps.append(Step("push", ref, image))
    return steps


def check_dockerignore() -> None:
    """The repository-root builds must not send .venv or .git: .dockerignore has to be docker/dockerignore."""
    root, wanted = REPO / ".dockerignore", REPO / "docker" / "dockerignore"
    if not root.is_file() or root.read_text() != wanted.read_text():
        raise SystemExit(
            "build.py: .dockerignore at the repository root must match docker/dockerignore "
            "(ln -s docker/dockerignore .dockerignore)"
        )


def connect(timeout: int = ENGINE_TIMEOUT_S) -> Any:
    """A docker SDK client for ``DOCKER_HOST`` (or the default socket); BuildError when none answers."""
    try:
        import docker
    except ImportError:
        raise BuildError(
            "the docker Python SDK is missing: pip install 'vrft[pipeline]' (or docker)"
        ) from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (
        Exception
    ) as exc:  # the SDK raises DockerException, requests' ConnectionError, FileNotFoundError...
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        raise BuildError(
            f"no Docker engine answers at {where} ({type(exc).__name__}); "
            "start one (docker/engine.sh start) or set DOCKER_HOST"
        ) from None
    return client


_STEP = re.compile(r"^Step \d+/\d+ : ")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # pip colours its errors, even into a build log
_EXIT_CODE = re.compile(r"returned a non-zero code: (\d+)")
# Lines of a failing step that say why: pip's and apt's errors first, else Python's exception line and
# shell errors.
_ERROR = re.compile(r"^(ERROR|E:|error:|fatal:)", re.IGNORECASE)
_CAUSE = re.compile(r"Error\b|No such file|not found|denied", re.IGNORECASE)


def _failure(what: str, message: str, step: str, lines: Sequence[str]) -> str:
    """One line: the failing step, its exit code and its last error lines (else its last lines)."""
    message = " ".join(str(message).split())
    code = _EXIT_CODE.search(message)
    if not step:  # before any step ran (context, base image): the engine's message is the cause
        return f"{what} failed: {message}"
    causes = (
        [line for line in lines if _ERROR.search(line)]
        or [line for line in lines if _CAUSE.search(line)]
        or list(lines)
    )
    cause = " | ".join(line[:200] for line in causes[-3:]) or message[:300]
    header = step if len(step) <= 100 else step[:97] + "..."
    exit_code = f" (exit {code.group(1)})" if code else f" ({message[:200]})"
    return f"{what} failed at {header}{exit_code}: {cause}"


def stream(events: Iterable[Mapping[str, Any]], what: str, out: TextIO) -> None:
    """Write a build's or push's JSON progress to ``out``; raise BuildError on the engine's error event,
    naming the failing step and its last error lines."""
    step, lines = "", deque(maxlen=200)  # the current step and its output
    for event in events:
        if "error" in event or "errorDetail" in event:
            message = event.get("error") or event["errorDetail"].get("message", "")
            out.write(f"{' '.join(str(message).split())}\n")
            out.flush()
            raise BuildError(_failure(what, message, step, lines))
        if text := event.get("stream"):
            out.write(text)
            for line in _ANSI.sub("", text).splitlines():
                line = " ".join(line.split())
                if _STEP.match(line):
                    step = line
                    lines.clear()
                elif line:
                    lines.append(line)
        elif status := event.get("status"):
            detail = f" {event['progress']}" if event.get("progress") else ""
            out.write(f"{event.get('id', '')} {status}{detail}\n".lstrip())
        out.flush()


def _lock_entry(lock: Path) -> tuple[str, str]:
    """``(requirement, sha256)`` of a one-package lock (docker/torch-cpu.lock)."""
    text = lock.read_text().replace("\\\n", " ")
    [line] = [raw for raw in text.splitlines() if raw.strip() and not raw.lstrip().startswith("#")]
    requirement, *options = line.split()
    [digest] = [o.removeprefix("--hash=sha256:") for o in options if o.startswith("--hash=sha256:")]
    return requirement, digest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_torch_wheel(variant: str, torch_index: str, log: TextIO, wheels: Path = WHEELS) -> Path | None:
    """The locked ``torch-<variant>`` wheel in ``wheels`` (the stage images' build context), fetched with
    this machine's pip and its configuration, then, failing that, from ``torch_index``; hash-checked
    against the lock. None (and why, in ``log``) when this machine cannot fetch it either."""
    requirement, digest = _lock_entry(REPO / "docker" / f"torch-{variant}.lock")
    version = requirement.partition("==")[2]
    for existing in sorted(wheels.glob(f"torch-{version}-*.whl")):
        if _sha256(existing) == digest:
            log.write(f"torch wheel: {existing} (sha256 as in docker/torch-{variant}.lock)\n")
            return existing
        existing.unlink()  # another build of that version: not what the lock names
    wheels.mkdir(parents=True, exist_ok=True)
    target = [
        "--only-binary=:all:",
        "--platform",
        IMAGE_PLATFORM,
        "--python-version",
        IMAGE_PYTHON,
        "--implementation",
        "cp",
    ]
    # pip's own configuration first (a local wheel directory or site mirror answers at once), then the
    # torch index (unreachable, it costs pip's retries).
    for extra in ([], ["--extra-index-url", torch_index]):
        with tempfile.TemporaryDirectory(dir=wheels, prefix=".partial-") as partial:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", *target]
            command += [*extra, "--dest", partial, "-r", str(REPO / "docker" / f"torch-{variant}.lock")]
            log.write(f"+ {' '.join(command)}\n")
            log.flush()
            fetched = subprocess.run(command, capture_output=True, text=True, check=False)
            log.write(fetched.stdout + fetched.stderr)
            found = list(Path(partial).glob("torch-*.whl"))
            if fetched.returncode == 0 and len(found) == 1 and _sha256(found[0]) == digest:
                wheel = wheels / found[0].name
                os.replace(found[0], wheel)
                log.write(f"torch wheel: {wheel} (sha256 as in docker/torch-{variant}.lock)\n")
                return wheel
    log.write(
        f"torch wheel: this machine's pip could not fetch {requirement}; the build tries TORCH_INDEX_URL\n"
    )
    return None


@contextlib.contextmanager
def _output(log_dir: Path, name: str, quiet: bool) -> Iterator[tuple[TextIO, Path]]:
    """The log file of one image's build, also echoed to stdout unless ``quiet``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{name}.log"
    with open(path, "w", encoding="utf-8") as log:
        yield (log if quiet else _Tee(log, sys.stdout)), path


class _Tee:
    """A write-only stream to several others."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def torch_variant(step: Step) -> str:
    """The torch wheel a stage image's build installs (``cpu``), "" for none (the base's)."""
    return (
        step.buildargs.get("TORCH_VARIANT", "") if step.image.dockerfile == "docker/vrft.Dockerfile" else ""
    )


def run_step(client: Any, step: Step, *, network: str | None, out: TextIO = sys.stdout) -> float:
    """Build or push one image; return its seconds."""
    started = time.monotonic()
    what = " ".join(step.command(network))
    out.write(f"+ {what}\n")
    if step.action == "push":
        repository, _, tag = step.ref.rpartition(":")
        stream(client.api.push(repository, tag=tag, stream=True, decode=True), f"push {step.ref}", out)
        return time.monotonic() - started
    wheel = None
    if variant := torch_variant(step):
        index = step.buildargs.get("TORCH_INDEX_URL") or dockerfile_arg(
            step.image.dockerfile, "TORCH_INDEX_URL"
        )
        wheel = fetch_torch_wheel(variant, index, out)
    events = client.api.build(
        path=str(REPO / step.image.context),
        dockerfile=str(REPO / step.image.dockerfile),
        tag=step.ref,
        buildargs=dict(step.buildargs),
        platform=PLATFORM,
        network_mode=network,
        rm=True,
        forcerm=True,
        decode=True,
    )
    try:
        stream(events, f"build {step.ref}", out)
    except BuildError as exc:
        if variant and wheel is None and "torch" in str(exc):
            raise BuildError(
                f"{exc} (this machine's pip could not fetch the CPU torch wheel either: give it an index "
                "or wheel directory that has it, or pass --build-arg TORCH_INDEX_URL=/TORCH_FIND_LINKS=)"
            ) from None
        raise
    return time.monotonic() - started


def dockerfile_arg(dockerfile: str, name: str) -> str:
    """The default of ``ARG name=...`` in a Dockerfile of this repository (expanding nothing)."""
    match = re.search(rf"^ARG {re.escape(name)}=(\S*)", (REPO / dockerfile).read_text(), re.MULTILINE)
    return match.group(1) if match else ""


def parse_build_args(values: Sequence[str]) -> dict[str, str]:
    parsed = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise ValueError(f"--build-arg {value!r}: expected KEY=VALUE")
        parsed[key] = rest
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--no-push", dest="push", action="store_false", help="build only")
    parser.add_argument("--only", nargs="+", default=(), metavar="IMAGE", help="build these images only")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    parser.add_argument(
        "--base-image",
        default=None,
        help="BASE_IMAGE of the images not built on ours (e.g. docker/airgap-base.sh's)",
    )
    parser.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a build argument for every image (PIP_INDEX_URL, TORCH_INDEX_URL, ...)",
    )
    parser.add_argument(
        "--network",
        default=None,
        help="network of the build containers (host: reach a mirror on this machine)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=REPO / "build" / "docker-logs",
        help="where each build's and push's output goes (<action>-<image>.log; default build/docker-logs)",
    )
    parser.add_argument("--quiet", action="store_true", help="output to the log files only, not to stdout")
    args = parser.parse_args(argv)
    registry, tag = os.environ.get("VRFT_REGISTRY", "").strip(), os.environ.get("VRFT_TAG", "").strip()
    if not registry or not tag:
        print(
            "build.py: set VRFT_REGISTRY (e.g. ghcr.io/your-org) and VRFT_TAG (e.g. 0.1.0)", file=sys.stderr
        )
        return 2
    if tag == "latest":
        print(
            "build.py: VRFT_TAG=latest is refused: pipelines must name one immutable build", file=sys.stderr
        )
        return 2
    try:
        steps = plan(
            registry,
            tag,
            push=args.push,
            only=args.only,
            base_image=args.base_image,
            build_args=parse_build_args(args.build_arg),
            commit=None if args.dry_run else git_commit(),
        )
    except ValueError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for step in steps:
            print(" ".join(step.command(args.network)))
        return 0
    check_dockerignore()
    log_dir = args.log_dir.resolve()
    try:
        client = connect()
        for step in steps:
            name = f"{step.action}-{step.image.name}"
            with _output(log_dir, name, args.quiet) as (out, log_path):
                if args.quiet:
                    print(f"build.py: {step.action} {step.ref} (log: {log_path})", flush=True)
                try:
                    seconds = run_step(client, step, network=args.network, out=out)
                except BuildError as exc:
                    raise BuildError(f"{exc}; full log: {log_path}") from None
            print(f"build.py: {step.action} {step.ref}: {seconds:.0f} s", flush=True)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
