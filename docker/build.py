#!/usr/bin/env python3
"""Build and push the vrft images, in dependency order: vrft-base, then vrft, vrft-cpu, vrft-mlflow.

    VRFT_REGISTRY=ghcr.io/your-org VRFT_TAG=0.1.0 python docker/build.py            # build + push
    VRFT_REGISTRY=localhost:5000 VRFT_TAG=dev python docker/build.py --no-push      # build only
    VRFT_REGISTRY=... VRFT_TAG=... python docker/build.py --only vrft vrft-cpu       # skip the base
    VRFT_REGISTRY=... VRFT_TAG=... python docker/build.py --dry-run                  # print the plan
    # air-gapped: every image FROM a local base (docker/airgap-base.sh), packages from a mirror
    ... python docker/build.py --no-push --base-image vrft-airgap-base:bookworm \\
        --build-arg PIP_INDEX_URL=https://mirror.example/simple --network host

Images are ``$VRFT_REGISTRY/<name>:$VRFT_TAG``; ``vrft`` is built FROM the ``vrft-base`` of the same
registry and tag. The pipeline's stages use ``vrft`` (GPU) and ``vrft-cpu`` (CPU), as
``vrft.components.cluster.image_refs`` names them; ``k8s/`` runs ``vrft-mlflow``. Builds go through
the ``docker`` Python SDK (the engine's classic builder: no BuildKit frontend is fetched) with the
build's output streamed; ``DOCKER_HOST`` selects the engine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
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
    """One image: its Dockerfile, build context (relative to the repository) and base image, if ours."""

    name: str
    dockerfile: str
    context: str
    base: str | None = None


IMAGES: tuple[Image, ...] = (
    Image("vrft-base", "docker/base.Dockerfile", context="docker"),
    Image("vrft", "docker/vrft.Dockerfile", context=".", base="vrft-base"),
    Image("vrft-cpu", "docker/vrft-cpu.Dockerfile", context="."),
    Image("vrft-mlflow", "docker/mlflow.Dockerfile", context="docker"),
)


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
        args = dict(build_args or {})
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


def stream(events: Iterable[Mapping[str, Any]], what: str, out: TextIO) -> None:
    """Print a build's or push's JSON progress; raise BuildError on the engine's error event."""
    for event in events:
        if "error" in event or "errorDetail" in event:
            message = event.get("error") or event["errorDetail"].get("message", "")
            raise BuildError(f"{what} failed: {' '.join(str(message).split())}")
        if text := event.get("stream"):
            out.write(text)
        elif status := event.get("status"):
            detail = f" {event['progress']}" if event.get("progress") else ""
            out.write(f"{event.get('id', '')} {status}{detail}\n".lstrip())
        out.flush()


def run_step(client: Any, step: Step, *, network: str | None, out: TextIO = sys.stdout) -> float:
    """Build or push one image; return its seconds."""
    started = time.monotonic()
    what = " ".join(step.command(network))
    out.write(f"+ {what}\n")
    if step.action == "push":
        repository, _, tag = step.ref.rpartition(":")
        stream(client.api.push(repository, tag=tag, stream=True, decode=True), what, out)
    else:
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
        stream(events, what, out)
    return time.monotonic() - started


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
    try:
        client = connect()
        for step in steps:
            seconds = run_step(client, step, network=args.network)
            print(f"build.py: {step.action} {step.ref}: {seconds:.0f} s", flush=True)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
