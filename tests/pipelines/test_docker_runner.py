"""`vrft run --runner docker` without an engine: the image it names, the containers it asks for, the
one-line errors, and a task's container's life (logs kept, removed, registered with the supervisor). The
containerised run itself is tests/docker/test_containers.py (`make test-containers`)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from vrft.cli import main
from vrft.experiment import load_experiment
from vrft.pipelines import local
from vrft.pipelines.local import docker as docker_runner

pytestmark = pytest.mark.timeout(60)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def test_the_local_image_is_the_cpu_image_the_config_names() -> None:
    assert docker_runner.cpu_image(load_experiment(CONFIG, [])) == "ghcr.io/vrft/vrft-cpu:0.1.0"
    config = load_experiment(
        CONFIG, ["pipeline.image_registry=registry.example/ml", "pipeline.image_tag=v1.2"]
    )
    assert docker_runner.cpu_image(config) == "registry.example/ml/vrft-cpu:v1.2"


def test_no_engine_is_one_line_naming_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(local.PipelineFailed) as failed:
        docker_runner.ContainerTasks("ghcr.io/vrft/vrft-cpu:0.1.0", tmp_path)
    message = str(failed.value)
    assert "\n" not in message and f"no Docker engine answers at unix://{tmp_path}/none.sock" in message


def _spec(path: Path, task: str = "dataset") -> Path:
    """A task spec as the runner writes it (the container is labelled with its task)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"task": {"id": task}, "inputs": {}}))
    return path


class _Image:
    id = "sha256:" + "ab" * 32


class _Images:
    def __init__(self, present: set[str]) -> None:
        self.present = present

    def get(self, ref: str) -> _Image:
        import docker

        if ref not in self.present:
            raise docker.errors.ImageNotFound(ref)
        return _Image()


class _Container:
    id = "c0ffee"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def logs(self, stream: bool, follow: bool):
        yield b"stage output line 1\n"
        bar = "50%|\u2588\u2588\u258c| 1/2\n".encode()
        yield bar[:6]  # a frame that ends inside a character (the engine cuts frames by bytes)
        yield bar[6:]
        yield b"stage output line 2\n"

    def wait(self) -> dict:
        return {"StatusCode": 3}

    def stop(self, timeout: int) -> None:
        self.calls.append("stop")

    def remove(self, force: bool) -> None:
        self.calls.append("remove")


class _Containers:
    def __init__(self) -> None:
        self.started: list[dict] = []
        self.container = _Container()

    def run(self, **kwargs) -> _Container:
        self.started.append(kwargs)
        return self.container


class _Client:
    def __init__(self, present: set[str]) -> None:
        self.images = _Images(present)
        self.containers = _Containers()
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _Supervisor:
    def __init__(self) -> None:
        self.events: list[str] = []

    def watch_container(self, container_id: str) -> None:
        self.events.append(f"+{container_id}")

    def forget_container(self, container_id: str) -> None:
        self.events.append(f"-{container_id}")


def test_a_missing_image_is_one_line_saying_how_to_build_it(tmp_path: Path) -> None:
    client = _Client(set())
    with pytest.raises(
        local.PipelineFailed, match=r"image r/vrft-cpu:1 is not in the Docker engine: build it"
    ):
        docker_runner.ContainerTasks("r/vrft-cpu:1", tmp_path, client=client)
    assert client.closed


def test_run_checks_engine_and_image_before_starting_any_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vrft.pipelines.local import runner

    started: list[object] = []
    monkeypatch.setattr(runner.LocalServices, "start", lambda self, **kwargs: started.append(self))
    state = tmp_path / "state"

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    assert main(["run", "--runner", "docker", "--state-dir", str(state), str(CONFIG)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no Docker engine answers at unix://{tmp_path}/none.sock" in err[0], err

    client = _Client(set())  # an engine without the image
    monkeypatch.setattr(docker_runner, "docker_client", lambda: client)
    with pytest.raises(
        local.PipelineFailed,
        match=r"image ghcr.io/vrft/vrft-cpu:0.1.0 is not in the Docker engine: build it "
        r"\(VRFT_REGISTRY=ghcr.io/vrft VRFT_TAG=0.1.0 python docker/build.py",
    ):
        runner.run_local(CONFIG, state_dir=state, runner="docker")
    assert client.closed
    assert started == [] and not state.exists()  # no service started, nothing written


def test_the_containers_get_the_stage_environment_only(tmp_path: Path) -> None:
    tasks = docker_runner.ContainerTasks("r/vrft-cpu:1", tmp_path, client=_Client({"r/vrft-cpu:1"}))
    assert tasks.identity() == f"image {_Image.id}"  # the stage cache keys on the image's digest
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
    spec = _spec(tmp_path / "runs" / "r1" / "tasks" / "03-grpo-shots-4" / "spec.json", "grpo/shots-4")
    args = tasks.container_args(spec, environ)
    assert args["image"] == "r/vrft-cpu:1" and args["detach"] is True
    assert args["entrypoint"] == ["python", "-m", "vrft.pipelines.local.task"] and args["command"] == [
        str(spec)
    ]
    assert args["network_mode"] == "host"  # the services listen on loopback
    assert args["user"] == f"{os.getuid()}:{os.getgid()}"
    # which run and task a container belongs to, for `docker ps --filter label=...` and the engine's events
    assert args["labels"] == {"vrft.run": "run-1", "vrft.task": "grpo/shots-4"}
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
    state = tmp_path.resolve()
    shared = [state / "services", state / "runs", cache]
    assert mounts == {(str(p), str(p)) for p in shared}
    assert all(p.is_dir() for p in shared)


def test_a_tasks_container_logs_to_the_run_log_and_is_removed(tmp_path: Path) -> None:
    client, supervisor = _Client({"r/vrft-cpu:1"}), _Supervisor()
    tasks = docker_runner.ContainerTasks("r/vrft-cpu:1", tmp_path, supervisor, client=client)
    log = io.StringIO()
    assert tasks.run(_spec(tmp_path / "spec.json"), {}, log) == 3  # the task's exit status
    assert log.getvalue() == "stage output line 1\n50%|\u2588\u2588\u258c| 1/2\nstage output line 2\n"
    assert client.containers.container.calls == ["stop", "remove"]
    assert supervisor.events == ["+c0ffee", "-c0ffee"]  # the watchdog removes it if the run is killed


def test_the_cli_offers_the_two_runners(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--runner", "podman", str(CONFIG)])
    assert exited.value.code == 2
    assert "invalid choice: 'podman'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown runner 'podman'"):
        local.run_local(CONFIG, runner="podman")
