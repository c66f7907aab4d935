"""Fixtures shared across the suite: the tiny offline models, built once per session; and how the
suite is spread over pytest-xdist workers (``make test`` runs ``-n 2 --dist loadgroup``)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from vrft.models.config import ModelConfig
from vrft.models.tiny import build_tiny_model

# Small pixel bounds keep the tiny model at 4-16 vision tokens per image.
TINY_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}

# Fixtures of these scopes are built once per worker that runs a test needing them: the tests that
# share one stay on one worker, or each worker would build it again (an end-to-end run, a compile of
# every config).
_SHARED_SCOPES = ("package", "module", "class")


def _shared_fixture_scope(item: pytest.Item) -> str | None:
    """The file (or package) whose expensive fixture ``item`` shares with other tests, if any."""
    info = getattr(item, "_fixtureinfo", None)  # doctest items have none
    if info is None:
        return None
    scopes = {definitions[-1].scope for definitions in info.name2fixturedefs.values() if definitions}
    if "package" in scopes:
        return str(Path(item.nodeid.split("::")[0]).parent)
    if scopes & set(_SHARED_SCOPES):
        return item.nodeid.split("::")[0]
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the tests that share a module/class/package fixture on one xdist worker (an
    ``xdist_group`` per file, used by ``--dist loadgroup``; all other tests are spread one by one),
    and start the long ones first: the files with ``slow`` tests, then the files sharing a fixture,
    then the rest (each file's tests stay together and in their order), so that no long chain of
    tests starts last while the other worker idles. No test depends on this order."""
    groups = {item: _shared_fixture_scope(item) for item in items}
    for item, group in groups.items():
        if group is not None and not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(group))
    slow_files = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    shared_files = {item.nodeid.split("::")[0] for item, group in groups.items() if group is not None}

    def rank(item: pytest.Item) -> int:
        file = item.nodeid.split("::")[0]
        return 0 if file in slow_files else 1 if file in shared_files else 2

    items.sort(key=rank)  # stable: each file's tests keep their order


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    path = build_tiny_model(tmp_path_factory.mktemp("models") / "qwen2_vl", family="qwen2_vl")
    return ModelConfig(name_or_path=str(path), **TINY_PIXELS)


@pytest.fixture(scope="session")
def tiny_qwen25(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    path = build_tiny_model(tmp_path_factory.mktemp("models") / "qwen2_5_vl", family="qwen2_5_vl")
    return ModelConfig(name_or_path=str(path), **TINY_PIXELS)


@pytest.fixture(autouse=True)
def _no_environment_leaks_between_tests():
    """A test that sets a variable in-process (a tracking URI, store credentials) without restoring it
    would point every later test at its own, by then deleted or read-only, store: restore after each."""
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture(autouse=True)
def _no_client_state_between_tests():
    """Tests start their own S3 servers (each with its own credentials) and MLflow stores in one
    process. boto3's default session caches the first credentials it resolves and MLflow caches its
    S3 clients and the tracking URI it was last given; a real run has one of each, so reset them."""
    yield
    # Only what a test imported has state to reset (the GPU machine runs the `gpu` tests without either).
    if "boto3" in sys.modules:
        sys.modules["boto3"].DEFAULT_SESSION = None
    if "mlflow" in sys.modules:
        from mlflow.store.artifact import s3_artifact_repo
        from mlflow.tracking._tracking_service import utils as tracking_utils

        s3_artifact_repo._cached_get_s3_client.cache_clear()
        tracking_utils._tracking_uri = None


@pytest.fixture(scope="session")
def find_tool() -> Callable[[str, str], str]:
    """Locate a command-line tool shipped as a dev wheel (hadolint, kubectl): this interpreter's
    environment first, then PATH. A missing tool fails the test; it is never skipped."""

    def find(name: str, package: str) -> str:
        search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        tool = shutil.which(name, path=search)
        if tool is None:
            pytest.fail(
                f"{name} is not installed: pip install {package} (it is part of the dev dependencies)"
            )
        return tool

    return find


@pytest.fixture(scope="session")
def gpu() -> str:
    """The device of the `gpu`-marked tests: CUDA, which they fail without (never skip). The CPU dry
    run of bench/gpu/check.sh sets VRFT_GPU_TESTS_ON_CPU=1 to exercise the same code on the CPU."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("VRFT_GPU_TESTS_ON_CPU") == "1":
        return "cpu"
    pytest.fail(
        "this test is marked gpu and needs a CUDA device (run it with bench/gpu/check.sh on a GPU machine)"
    )
