"""``vrft run``: the whole DAG on this machine with kfp's local runner, real S3 and MLflow.

The embedded default starts a loopback-only SeaweedFS S3 server and an MLflow store (sqlite, with
artifacts in that S3) under ``.vrft/`` (:mod:`vrft.services`), runs the pipeline with
``kfp.local.SubprocessRunner`` (each component in a subprocess of this environment), downloads the
report and stops the services again, unless they were already up (``vrft up``), in which case
they are left running.

``runner="docker"`` runs every stage in its own container of the project's CPU image instead
(``kfp.local.DockerRunner``; the image named by ``pipeline.image_registry``/``image_tag``, built by
``docker/build.py``), on the host network so that it reaches the same local S3 and MLflow services.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vrft.experiment import ExperimentConfig, load_experiment
from vrft.pipelines.kfp_client import STAGES
from vrft.services import LocalServices, ServicesError
from vrft.storage import ArtifactStore
from vrft.supervisor import GRACE_SECONDS, Supervisor
from vrft.tracking import Tracker, TrackingStoreError

DEFAULT_STATE_DIR = Path(".vrft")
RUNNERS = ("subprocess", "docker")


class PipelineFailed(RuntimeError):
    """A stage failed; the message names it and the log file."""


@dataclass
class LocalRunResult:
    run_id: str
    report_dir: Path
    report_uri: str
    mlflow_parent_run_id: str | None
    seconds: float
    ui_hint: str
    log_file: Path


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The local runner's own task lines; everything else (executor inputs, stage logs) goes to the log file.
_PROGRESS = re.compile(r"(Executing task|Task .* finished with status|Pipeline .* finished with status)")


class _ProgressLog(io.TextIOBase):
    """A stdout that writes everything to the run's log file and echoes only task progress lines."""

    def __init__(self, log: io.TextIOBase, echo: io.TextIOBase) -> None:
        self._log, self._echo, self._pending = log, echo, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._log.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            clean = _ANSI.sub("", line)
            if _PROGRESS.search(clean):
                self._echo.write(clean.strip() + "\n")
                self._echo.flush()
        return len(text)

    def flush(self) -> None:
        self._log.flush()


@contextlib.contextmanager
def _progress_to(log_file: Path) -> Iterator[None]:
    """Send this process's stdout (the local runner prints each component's output there) to
    ``log_file``, keeping one line per task on the console."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as log:
        stream = _ProgressLog(log, sys.__stdout__ or sys.stdout)
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the runner's subprocesses, restoring them afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _stages_in_own_groups(supervisor: Supervisor) -> Iterator[None]:
    """Run each stage of kfp's SubprocessRunner in its own process group, registered with the
    supervisor, and stop the group if the run unwinds (error, Ctrl-C, SIGTERM) while it runs."""
    from kfp.local import subprocess_task_handler

    def run_local_subprocess(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        if supervisor.stopping.is_set():  # the run is being stopped: start nothing more
            return 1
        env = {**os.environ, **env_vars} if env_vars else None
        process = subprocess.Popen(
            full_command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        )
        supervisor.watch_group(process.pid)
        if supervisor.stopping.is_set():  # the signal came while it was starting
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        try:
            assert process.stdout is not None
            for line in iter(process.stdout.readline, ""):
                print(line, end="")
            print("\n")
            return process.wait()
        finally:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(GRACE_SECONDS)
            from vrft.supervisor import terminate_groups

            terminate_groups([process.pid], grace=0)  # whatever the stage left in its group
            if process.stdout is not None:
                process.stdout.close()
            process.wait()
            supervisor.forget_group(process.pid)

    original = subprocess_task_handler.run_local_subprocess
    subprocess_task_handler.run_local_subprocess = run_local_subprocess
    try:
        yield
    finally:
        subprocess_task_handler.run_local_subprocess = original


@contextlib.contextmanager
def _stop_stages_on_signals(supervisor: Supervisor) -> Iterator[None]:
    """Ctrl-C and SIGTERM first signal the running stages' groups, then unwind as usual (a stage
    run by kfp in a worker thread would otherwise keep the run waiting for it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: object) -> None:
        supervisor.stop_soon()
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)
        elif signum == signal.SIGINT or chained == signal.SIG_DFL:
            raise KeyboardInterrupt

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, value in previous.items():
            signal.signal(sig, value)


def stage_cache_root(state_dir: Path, tracker: Tracker) -> Path:
    """kfp's cache of stage results for this MLflow store: a cached stage's MLflow run lives in the
    store it ran against, so another store (e.g. a deleted and recreated ``mlflow.db``) starts cold
    and every stage runs, and logs, again."""
    return state_dir / "kfp" / "cache" / tracker.store_identity()


_INTEGRITY_ERROR = re.compile(r"ArtifactIntegrityError: ((?:s3|file)://\S+?): ")


def invalidate_cached_outputs(cache_dir: Path, object_uri: str) -> list[Path]:
    """Delete kfp cache entries (any store's) whose output artifact holds ``object_uri``, so the
    next run rebuilds the damaged artifact instead of failing on it again; return them."""
    removed = []
    for entry in sorted(cache_dir.rglob("*.json")):
        try:
            text = entry.read_text(encoding="utf-8")
            outputs = json.loads(text)
        except (OSError, ValueError):
            continue
        uris = re.findall(r'"uri": "([^"]+)"', json.dumps(outputs))
        if any(object_uri.startswith(uri.rstrip("/") + "/") or object_uri == uri for uri in uris):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _failure_hint(log_file: Path, cache_dir: Path) -> str:
    """For a run that failed on a damaged artifact: drop the cached stage results that point at it."""
    try:
        text = _ANSI.sub("", log_file.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return ""
    damaged = _INTEGRITY_ERROR.findall(text)
    if not damaged:
        return ""
    uri = damaged[-1]
    removed = invalidate_cached_outputs(cache_dir, uri)
    if removed:
        return (
            f" {uri} is damaged; the cached result of the stage that wrote it was removed, so the next "
            "run rebuilds it."
        )
    return f" {uri} is damaged; delete {cache_dir} to rebuild every stage on the next run."


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def run_pipeline(
    config: ExperimentConfig, *, state_dir: Path, run_id: str, runner: str = "subprocess"
) -> tuple[str, str | None]:
    """Run the DAG under kfp's local runner; return (report URI, parent run).

    ``runner``: ``subprocess`` (stages in the current environment) or ``docker`` (each stage in a
    container of the CPU image, see :func:`docker_runner`).
    """
    import logging
    import warnings

    from kfp import local

    from vrft.components.runtime import RUN_ID_ENV
    from vrft.pipelines.dag import build_pipeline

    # Resources, GPUs and display names are for the cluster; the local runner says so per task.
    warnings.filterwarnings(
        "ignore", message=r"Task '.*': settings .* have no effect in the current local runner"
    )
    tracker = Tracker(config.pipeline.tracking_uri or None)
    logging.getLogger().handlers.clear()  # kfp adds its own handler, bound to the redirected stdout
    cache_root = stage_cache_root(state_dir, tracker)
    tags = {"run_id": run_id, "config": config.experiment.name, "config_sha256": config.digest()}
    stage_env = {RUN_ID_ENV: run_id, "VRFT_CACHE_DIR": str((state_dir / "cache").resolve())}
    with _environment(stage_env):
        with tracker.parent_run(config.experiment.name, f"pipeline-{run_id}", tags) as parent_id:
            images = None
            if runner == "docker":  # built here: the containers get the parent run's id explicitly
                image = cpu_image(config)
                images = dict.fromkeys(STAGES, image)
                kfp_runner = docker_runner(image, state_dir)
            else:
                kfp_runner = local.SubprocessRunner(use_venv=False)
            local.init(
                runner=kfp_runner,
                pipeline_root=str(state_dir / "kfp" / "runs"),
                enable_caching=config.pipeline.caching,
                cache_root=str(cache_root),
            )
            pipeline = build_pipeline(config, target="local", images=images)
            task = pipeline()
            report_uri = task.output.metadata["uri"]
    return report_uri, parent_id


def cpu_image(config: ExperimentConfig) -> str:
    """The CPU image the config names (``REGISTRY/vrft-cpu:TAG``), which runs every stage locally."""
    from vrft.pipelines.kfp_client import CPU_IMAGE, image_refs

    return next(
        ref
        for ref in image_refs(config.pipeline.image_registry, config.pipeline.image_tag).values()
        if ref.rsplit("/", 1)[-1].startswith(f"{CPU_IMAGE}:")
    )


def docker_runner(image: str, state_dir: Path, environ: dict[str, str] | None = None):
    """kfp's DockerRunner for the stages: ``image`` must be in the engine (no registry is contacted).

    Containers use the host network (the services listen on loopback) and run as the calling user,
    so that what they write in the pipeline root, the cache and the sqlite MLflow store (bind-mounted
    at the same paths) is the caller's, as with the subprocess runner. They get the stage
    environment (services, run id, MLflow parent run) and ``VRFT_IMAGE``; nothing else of this
    process's environment.
    """
    from docker.types import Mount
    from kfp import local

    from vrft.components.runtime import IMAGE_ENV

    require_engine_and_image(image)
    source = os.environ if environ is None else environ
    environment = {
        key: value
        for key, value in source.items()
        if key.startswith(_STAGE_ENV_PREFIXES) or key in _STAGE_ENV_NAMES
    }
    environment |= {IMAGE_ENV: image, "HOME": "/tmp", "PYTHONUNBUFFERED": "1"}
    shared = {
        Path(state_dir / "services").resolve(),
        Path(environment.get("VRFT_CACHE_DIR") or state_dir / "cache"),
    }
    for path in shared:
        path.mkdir(parents=True, exist_ok=True)
    return local.DockerRunner(
        network_mode="host",
        environment=environment,
        user=f"{os.getuid()}:{os.getgid()}",
        mounts=[Mount(target=str(p), source=str(p), type="bind") for p in sorted(shared)],
    )


# The stage environment a container gets: what vrft.services.LocalServices.env() sets (S3, MLflow), the
# run's ids and vrft's own settings.
_STAGE_ENV_PREFIXES = ("AWS_", "MLFLOW_", "VRFT_")
_STAGE_ENV_NAMES = ("DO_NOT_TRACK",)


def require_engine_and_image(image: str) -> None:
    """PipelineFailed in one line unless a Docker engine answers (DOCKER_HOST honoured) and holds
    ``image``: nothing is pulled. `vrft run --runner docker` checks this before starting any service."""
    import docker

    client = _docker_client()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        registry, _, rest = image.rpartition("/")
        raise PipelineFailed(
            f"image {image} is not in the Docker engine: build it (VRFT_REGISTRY={registry} "
            f"VRFT_TAG={rest.rpartition(':')[2]} python docker/build.py --no-push --only vrft-cpu; "
            "docs/images.md) or set pipeline.image_registry/image_tag"
        ) from None
    finally:
        client.close()


def _docker_client():
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


def run_local(
    config_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    state_dir: str | Path = DEFAULT_STATE_DIR,
    output_dir: str | Path | None = None,
    runner: str = "subprocess",
) -> LocalRunResult:
    """Run ``config_path``'s pipeline end to end on this machine; return where the report is."""
    started = time.monotonic()
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r} (known: {', '.join(RUNNERS)})")
    config = load_experiment(config_path, overrides)  # validated before any service starts
    if runner == "docker":  # so is the engine and the image: a missing one is found in a second
        require_engine_and_image(cpu_image(config))
    state_dir = Path(state_dir).resolve()
    services = LocalServices(state_dir / "services")
    status = services.status()
    owner = services.owner_pid() if status == "running" else None
    if owner is not None and owner != os.getpid():
        raise ServicesError(
            f"{services.state_dir}: another `vrft run` (pid {owner}) is using these services; "
            "wait for it or pass another --state-dir"
        )
    run_id = new_run_id()
    log_file = state_dir / "logs" / f"{run_id}.log"
    with Supervisor() as supervisor:
        if status != "running":  # stopped, stale, or orphaned by a killed run (stopped first)
            services.start(tied=True)
            supervisor.watch_services(services.state_dir)
        print(f"run {run_id}: services up; full log in {log_file}", flush=True)
        try:
            with _environment(services.env()):
                try:
                    with (
                        _progress_to(log_file),
                        _stop_stages_on_signals(supervisor),
                        _stages_in_own_groups(supervisor),
                    ):
                        report_uri, parent_id = run_pipeline(
                            config, state_dir=state_dir, run_id=run_id, runner=runner
                        )
                except (ServicesError, TrackingStoreError):
                    raise
                except RuntimeError as exc:  # kfp: "Pipeline ... finished with status FAILURE"
                    _log_traceback(log_file)
                    hint = _failure_hint(log_file, state_dir / "kfp" / "cache")
                    raise PipelineFailed(f"{_ANSI.sub('', str(exc))}{hint} See {log_file}") from None
                target = Path(output_dir or Path("outputs") / run_id / "report").resolve()
                report_dir = ArtifactStore.from_uri(report_uri).download_dir("", target)
        except PipelineFailed:
            raise
        except BaseException:
            _log_traceback(log_file)
            raise
        finally:
            supervisor.terminate_groups()
            if services.owned_by_this_process():
                services.stop()
                supervisor.forget_services(services.state_dir)
    return LocalRunResult(
        run_id=run_id,
        report_dir=report_dir,
        report_uri=report_uri,
        mlflow_parent_run_id=parent_id,
        seconds=time.monotonic() - started,
        ui_hint=services.ui_hint(),
        log_file=log_file,
    )


def _log_traceback(log_file: Path) -> None:
    """Append the exception being handled, with its traceback, to the run's log file."""
    with contextlib.suppress(OSError):
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a", encoding="utf-8") as log:
            log.write(f"\n--- vrft run failed ({time.strftime('%Y-%m-%d %H:%M:%S')}) ---\n")
            log.write(traceback.format_exc())


def summary(result: LocalRunResult) -> str:
    """What `vrft run` prints at the end."""
    return "\n".join(
        [
            f"run {result.run_id} finished in {result.seconds:.0f} s",
            f"report: {result.report_dir / 'report.html'}",
            f"        {result.report_dir / 'report.md'}",
            f"artifacts: {result.report_uri.rsplit('/report/', 1)[0]}/ (with a SHA-256 manifest per stage)",
            f"log: {result.log_file}",
            result.ui_hint,
        ]
    )
