"""``vrft run --runner docker``: every task in its own container of the project's CPU image.

The image is the one the config names (``REGISTRY/vrft-cpu:TAG``, built by ``docker/build.py``) and
must be in the engine already: no registry is contacted. Containers are started through the docker
SDK (``DOCKER_HOST`` honoured) with the task module as their entry point
(``python -m vrft.pipelines.local.task SPEC``), on the host network (the local services listen on
loopback), as the calling user, with the run's directories bind-mounted at the same paths (what a
task writes there is the caller's, as with subprocesses). They get the stage environment (services,
run id, MLflow parent run, vrft's settings) and ``VRFT_IMAGE``, nothing else of this process's
environment. Each container is labelled with the run and the task it runs (``vrft.run``, ``vrft.task``:
``docker ps --filter label=vrft.run=RUN``), registered with the supervisor (removed if the run is
killed) and removed when its task ends. The stage cache keys on the image's id, its digest: a new image pushed
under the same tag reruns every stage.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
from pathlib import Path
from typing import Any, TextIO

from vrft.components.cluster import CPU_IMAGE, image_refs
from vrft.experiment import ExperimentConfig
from vrft.pipelines.local.errors import PipelineFailed
from vrft.pipelines.local.supervisor import Supervisor
from vrft.stage import IMAGE_ENV, RUN_ID_ENV

# The stage environment a container gets: what LocalServices.env() sets (S3, MLflow), the run's ids
# and vrft's own settings.
_STAGE_ENV_PREFIXES = ("AWS_", "MLFLOW_", "VRFT_")
_STAGE_ENV_NAMES = ("DO_NOT_TRACK",)
#: Seconds a container gets to stop after SIGTERM before it is killed.
STOP_SECONDS = 10
#: The labels of a task's container: the local run and the planned task it runs.
RUN_LABEL, TASK_LABEL = "vrft.run", "vrft.task"


def cpu_image(config: ExperimentConfig) -> str:
    """The CPU image the config names (``REGISTRY/vrft-cpu:TAG``), which runs every task locally."""
    return next(
        ref
        for ref in image_refs(config.pipeline.image_registry, config.pipeline.image_tag).values()
        if ref.rsplit("/", 1)[-1].startswith(f"{CPU_IMAGE}:")
    )


def docker_client():
    """A docker SDK client (DOCKER_HOST honoured); PipelineFailed in one line when no engine answers."""
    try:
        import docker
    except ImportError:
        raise PipelineFailed(
            "--runner docker needs the docker Python SDK (pip install 'vrft[pipeline]')"
        ) from None
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, FileNotFoundError, ...
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        raise PipelineFailed(
            f"--runner docker: no Docker engine answers at {where} ({type(exc).__name__}); "
            "start one (docker/engine.sh start) and set DOCKER_HOST"
        ) from None
    return client


def _missing_image(image: str) -> str:
    registry, _, rest = image.rpartition("/")
    return (
        f"image {image} is not in the Docker engine: build it (VRFT_REGISTRY={registry} "
        f"VRFT_TAG={rest.rpartition(':')[2]} python docker/build.py --no-push --only vrft-cpu; "
        "docs/images.md) or set pipeline.image_registry/image_tag"
    )


def require_engine_and_image(image: str) -> None:
    """PipelineFailed in one line unless a Docker engine answers (DOCKER_HOST honoured) and holds
    ``image``: nothing is pulled. `vrft run --runner docker` checks this before starting any service."""
    import docker

    client = docker_client()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise PipelineFailed(_missing_image(image)) from None
    finally:
        client.close()


class ContainerTasks:
    """Runs each task in a container of ``image``; see the module docstring."""

    def __init__(
        self, image: str, state_dir: Path, supervisor: Supervisor | None = None, client: Any = None
    ) -> None:
        import docker

        self.image, self.state_dir, self.supervisor = image, Path(state_dir).resolve(), supervisor
        self.where = f"in a container of {image}"
        self.client = client or docker_client()
        try:
            self.image_id = self.client.images.get(image).id
        except docker.errors.ImageNotFound:
            self.client.close()
            raise PipelineFailed(_missing_image(image)) from None

    def identity(self) -> str:
        """The image's id (its content digest): what the stage cache keys on instead of the local code."""
        return f"image {self.image_id}"

    def container_args(self, spec_file: Path, env: dict[str, str]) -> dict[str, Any]:
        """The arguments of ``containers.run`` for the task ``spec_file`` describes."""
        environment = {
            key: value
            for key, value in env.items()
            if key.startswith(_STAGE_ENV_PREFIXES) or key in _STAGE_ENV_NAMES
        }
        environment |= {IMAGE_ENV: self.image, "HOME": "/tmp", "PYTHONUNBUFFERED": "1"}
        shared = {
            self.state_dir / "services",  # the sqlite MLflow store
            self.state_dir / "runs",  # the tasks' specs and outputs
            Path(environment.get("VRFT_CACHE_DIR") or self.state_dir / "cache"),
        }
        for path in shared:
            path.mkdir(parents=True, exist_ok=True)
        from docker.types import Mount

        task = json.loads(spec_file.read_text(encoding="utf-8"))["task"]["id"]
        return {
            "image": self.image,
            "entrypoint": ["python", "-m", "vrft.pipelines.local.task"],
            "command": [str(spec_file)],
            "environment": environment,
            "network_mode": "host",
            "user": f"{os.getuid()}:{os.getgid()}",
            "mounts": [Mount(target=str(p), source=str(p), type="bind") for p in sorted(shared)],
            "labels": {RUN_LABEL: environment.get(RUN_ID_ENV, ""), TASK_LABEL: task},
            "detach": True,
        }

    def run(self, spec_file: Path, env: dict[str, str], log: TextIO, stage: str | None = None) -> int:
        """Run the task of ``spec_file`` in a container of its own (whatever its ``stage``)."""
        container = self.client.containers.run(**self.container_args(spec_file, env))
        if self.supervisor is not None:
            self.supervisor.watch_container(container.id)
        try:
            # The engine's log frames end at its buffer's size, not at a character: a multi-byte one
            # (a progress bar's blocks) split between two frames must not become two U+FFFD.
            text = codecs.getincrementaldecoder("utf-8")(errors="replace")
            for chunk in container.logs(stream=True, follow=True):
                log.write(text.decode(chunk))
            log.write(text.decode(b"", final=True))
            log.flush()
            return int(container.wait().get("StatusCode", 1))
        finally:  # also on Ctrl-C / SIGTERM of the run
            with contextlib.suppress(Exception):
                container.stop(timeout=STOP_SECONDS)
            with contextlib.suppress(Exception):
                container.remove(force=True)
            if self.supervisor is not None:
                self.supervisor.forget_container(container.id)
