"""What tests/conftest.py promises every test: torch on the worker's share of the cores."""

import os
import subprocess
import sys

import pytest


@pytest.mark.timeout(120)
def test_each_worker_and_the_processes_it_starts_run_torch_on_its_share_of_the_cores() -> None:
    """Two workers with a torch thread per core each spin-wait on each other's OpenMP threads; each
    gets cores / workers, and so does every `vrft run` or task process a test starts (unless the
    caller exported OMP_NUM_THREADS: then that)."""
    import torch

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    exported = os.environ.get("VRFT_TEST_OMP_NUM_THREADS") != os.environ.get("OMP_NUM_THREADS")
    expected = int(os.environ["OMP_NUM_THREADS"]) if exported else max(1, cores // workers)
    child = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
    )
    assert (torch.get_num_threads(), int(child.stdout)) == (expected, expected)
