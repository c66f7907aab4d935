"""The images for real: an air-gapped base, the CPU image built on it, and the whole pipeline run with
every stage in its own container (``vrft run --runner docker``) to the same report as the subprocess
runner. Marked ``containers``: deselected from ``make test``, run by ``make test-containers``.

Needs a Docker engine: ``DOCKER_HOST`` if one answers there, else a private one started with
``docker/engine.sh`` (root, ``docker.io`` installed) in ``$VRFT_ENGINE_DIR`` (default
``/tmp/vrft-test-engine``, kept: the next run reuses its layers) and stopped afterwards. Where none can run, the
module is skipped with the one-line reason. No registry is contacted: the base comes from
``docker/airgap-base.sh`` (debootstrap), packages from the index (``PIP_INDEX_URL``), the CPU torch
wheel from ``TORCH_INDEX_URL`` or, with ``VRFT_TORCH_WHEELS=DIR``, from DIR served on loopback.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vrft.experiment import load_experiment
from vrft.pipelines.local import LocalServices
from vrft.pipelines.local.docker import cpu_image

pytestmark = [pytest.mark.containers, pytest.mark.timeout(5400)]

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "default.yaml"
AIRGAP_BASE = "vrft-airgap-base:bookworm"
VRFT = Path(sys.executable).with_name("vrft")
TORCH_WHEELS_PORT = 18765


def _engine_answers(env: dict[str, str]) -> bool:
    import docker

    try:
        docker.DockerClient(base_url=env["DOCKER_HOST"], timeout=30).ping()
    except Exception:  # no socket, refused, not a Docker engine
        return False
    return True


def _alive(pidfile: Path) -> bool:
    try:
        return Path(f"/proc/{int(pidfile.read_text())}").exists()
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def engine_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """os.environ with DOCKER_HOST pointing at a running engine (started here when needed)."""
    env = dict(os.environ)
    if env.get("DOCKER_HOST") and _engine_answers(env):
        yield env
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        pytest.skip("no Docker engine can start here (needs root and dockerd: apt-get install docker.io)")
    # One fixed directory (short: the socket path must fit sun_path): the next run reuses the images and
    # layers built here instead of leaving gigabytes per run behind.
    directory = Path(os.environ.get("VRFT_ENGINE_DIR", "/tmp/vrft-test-engine"))
    already_running = _alive(directory / "dockerd.pid")
    started = subprocess.run(
        [str(REPO / "docker" / "engine.sh"), "start", str(directory)], capture_output=True, text=True
    )
    if started.returncode != 0:
        pytest.skip(f"no Docker engine can start here: {started.stderr.strip().splitlines()[-1]}")
    env["DOCKER_HOST"] = started.stdout.strip().partition("=")[2]
    try:
        yield env
    finally:
        if not already_running:  # an engine somebody else started keeps running
            subprocess.run([str(REPO / "docker" / "engine.sh"), "stop", str(directory)], check=False)


@pytest.fixture(scope="module")
def torch_wheels() -> Iterator[list[str]]:
    """Build arguments for the CPU torch wheel: a loopback server for $VRFT_TORCH_WHEELS, if set."""
    directory = os.environ.get("VRFT_TORCH_WHEELS")
    if not directory:
        yield []
        return
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    # A fixed port: the URL is a build argument, and a new value would invalidate the cached layers.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", TORCH_WHEELS_PORT), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    try:
        yield [
            "--build-arg",
            f"TORCH_FIND_LINKS=http://127.0.0.1:{server.server_port}/",
            "--build-arg",
            f"TORCH_INDEX_URL={index}",
        ]
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def image(engine_env: dict[str, str], torch_wheels: list[str]) -> str:
    """The CPU image the default config names, built on the air-gapped base (layers cached by the engine)."""
    import docker

    client = docker.DockerClient(base_url=engine_env["DOCKER_HOST"], timeout=600)
    try:
        client.images.get(AIRGAP_BASE)
    except docker.errors.ImageNotFound:
        subprocess.run([str(REPO / "docker" / "airgap-base.sh"), AIRGAP_BASE], env=engine_env, check=True)
    ref = cpu_image(load_experiment(CONFIG, []))
    registry, _, rest = ref.rpartition("/")
    tag = rest.rpartition(":")[2]
    index = (
        ["--build-arg", f"PIP_INDEX_URL={engine_env['PIP_INDEX_URL']}"]
        if engine_env.get("PIP_INDEX_URL")
        else []
    )
    subprocess.run(
        [
            sys.executable,
            str(REPO / "docker" / "build.py"),
            "--no-push",
            "--only",
            "vrft-cpu",
            "--base-image",
            AIRGAP_BASE,
            "--network",
            "host",
            *index,
            *torch_wheels,
        ],
        env={**engine_env, "VRFT_REGISTRY": registry, "VRFT_TAG": tag},
        check=True,
    )
    # Built FROM the air-gapped base, not pulled.
    layers = client.images.get(ref).history()
    assert any(layer["Id"] == client.images.get(AIRGAP_BASE).id for layer in layers)
    client.close()
    return ref


def _without_run_ids(value: object) -> object:
    """The report's tables without what names the run: the MLflow run ids the rows link to and the
    evaluation artifacts' URIs they cite (``runs/<run id>/...``), new in every run."""
    if isinstance(value, dict):
        return {k: _without_run_ids(v) for k, v in value.items() if k not in ("run_id", "sources")}
    if isinstance(value, list):
        return [_without_run_ids(v) for v in value]
    return value


def _differences(a: object, b: object, path: str = "tables") -> list[str]:
    """Where two JSON values differ, one line per leaf (the assertion message: the tables are long)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            line
            for k in sorted(set(a) | set(b), key=str)
            for line in _differences(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}.{k}")
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [line for i, (x, y) in enumerate(zip(a, b)) for line in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _run(env: dict[str, str], state: Path, runner: str) -> dict:
    output = state / "report"
    result = subprocess.run(
        [
            str(VRFT),
            "run",
            "--runner",
            runner,
            "--state-dir",
            str(state / "state"),
            "--output-dir",
            str(output),
            str(CONFIG),
        ],
        env=env,
        cwd=state,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = next((state / "state" / "logs").glob("*.log")).read_text()
    return {
        "tables": _without_run_ids(json.loads((output / "tables.json").read_text())),
        "log": log,
        "tracking_uri": LocalServices(state / "state" / "services").tracking_uri,
    }


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: SeaweedFS's unix sockets live under the state dir, and pytest's tmp paths are too long."""
    directory = Path(tempfile.mkdtemp(prefix="vrft-ct-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_every_stage_runs_in_its_own_container_to_the_subprocess_runners_report(
    engine_env: dict[str, str], image: str, short_dir: Path
) -> None:
    (short_dir / "d").mkdir()
    (short_dir / "s").mkdir()
    in_containers = _run(engine_env, short_dir / "d", "docker")
    in_process = _run(engine_env, short_dir / "s", "subprocess")

    differences = _differences(in_containers["tables"], in_process["tables"])
    assert not differences, "containers != subprocess runner:\n" + "\n".join(differences[:40])
    assert in_containers["tables"][0]["rows"]  # a report with results, not two empty ones

    # Each task ran in a container of the image (the run's log says so per task), none in-process.
    tasks = in_containers["log"].count("\n===== ")
    assert tasks >= 5
    assert in_containers["log"].count(f", in a container of {image} (") == tasks
    assert "in a container" not in in_process["log"]

    # Each stage's MLflow run records the image it ran in.
    import mlflow

    client = mlflow.MlflowClient(in_containers["tracking_uri"])
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    stage_runs = [r for r in runs if "stage" in r.data.tags]
    assert len(stage_runs) >= 5 and {r.info.status for r in stage_runs} == {"FINISHED"}
    assert {r.data.tags.get("image") for r in stage_runs} == {image}
    # and the commit the image was built from (no git checkout inside)
    assert len({r.data.tags.get("git_commit") for r in stage_runs}) == 1
    assert stage_runs[0].data.tags["git_commit"] != "unknown"
