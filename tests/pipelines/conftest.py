"""The shared end-to-end `vrft run` of the default sweep (:mod:`tests.pipelines.local_sweep`)."""

import os
from types import SimpleNamespace

import pytest

from tests.pipelines.local_sweep import DEFAULT, SWEEP


@pytest.fixture(scope="session")
def local_sweep_run(tmp_path_factory):
    """Start S3 + MLflow and run the sweep on them, once per session; the environment is restored
    right after the run (tests that use the services set it again). At the end of the session the
    services stop and no port may stay open."""
    import boto3

    from vrft.pipelines.local import run_local
    from vrft.pipelines.local.services import LocalServices, port_is_open

    state_dir = tmp_path_factory.mktemp("vrft-state")
    services = LocalServices(state_dir / "services").start()
    try:
        env_before = dict(os.environ)
        os.environ.update(services.env())
        try:
            result = run_local(DEFAULT, SWEEP, state_dir=state_dir, output_dir=state_dir / "report")
            s3 = boto3.client("s3", endpoint_url=services.env()["AWS_ENDPOINT_URL"])
        finally:
            os.environ.clear()
            os.environ.update(env_before)
        yield SimpleNamespace(dir=state_dir, services=services, result=result, env=services.env(), s3=s3)
    finally:
        ports = list(services.ports.values())
        services.stop()
        assert not any(port_is_open(p) for p in ports), "a service port is still open after stop()"
