"""`vrft run --runner docker` without an engine: the image it names, the runner it configures, and the
one-line errors. The containerised run itself is tests/docker/test_containers.py (`make test-containers`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vrft.cli import main
from vrft.experiment import load_experiment
from vrft.pipelines import local

pytestmark = pytest.mark.timeout(60)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def test_the_local_image_is_the_cpu_image_the_config_names() -> None:
    assert local.cpu_image(load_experiment(CONFIG, [])) == "ghcr.io/vrft/vrft-cpu:0.1.0"
    config = load_experiment(
        CONFIG, ["pipeline.image_registry=registry.example/ml", "pipeline.image_tag=v1.2"]
    )
    assert local.cpu_image(config) == "registry.example/ml/vrft-cpu:v1.2"


def test_no_engine_is_one_line_naming_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(local.PipelineFailed) as failed:
        local.docker_runner("ghcr.io/vrft/vrft-cpu:0.1.0", tmp_path)
    message = str(failed.value)
    assert "\n" not in message and f"no Docker engine answers at unix://{tmp_path}/none.sock" in message


class _Images:
    def __init__(self, present: set[str]) -> None:
        self.present = present

    def get(self, ref: str) -> object:
        import docker

        if ref not in self.present:
            raise docker.errors.ImageNotFound(ref)
        return object()


class _Client:
    def __init__(self, present: set[str]) -> None:
        self.images = _Images(present)
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_missing_image_is_one_line_saying_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _Client(set())
    monkeypatch.setattr(local, "_docker_client", lambda: client)
    with pytest.raises(
        local.PipelineFailed, match=r"image r/vrft-cpu:1 is not in the Docker engine: build it"
    ):
        local.docker_runner("r/vrft-cpu:1", tmp_path)
    assert client.closed


def test_run_checks_engine_and_image_before_starting_any_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[object] = []
    monkeypatch.setattr(local.LocalServices, "start", lambda self, **kwargs: started.append(self))
    state = tmp_path / "state"

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    assert main(["run", "--runner", "docker", "--state-dir", str(state), str(CONFIG)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no Docker engine answers at unix://{tmp_path}/none.sock" in err[0], err

    client = _Client(set())  # an engine without the image
    monkeypatch.setattr(local, "_docker_client", lambda: client)
    with pytest.raises(
        local.PipelineFailed,
        match=r"image ghcr.io/vrft/vrft-cpu:0.1.0 is not in the Docker engine: build it "
        r"\(VRFT_REGISTRY=ghcr.io/vrft VRFT_TAG=0.1.0 python docker/build.py",
    ):
        local.run_local(CONFIG, state_dir=state, runner="docker")
    assert client.closed
    assert started == [] and not state.exists()  # no service started, nothing written


def test_the_runner_passes_the_stage_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "_docker_client", lambda: _Client({"r/vrft-cpu:1"}))
    cache = tmp_path / "cache"
    environ = {
        "AWS_SECRET_ACCESS_KEY": "s3cret-value",
        "MLFLOW_TRACKING_URI": "sqlite:////x/mlflow.db",
        "VRFT_RUN_ID": "run-1",
        "VRFT_MLFLOW_PARENT_RUN_ID": "abc",
        "VRFT_CACHE_DIR": str(cache),
        "DO_NOT_TRACK": "true",
        "HOME": "/root",
        "PATH": "/usr/bin",
        "SSH_AUTH_SOCK": "/tmp/agent",
    }
    runner = local.docker_runner("r/vrft-cpu:1", tmp_path, environ)
    args = runner.container_run_args
    assert args["network_mode"] == "host"  # the services listen on loopback
    assert args["user"] == f"{os.getuid()}:{os.getgid()}"
    assert args["environment"] == {
        "AWS_SECRET_ACCESS_KEY": "s3cret-value",
        "MLFLOW_TRACKING_URI": "sqlite:////x/mlflow.db",
        "VRFT_RUN_ID": "run-1",
        "VRFT_MLFLOW_PARENT_RUN_ID": "abc",
        "VRFT_CACHE_DIR": str(cache),
        "DO_NOT_TRACK": "true",
        "VRFT_IMAGE": "r/vrft-cpu:1",
        "HOME": "/tmp",
        "PYTHONUNBUFFERED": "1",
    }
    mounts = {(m["Source"], m["Target"]) for m in args["mounts"]}
    services = (tmp_path / "services").resolve()
    assert mounts == {(str(services), str(services)), (str(cache), str(cache))}
    assert services.is_dir() and cache.is_dir()


def test_the_cli_offers_the_two_runners(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--runner", "podman", str(CONFIG)])
    assert exited.value.code == 2
    assert "invalid choice: 'podman'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown runner 'podman'"):
        local.run_local(CONFIG, runner="podman")
