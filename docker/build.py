#!/usr/bin/env python3
"""Build and push the vrft images, in dependency order: vrft-base, then vrft, vrft-cpu, vrft-mlflow.

    VRFT_REGISTRY=ghcr.io/your-org VRFT_TAG=0.1.0 python3 docker/build.py            # build + push
    VRFT_REGISTRY=localhost:5000 VRFT_TAG=dev python3 docker/build.py --no-push      # build only
    VRFT_REGISTRY=... VRFT_TAG=... python3 docker/build.py --only vrft vrft-cpu       # skip the base
    VRFT_REGISTRY=... VRFT_TAG=... python3 docker/build.py --dry-run                  # print commands

Images are ``$VRFT_REGISTRY/<name>:$VRFT_TAG``; ``vrft`` is built FROM the ``vrft-base`` of the same
registry and tag. The pipeline's stages use ``vrft`` (GPU) and ``vrft-cpu`` (CPU), as
``vrft.pipelines.kfp_client.image_refs`` names them; ``k8s/`` runs ``vrft-mlflow``. Only the standard
library is used, so this runs before anything is installed. Images are built for linux/amd64 (the
flash-attention wheel and the CUDA base are x86-64).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLATFORM = "linux/amd64"


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


def image_ref(registry: str, name: str, tag: str) -> str:
    """``registry/name:tag``."""
    return f"{registry.rstrip('/')}/{name}:{tag}"


def plan(registry: str, tag: str, *, push: bool = True, only: Sequence[str] = ()) -> list[list[str]]:
    """The docker commands that build (and push) the images, in build order."""
    unknown = sorted(set(only) - {image.name for image in IMAGES})
    if unknown:
        raise ValueError(
            f"unknown image(s) {', '.join(unknown)} (known: {', '.join(i.name for i in IMAGES)})"
        )
    commands = []
    for image in IMAGES:
        if only and image.name not in only:
            continue
        ref = image_ref(registry, image.name, tag)
        build = ["docker", "build", "--platform", PLATFORM, "-f", image.dockerfile, "-t", ref]
        if image.base:
            build += ["--build-arg", f"BASE_IMAGE={image_ref(registry, image.base, tag)}"]
        commands.append([*build, image.context])
        if push:
            commands.append(["docker", "push", ref])
    return commands


def check_dockerignore() -> None:
    """The repository-root builds must not send .venv or .git: .dockerignore has to be docker/dockerignore."""
    root, wanted = REPO / ".dockerignore", REPO / "docker" / "dockerignore"
    if not root.is_file() or root.read_text() != wanted.read_text():
        raise SystemExit(
            "build.py: .dockerignore at the repository root must match docker/dockerignore "
            "(ln -s docker/dockerignore .dockerignore)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--no-push", dest="push", action="store_false", help="build only")
    parser.add_argument("--only", nargs="+", default=(), metavar="IMAGE", help="build these images only")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
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
        commands = plan(registry, tag, push=args.push, only=args.only)
    except ValueError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for command in commands:
            print(" ".join(command))
        return 0
    check_dockerignore()
    for command in commands:
        print("+", " ".join(command), flush=True)
        returncode = subprocess.run(command, cwd=REPO).returncode
        if returncode:
            print(
                f"build.py: {' '.join(command[:2])} {command[-1]} failed (exit {returncode})", file=sys.stderr
            )
            return returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
