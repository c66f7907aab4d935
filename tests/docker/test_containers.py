"""The images for real: an air-gapped base, the CPU image built on it, the CLI and a stage command in
that image, and the whole pipeline run with every stage in its own container, by ``vrft run --runner
docker`` and by ``airflow dags test`` with DockerOperator tasks (``vrft airflow test --executor
docker``), each to the same report as the subprocess runner's ``vrft run``. Marked ``containers``: deselected from ``make
test``, run by ``make test-containers``.

Needs a Docker engine: ``DOCKER_HOST`` if one answers there, else a private one started with
``docker/engine.sh`` in ``$VRFT_ENGINE_DIR`` (default ``/tmp/vrft-test-engine``, kept: the next run
reuses its layers; ``make clean-containers`` removes it) and stopped afterwards. What it needs and
lacks is installed by ``docker/prerequisites.py`` where it can be (root: ``docker.io``,
``debootstrap``); where it cannot, the tests **fail** with that one line: a skip would read as a pass.
No registry is contacted: the base comes from ``docker/airgap-base.sh`` (debootstrap), packages from the
index (``PIP_INDEX_URL``), the CPU torch wheel from this machine's pip (``docker/build.py``). Every
step's output goes to a log file under ``$VRFT_ENGINE_DIR/logs``; a failing step is one line naming it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psutil
import pytest

from vrft import __version__
from vrft.experiment import load_experiment
from vrft.pipelines.local import LocalServices
from vrft.pipelines.local.docker import RUN_LABEL, TASK_LABEL, cpu_image
from vrft.pipelines.plan import build_plan
from vrft.stage import RUN_ID_ENV

pytestmark = [pytest.mark.containers, pytest.mark.timeout(5400)]

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "default.yaml"
VRFT = Path(sys.executable).with_name("vrft")


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"vrft_docker_{name}", REPO / "docker" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module of their class
    spec.loader.exec_module(module)
    return module


prerequisites = _load("prerequisites")
AIRGAP_BASE = prerequisites.AIRGAP_BASE
# One fixed directory (short: the socket path must fit sun_path): the next run reuses the images and
# layers built here instead of leaving gigabytes per run behind.
ENGINE_DIR = Path(os.environ.get("VRFT_ENGINE_DIR") or prerequisites.DEFAULT_ENGINE_DIR)
LOGS = ENGINE_DIR / "logs"


def _fail(message: str) -> None:
    """Fail with one line, no traceback (the cause is in the message and the log file it names)."""
    pytest.fail(" ".join(message.split()), pytrace=False)


def _last_lines(log: Path, count: int = 3) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(line[:200] for line in lines[-count:])


def _run_logged(what: str, command: list[str], log: Path, env: dict[str, str]) -> None:
    """Run a build step with its output in ``log``; on failure, fail with one line and the log's path."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if done.returncode != 0:
        _fail(f"{what} failed (exit {done.returncode}): {_last_lines(log)} (full log: {log})")


def _engine_answers(env: dict[str, str]) -> bool:
    return prerequisites.engine_request(env["DOCKER_HOST"], "/_ping") == 200


def _alive(pidfile: Path) -> bool:
    try:
        return Path(f"/proc/{int(pidfile.read_text())}").exists()
    except (OSError, ValueError):
        return False


def _engine_leftovers() -> list[str]:
    """What of the private engine outlives ``docker/engine.sh stop``: its daemons (dockerd, its
    containerd, containers' shims), mounts under the engine directory (network namespaces, overlays),
    and anything in it besides the kept images (``data/``) and ``logs/``."""
    engine_dir = str(ENGINE_DIR.resolve())
    left = []
    for process in psutil.process_iter(["name", "cmdline"]):
        name, cmdline = process.info["name"] or "", " ".join(process.info["cmdline"] or ())
        if name in ("dockerd", "containerd") or name.startswith("containerd-shim"):
            if engine_dir in cmdline:
                left.append(f"process {process.pid} {cmdline[:120]}")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mount_point = line.split()[1]
        if mount_point.startswith(engine_dir + "/"):
            left.append(f"mount {mount_point}")
    left += [f"file {entry}" for entry in sorted(ENGINE_DIR.iterdir()) if entry.name not in ("data", "logs")]
    return left


@pytest.fixture(scope="module")
def engine_env() -> Iterator[dict[str, str]]:
    """os.environ with DOCKER_HOST pointing at a running engine (started here when needed)."""
    env = dict(os.environ)
    try:
        prerequisites.ensure(ENGINE_DIR, env.get("DOCKER_HOST") or None)
    except prerequisites.Missing as exc:
        _fail(f"test-containers: {exc}")
    if env.get("DOCKER_HOST") and _engine_answers(env):
        yield env
        return
    already_running = _alive(ENGINE_DIR / "dockerd.pid")
    engine = [str(REPO / "docker" / "engine.sh"), "start", str(ENGINE_DIR)]
    started = subprocess.run(engine, capture_output=True, text=True)
    if started.returncode != 0:
        _fail(
            f"docker/engine.sh start {ENGINE_DIR} failed: {(started.stderr.strip() or '?').splitlines()[-1]}"
        )
    env["DOCKER_HOST"] = started.stdout.strip().partition("=")[2]
    try:
        yield env
    finally:
        if not already_running:  # an engine somebody else started keeps running
            engine[1] = "stop"
            stopped = subprocess.run(engine, capture_output=True, text=True)
            left = _engine_leftovers()
            if stopped.returncode != 0 or left:
                _fail(
                    f"docker/engine.sh stop {ENGINE_DIR} (exit {stopped.returncode}) left: {'; '.join(left)}"
                )


@pytest.fixture(scope="module")
def image(engine_env: dict[str, str]) -> str:
    """The CPU image the default config names, built on the air-gapped base (layers cached by the engine)."""
    import docker

    client = docker.DockerClient(base_url=engine_env["DOCKER_HOST"], timeout=600)
    try:
        client.images.get(AIRGAP_BASE)
    except docker.errors.ImageNotFound:
        command = [str(REPO / "docker" / "airgap-base.sh"), AIRGAP_BASE]
        _run_logged("docker/airgap-base.sh", command, LOGS / "airgap-base.log", engine_env)
    ref = cpu_image(load_experiment(CONFIG, []))
    registry, _, rest = ref.rpartition("/")
    tag = rest.rpartition(":")[2]
    index = (
        ["--build-arg", f"PIP_INDEX_URL={engine_env['PIP_INDEX_URL']}"]
        if engine_env.get("PIP_INDEX_URL")
        else []
    )
    build = [
        sys.executable,
        str(REPO / "docker" / "build.py"),
        "--no-push",
        "--only",
        "vrft-cpu",
        "--base-image",
        AIRGAP_BASE,
        "--network",
        "host",
        "--quiet",
        "--log-dir",
        str(LOGS),
        *index,
    ]
    built = subprocess.run(
        build, env={**engine_env, "VRFT_REGISTRY": registry, "VRFT_TAG": tag}, capture_output=True, text=True
    )
    if built.returncode != 0:  # build.py's one line: the failing step, its error lines, the log file
        _fail((built.stderr.strip() or built.stdout.strip() or "?").splitlines()[-1])
    # Built FROM the air-gapped base, not pulled.
    layers = client.images.get(ref).history()
    assert any(layer["Id"] == client.images.get(AIRGAP_BASE).id for layer in layers)
    # What earlier builds of ours left untagged (a failed build's last step, the image this one
    # replaced) only takes disk: the kept engine stays at one image and its base.
    client.images.prune(filters={"dangling": True, "label": "vrft.project=vrft"})
    client.close()
    return ref


def test_the_image_runs_the_cli_and_a_stage_on_the_paths_the_docs_use(
    engine_env: dict[str, str], image: str
) -> None:
    import docker

    client = docker.DockerClient(base_url=engine_env["DOCKER_HOST"], timeout=600)
    try:
        version = client.containers.run(image, ["vrft", "--version"], remove=True, network_mode="none")
        assert version.decode().strip() == f"vrft {__version__}"
        # configs/default.yaml is a link into the package's resources, as in the repository; the stage
        # needs no network (synthetic images) and writes as the image's non-root user.
        stage = "vrft dataset build configs/default.yaml -o /tmp/dataset && ls /tmp/dataset && id -u"
        try:
            output = client.containers.run(
                image, ["sh", "-ec", stage], remove=True, network_mode="none", stderr=True
            ).decode()
        except docker.errors.ContainerError as exc:
            raise AssertionError(f"{stage}: exit {exc.exit_status}: {exc.stderr.decode()[-2000:]}") from None
    finally:
        client.close()
    lines = output.split()
    assert {"dataset_dict.json", "manifest.json", "train", "eval"} <= set(lines), output[-2000:]
    assert lines[-1] == "1000"


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


def _container_events(client, since: float, until: float) -> list[dict]:
    """The engine's container events between two moments (the engine runs on this machine: one clock)."""
    stream = client.events(since=int(since), until=int(until) + 1, filters={"type": "container"}, decode=True)
    return [event for event in stream if since * 1e9 <= event.get("timeNano", 0) <= until * 1e9]


def _of_vrft(event: dict, image: str) -> bool:
    """Whether a container event is of a vrft task's container (the image or a run's label)."""
    attributes = event["Actor"]["Attributes"]
    return attributes.get("image") == image or RUN_LABEL in attributes


def _processes_of(state: Path, run_id: str) -> list[str]:
    """Processes of this machine that belong to a run: its state directory in their command line
    (the services, the tasks' specs), working directory or environment (Airflow's AIRFLOW_HOME, a
    container task's VRFT_STATE_DIR), or its run id in their environment (the tasks, in containers
    too: their processes are this machine's)."""
    found = []
    for process in psutil.process_iter():
        try:
            cmdline = " ".join(process.cmdline())
            cwd, environ = process.cwd(), process.environ()
        except (psutil.Error, OSError):  # gone, a zombie, or not ours to read
            continue
        in_environment = environ.get(RUN_ID_ENV) == run_id or any(str(state) in v for v in environ.values())
        if str(state) in cmdline or cwd.startswith(str(state)) or in_environment:
            found.append(f"{process.pid} {cmdline[:200]}")
    return found


def _run(env: dict[str, str], state: Path, runner: str, client) -> dict:
    """``vrft run --runner RUNNER`` in ``state``: its report's tables, its task record (tasks.json), the
    engine's container events while it ran, what it left (processes, containers) and its MLflow store."""
    output = state / "report"
    started = time.time()
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
    ended = time.time()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (record_file,) = (state / "state" / "runs").glob("*/tasks.json")
    record = json.loads(record_file.read_text())
    return {
        "tables": _without_run_ids(json.loads((output / "tables.json").read_text())),
        "run_id": record["run_id"],
        "tasks": record["tasks"],
        "events": _container_events(client, started, ended),
        "processes_left": _processes_of(state, record["run_id"]),
        "containers_left": client.containers.list(
            all=True, filters={"label": f"{RUN_LABEL}={record['run_id']}"}
        ),
        "tracking_uri": LocalServices(state / "state" / "services").tracking_uri,
    }


def _short_dir() -> Path:
    """A short directory: SeaweedFS's unix sockets live under the state dir, and pytest's tmp paths are too long."""
    return Path(tempfile.mkdtemp(prefix="vrft-ct-", dir="/tmp"))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    directory = _short_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def subprocess_run(engine_env: dict[str, str], image: str) -> Iterator[dict]:
    """``vrft run configs/default.yaml`` with the subprocess runner, on a fresh state directory: the
    reference the containerised runs (``--runner docker``, Airflow's DockerOperator) are compared with."""
    import docker

    directory = _short_dir()
    (directory / "s").mkdir()
    client = docker.DockerClient(base_url=engine_env["DOCKER_HOST"], timeout=600)
    try:
        yield _run(engine_env, directory / "s", "subprocess", client)
    finally:
        client.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_every_stage_runs_in_its_own_container_to_the_subprocess_runners_report(
    engine_env: dict[str, str], image: str, subprocess_run: dict, short_dir: Path
) -> None:
    import docker

    (short_dir / "d").mkdir()
    in_process = subprocess_run
    client = docker.DockerClient(base_url=engine_env["DOCKER_HOST"], timeout=600)
    try:
        in_containers = _run(engine_env, short_dir / "d", "docker", client)
    finally:
        client.close()

    differences = _differences(in_containers["tables"], in_process["tables"])
    assert not differences, "containers != subprocess runner:\n" + "\n".join(differences[:40])
    assert in_containers["tables"][0]["rows"]  # a report with results, not two empty ones

    # Both runs ran every planned task (fresh state dirs: nothing reused), in the plan's order.
    planned = [task.id for task in build_plan(load_experiment(CONFIG, [])).tasks]
    assert len(planned) >= 5
    for run in (in_containers, in_process):
        assert [(t["task"], t["status"]) for t in run["tasks"]] == [(task, "ran") for task in planned]

    # The engine's own account: each task of the docker run started exactly one container, of the
    # image, labelled with that run and task; each exited 0 and was removed.
    run_id, events = in_containers["run_id"], in_containers["events"]
    ours = [e for e in events if e["Actor"]["Attributes"].get(RUN_LABEL) == run_id]
    started = [e for e in ours if e["Action"] == "start"]
    assert Counter(e["Actor"]["Attributes"][TASK_LABEL] for e in started) == Counter(planned)
    assert {e["Actor"]["Attributes"]["image"] for e in started} == {image}
    containers = {e["Actor"]["ID"] for e in started}
    assert {e["Actor"]["ID"]: e["Actor"]["Attributes"]["exitCode"] for e in ours if e["Action"] == "die"} == {
        container: "0" for container in containers
    }
    assert {e["Actor"]["ID"] for e in ours if e["Action"] == "destroy"} == containers
    # No other container of the image ran meanwhile; the subprocess runner started none at all (on
    # an engine of one's own, DOCKER_HOST, others' containers of other images may come and go).
    assert [e for e in events if e["Actor"]["Attributes"].get("image") == image and e not in ours] == []
    assert [e for e in in_process["events"] if _of_vrft(e, image)] == []

    # Nothing either run started outlives it: no process (services, tasks, watchdog), no container.
    for run in (in_containers, in_process):
        assert run["processes_left"] == [] and run["containers_left"] == [], run["run_id"]

    # Each stage's MLflow run records the image it ran in.
    import mlflow

    mlflow_client = mlflow.MlflowClient(in_containers["tracking_uri"])
    runs = [
        r for e in mlflow_client.search_experiments() for r in mlflow_client.search_runs([e.experiment_id])
    ]
    # (the stages' runs: nested under the pipeline run, which is tagged stage=pipeline and ran in no image)
    stage_runs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(stage_runs) >= 5 and {r.info.status for r in stage_runs} == {"FINISHED"}
    assert {r.data.tags.get("stage") for r in stage_runs} >= {"dataset", "train", "evaluate", "report"}
    assert {r.data.tags.get("image") for r in stage_runs} == {image}
    # and the commit the image was built from (no git checkout inside)
    assert len({r.data.tags.get("git_commit") for r in stage_runs}) == 1
    assert stage_runs[0].data.tags["git_commit"] != "unknown"


def test_airflow_dags_test_with_docker_operator_tasks_reports_the_subprocess_runners_numbers(
    engine_env: dict[str, str], image: str, subprocess_run: dict, short_dir: Path
) -> None:
    """``vrft airflow test --executor docker``: ``airflow dags test`` of the default's DAG, every task a
    DockerOperator container of the CPU image on this engine, to the report of ``vrft run``."""
    import docker
    import mlflow

    state, output = short_dir / "state", short_dir / "report"
    client = docker.DockerClient(base_url=engine_env["DOCKER_HOST"], timeout=600)
    try:
        started = time.time()
        result = subprocess.run(
            [
                str(VRFT),
                "airflow",
                "test",
                str(CONFIG),
                "--executor",
                "docker",
                "--state-dir",
                str(state),
                "--output-dir",
                str(output),
            ],
            env=engine_env,
            cwd=short_dir,
            capture_output=True,
            text=True,
        )
        ended = time.time()
        logs = sorted((state / "logs").glob("airflow-*.log"))
        assert result.returncode == 0, (
            result.stdout[-3000:] + result.stderr[-3000:] + (logs[-1].read_text()[-6000:] if logs else "")
        )
        print(result.stdout.strip())  # the DAG run's time, for docs/airflow.md
        (run_dir,) = (state / "runs").iterdir()
        run_id = run_dir.name
        events = _container_events(client, started, ended)
        processes_left = _processes_of(state, run_id)
        containers_left = client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
    finally:
        client.close()

    tables = _without_run_ids(json.loads((output / "tables.json").read_text()))
    differences = _differences(tables, subprocess_run["tables"])
    assert not differences, "airflow (docker) != subprocess runner:\n" + "\n".join(differences[:40])
    assert tables[0]["rows"]
    assert run_id.startswith("airflow-manual")

    # The engine's account: each planned task ran in exactly one container of the image, labelled
    # with this run and the task, which exited 0 and was removed; no other container of the image ran.
    planned = [task.id for task in build_plan(load_experiment(CONFIG, [])).tasks]
    ours = [e for e in events if e["Actor"]["Attributes"].get(RUN_LABEL) == run_id]
    started_events = [e for e in ours if e["Action"] == "start"]
    assert Counter(e["Actor"]["Attributes"][TASK_LABEL] for e in started_events) == Counter(planned)
    assert {e["Actor"]["Attributes"]["image"] for e in started_events} == {image}
    containers = {e["Actor"]["ID"] for e in started_events}
    assert {e["Actor"]["ID"]: e["Actor"]["Attributes"]["exitCode"] for e in ours if e["Action"] == "die"} == {
        container: "0" for container in containers
    }
    assert {e["Actor"]["ID"] for e in ours if e["Action"] == "destroy"} == containers
    assert [e for e in events if e["Actor"]["Attributes"].get("image") == image and e not in ours] == []
    # Every task wrote its outputs in this run's task directories (nothing reused: a fresh state).
    assert sorted(p.parent.name for p in run_dir.glob("tasks/*/outputs.json")) == sorted(
        task.replace("/", "-") for task in planned
    )

    # Nothing is left: no process (airflow, services, tasks), no container labelled with the run.
    assert processes_left == [] and containers_left == [], (processes_left, containers_left)

    # One MLflow parent run, ended by the report, with every stage's run under it, in the image.
    mlflow_client = mlflow.MlflowClient(LocalServices(state / "services").tracking_uri)
    runs = [
        r for e in mlflow_client.search_experiments() for r in mlflow_client.search_runs([e.experiment_id])
    ]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_name == f"pipeline-{run_id}" and parent.info.status == "FINISHED"
    stage_runs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(stage_runs) >= 5 and {r.info.status for r in stage_runs} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in stage_runs} == {parent.info.run_id}
    assert {r.data.tags.get("stage") for r in stage_runs} >= {"dataset", "train", "evaluate", "report"}
    assert {r.data.tags.get("image") for r in stage_runs} == {image}
