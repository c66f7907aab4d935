"""Fixtures shared across the suite: the tiny offline models, built once per session; and how the
suite is spread over pytest-xdist workers (``make test``: ``-n 2 --dist loadfile``)."""

from __future__ import annotations

import inspect
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_THREADS_SET_HERE = "VRFT_TEST_OMP_NUM_THREADS"  # what the function below set


def _share_the_cores_between_workers() -> None:
    """Each xdist worker, and every process it starts (`vrft run`'s tasks, `airflow dags test`), gets
    its share of the cores as torch/OpenMP threads. With torch's default (a thread per core) in both
    workers, their OpenMP threads spin-wait on each other: two copies of tests/test_cli_stages.py at
    once took 48 s each, 30 s each with one thread (docs/testing.md). Set before torch is imported
    (OpenMP reads it when it loads). A value the caller exported is kept; the one the xdist controller
    set here (it loads this file too, before it starts the workers) is not."""
    if os.environ.get(_THREADS_SET_HERE) != os.environ.get("OMP_NUM_THREADS"):
        return  # exported by the caller
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ["OMP_NUM_THREADS"] = os.environ[_THREADS_SET_HERE] = str(max(1, cores // workers))


_share_the_cores_between_workers()

from vrft.models.config import ModelConfig  # noqa: E402  (after the thread count is set)
from vrft.models.tiny import build_tiny_model  # noqa: E402

# Small pixel bounds keep the tiny model at 4-16 vision tokens per image.
TINY_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}

# Fixtures of these scopes are built once per process that runs a test needing them: an end-to-end run,
# a compile of every config. `make test` sends each file to one xdist worker (--dist loadfile).
_SHARED_SCOPES = {"package", "module", "class"}


def _shares_a_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` uses a package/module/class-scoped fixture (its file is then one long chain)."""
    info = getattr(item, "_fixtureinfo", None)  # doctest items have none
    if info is None:
        return False
    return any(defs and defs[-1].scope in _SHARED_SCOPES for defs in info.name2fixturedefs.values())


_NO_MODULE = "<no module>"  # not a key of sys.modules: inspect.getmodule answers None, as after a rescan


def pytest_configure(config: pytest.Config) -> None:
    """kfp calls ``inspect.stack()`` in each resource setter of each task (about 100 times per compiled
    pipeline), and for every frame whose file belongs to no module (``<frozen runpy>`` under ``python -m
    pytest``; the ``<string>`` bootstrap and the exec'd ``xdist/remote.py`` of an xdist worker)
    ``inspect.getmodule`` rescans all of ``sys.modules`` (5000 modules once torch and transformers are
    loaded): compiling one config took 30 s in the suite, 4-5 s without. Those frames sit below every
    test: record in inspect's cache the answer the rescan gives for them (no module), once."""
    frame = sys._getframe()
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename not in inspect.modulesbyfile and inspect.getmodule(frame, filename) is None:
            inspect.modulesbyfile[filename] = _NO_MODULE
        frame = frame.f_back


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the long files first: those with ``slow`` tests, then those sharing an expensive fixture,
    then the rest (each file's tests stay together and in their order). ``make test`` hands out whole
    files in this order (``--dist loadfile --no-loadscope-reorder``), so no long file starts last while
    the other worker idles. No test depends on this order."""
    slow_files = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    shared_files = {item.nodeid.split("::")[0] for item in items if _shares_a_fixture(item)}

    def rank(item: pytest.Item) -> int:
        file = item.nodeid.split("::")[0]
        return 0 if file in slow_files else 1 if file in shared_files else 2

    items.sort(key=rank)  # stable: each file's tests keep their order


#: Test files that read the one end-to-end run (session fixture ``local_sweep_run``): one worker runs
#: them all, so the run is made once, not once per worker (about two minutes of both cores).
SHARED_RUN_FILES = frozenset({"tests/pipelines/test_local_run.py", "tests/pipelines/airflow/test_local.py"})


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent when the suite runs in one process
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile`` hands out whole files; the files in :data:`SHARED_RUN_FILES` go as one."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedRunFilesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return "tests/pipelines/<the shared end-to-end run>" if file in SHARED_RUN_FILES else file

    return SharedRunFilesTogether(config, log)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    path = build_tiny_model(tmp_path_factory.mktemp("models") / "qwen2_vl", family="qwen2_vl")
    return ModelConfig(name_or_path=str(path), **TINY_PIXELS)


@pytest.fixture(scope="session")
def tiny_qwen25(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    path = build_tiny_model(tmp_path_factory.mktemp("models") / "qwen2_5_vl", family="qwen2_5_vl")
    return ModelConfig(name_or_path=str(path), **TINY_PIXELS)


@pytest.fixture(scope="session", autouse=True)
def _own_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Generated datasets and tiny models go to this process's own cache (each xdist worker has its
    own), never to the user's ~/.cache/vrft: two workers building the same entry at once would swap
    it under each other's readers. Set before any test, so the restore below keeps it."""
    before = os.environ.get("VRFT_CACHE_DIR")
    os.environ["VRFT_CACHE_DIR"] = str(tmp_path_factory.mktemp("vrft-cache"))
    yield
    if before is None:
        os.environ.pop("VRFT_CACHE_DIR", None)
    else:
        os.environ["VRFT_CACHE_DIR"] = before


@pytest.fixture
def short_tmp_path() -> Iterator[Path]:
    """A fresh directory with a short path (``/tmp/vrft-XXXXXXXX``), removed afterwards: for a `vrft
    run` state directory, whose SeaweedFS unix sockets allow about 100 bytes of path. Under xdist
    ``tmp_path`` gains a ``popen-gwN`` level, and a long test name then makes it too long."""
    path = Path(tempfile.mkdtemp(prefix="vrft-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _no_environment_leaks_between_files():
    """The same for a file's module fixtures: ``mlflow.set_tracking_uri`` (every tracker calls it)
    also sets ``$MLFLOW_TRACKING_URI``, so a module fixture that logs runs would leave later files'
    stages tracking into its store (and, without an artifact root there, writing ``./mlruns`` into
    the checkout)."""
    yield from _environment_restored()


@pytest.fixture(autouse=True)
def _no_environment_leaks_between_tests():
    """A test that sets a variable in-process (a tracking URI, store credentials) without restoring it
    would point every later test at its own, by then deleted or read-only, store: restore after each."""
    yield from _environment_restored()


def _environment_restored() -> Iterator[None]:
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture(autouse=True)
def _no_client_state_between_tests():
    """Tests start their own S3 servers (each with its own credentials) and MLflow stores in one
    process. boto3's default session caches the first credentials it resolves, vrft's stores and
    MLflow cache their S3 clients and MLflow the tracking URI it was last given; a real run has one
    of each, so reset them."""
    yield
    # Only what a test imported has state to reset (the GPU machine runs the `gpu` tests without either).
    if "boto3" in sys.modules:
        sys.modules["boto3"].DEFAULT_SESSION = None
    if "vrft.storage" in sys.modules:
        sys.modules["vrft.storage"]._S3_CLIENTS.clear()
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
