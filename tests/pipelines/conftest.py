"""Shared by the end-to-end pipeline tests: the default experiment run on real local services."""

import contextlib
import os
from pathlib import Path

import pytest

from vrft.pipelines.local import run_local
from vrft.services import LocalServices, port_is_open

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def _default_run_with_services(state_dir: Path, overrides: list[str]):
    """Start S3 + MLflow under ``state_dir``, run ``configs/default.yaml`` with ``overrides`` on them
    and yield ``(services, result)``; afterwards restore the environment, stop the services and
    check that no port stays open."""
    services = LocalServices(state_dir / "services").start()
    env_before = dict(os.environ)
    os.environ.update(services.env())
    try:
        result = run_local(ROOT / "configs" / "default.yaml", overrides, state_dir=state_dir,
                           output_dir=state_dir / "report")
        yield services, result
    finally:
        os.environ.clear()
        os.environ.update(env_before)
        ports = list(services.ports.values())
        services.stop()
        assert not any(port_is_open(p) for p in ports), "a service port is still open after stop()"


@pytest.fixture(scope="session")
def default_run_with_services():
    """The context manager above, for module-scoped fixtures of the end-to-end tests."""
    return _default_run_with_services
