"""``vrft run``: the whole task plan on this machine, real S3 and MLflow, with a stage cache.

The embedded default starts a loopback-only SeaweedFS S3 server and an MLflow store (sqlite, with
artifacts in that S3) under ``.vrft/`` (:mod:`vrft.pipelines.local.services`), opens the MLflow
parent run, and walks the task plan (:mod:`vrft.pipelines.plan`) in order, one task at a time. Each
task runs as ``python -m vrft.pipelines.local.task SPEC`` (:mod:`vrft.pipelines.local.task`: the
same stage function a Kubeflow component calls) in a process group of its own, registered with the
supervisor (:mod:`vrft.pipelines.local.supervisor`), or with ``runner="docker"`` in a container of
the project's CPU image (:mod:`vrft.pipelines.local.docker`). Tasks hand each other artifact
references (URI + manifest SHA-256) as JSON. Before a cacheable task runs, the stage cache
(:mod:`vrft.pipelines.local.cache`) is asked for an intact result of an earlier run with the same
inputs and code. Afterwards the report is downloaded (verified) and the services stopped again,
unless they were already up (``vrft up``), in which case they are left running.

Everything the tasks print goes to the run's log file (``<state>/logs/<run>.log``); the console
gets one line per task (``[3/8] GRPO with verifiable rewards (RFT) (4 shots): running``) and its
end. What happened to each task (ran, reused from which run, failed) is recorded in
``<state>/runs/<run>/tasks.json`` as the run goes; tasks find that file through
``$VRFT_TASK_RECORD``. Next to it, ``owner.json`` names the run's process: a later run closes the
MLflow runs a killed run left RUNNING and removes its tasks' scratch directories (each task's
``TMPDIR``, removed when the task ends).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from vrft.experiment import ExperimentConfig, load_experiment
from vrft.io import atomic_write_text
from vrft.pipelines.local.cache import StageCache, code_identity, stage_cache_root
from vrft.pipelines.local.errors import PipelineFailed
from vrft.pipelines.local.forkserver import PRELOAD, WARM_STAGES, ForkServer, ForkServerGone
from vrft.pipelines.local.services import (
    LocalServices,
    ServicesError,
    die_with_parent_preexec,
    private_dir,
    process_alive,
    process_start_time,
)
from vrft.pipelines.local.supervisor import GRACE_SECONDS, Supervisor, terminate_groups
from vrft.pipelines.local.task import ERROR_FILE, OUTPUTS_FILE, SPEC_FILE
from vrft.pipelines.plan import Plan, build_plan
from vrft.stage import RUN_ID_ENV, WORK_DIR_ENV
from vrft.storage import ArtifactStore
from vrft.tracking import STAGE_PIPELINE, TAG_STAGE, Tracker

DEFAULT_STATE_DIR = Path(".vrft")
#: What runs a task: ``python -m vrft.pipelines.local.task SPEC`` (or its fork).
TASK_MODULE = "vrft.pipelines.local.task"
RUNNERS = ("subprocess", "docker")
#: Where a task finds the record of what ran and what was reused so far (tasks.json).
TASK_RECORD_ENV = "VRFT_TASK_RECORD"
#: Where stages cache materialised models (tiny:// builds) between tasks and runs.
MODEL_CACHE_ENV = "VRFT_CACHE_DIR"
#: Which process a run is (pid and start time), in ``runs/<run>/``: a run whose process is gone was killed.
OWNER_FILE = "owner.json"
#: A task's scratch space (``$TMPDIR`` and the stage's work directory), removed when the task ends.
TASK_WORK_DIR = "work"
#: Below this much free space in the state directory a run is not started (SeaweedFS fails writes
#: on a full disk with a line only in its log).
MIN_FREE_BYTES = 1 << 30


@dataclass
class LocalRunResult:
    run_id: str
    report_dir: Path
    report_uri: str
    mlflow_parent_run_id: str | None
    seconds: float
    ui_hint: str
    log_file: Path
    record_file: Path
    ran: int = 0
    reused: int = 0
    comparison_url: str = ""  # the MLflow UI page with the pipeline runs' RFT vs SFT metrics


@dataclass
class TaskRecord:
    """What happened to one task of a run (one entry of tasks.json)."""

    task: str
    stage: str
    iteration: str
    display_name: str
    status: str  # ran | reused | failed | not run
    reused_from: str = ""  # the run whose result was reused
    cache_key: str = ""
    seconds: float = 0.0
    note: str = ""  # why a cached result was not used, or why the task failed
    outputs: dict[str, dict[str, Any]] | None = None


class TaskProcesses:
    """Runs each task as a process of this environment, in a process group of its own.

    On Linux a task is forked from the run's fork server (:mod:`vrft.pipelines.local.forkserver`),
    which imports the stage libraries once; it is started when the first task of a stage in
    :data:`~vrft.pipelines.local.forkserver.WARM_STAGES` runs (a run whose training and evaluations
    all come from the cache runs its light tasks without it). Before that, elsewhere, with
    ``VRFT_FORK_SERVER=0``, or once the server has ended, a task is a fresh ``python -m
    vrft.pipelines.local.task SPEC``. Either way the task sees the same environment, files and
    signals.
    """

    where = "in a subprocess"

    def __init__(
        self,
        supervisor: Supervisor,
        *,
        module: str = TASK_MODULE,
        preload: tuple[str, ...] = PRELOAD,
        fork: bool | None = None,
    ) -> None:
        """``module``: what runs a task (``python -m MODULE SPEC``); ``preload``: what the fork
        server imports; ``fork``: whether to fork tasks (default: :meth:`ForkServer.wanted`)."""
        self.supervisor = supervisor
        self.module = module
        self.command = [sys.executable, "-m", module]
        self.preload = preload
        self.fork = ForkServer.wanted() if fork is None else fork
        self.server: ForkServer | None = None

    def identity(self) -> str:
        return code_identity()

    def close(self) -> None:
        """Stop the fork server, if one was started."""
        if self.server is not None:
            server, self.server = self.server, None
            server.close()

    def _give_up_server(self) -> None:
        self.close()
        self.fork = False

    def run(self, spec_file: Path, env: dict[str, str], log: TextIO, stage: str | None = None) -> int:
        """Run the task of ``spec_file``; ``stage``: its stage (``None``: unknown, forked if possible)."""
        log.flush()
        work = spec_file.parent / TASK_WORK_DIR
        private_dir(work)
        task_env = {**env, "TMPDIR": str(work), WORK_DIR_ENV: str(work)}
        pid = None
        try:
            warm = stage is None or stage in WARM_STAGES
            if self.fork and self.server is None and warm:
                self.server = ForkServer(env, self.supervisor, log, self.preload)  # the run's environment
            if self.server is not None:
                try:
                    pid = self.server.start(self.module, [str(spec_file)], task_env, os.getcwd(), log)
                except ForkServerGone as gone:
                    log.write(f"{gone}; this and later tasks start as fresh processes\n")
                    log.flush()
                    self._give_up_server()
            if pid is not None:
                return self._wait_forked(pid)
            return self._run_fresh(spec_file, task_env, log)
        finally:
            shutil.rmtree(work, ignore_errors=True)  # a SIGKILLed stage cannot remove its own

    def _wait_forked(self, pid: int) -> int:
        assert self.server is not None
        self.supervisor.watch_group(pid)
        code = None
        try:
            code = self.server.wait()
            return code
        except ForkServerGone:
            self._give_up_server()
            return -signal.SIGTERM  # the server died, and with it (parent-death signal) the task
        finally:  # also on Ctrl-C / SIGTERM of the run: stop the task and whatever it started
            if code is None:
                terminate_groups([pid], GRACE_SECONDS)
                with contextlib.suppress(ForkServerGone, OSError, ValueError):
                    if self.server is not None:
                        self.server.wait()
            terminate_groups([pid], grace=0)  # what the task left in its group
            self.supervisor.forget_group(pid)

    def _run_fresh(self, spec_file: Path, task_env: dict[str, str], log: TextIO) -> int:
        die_with_parent = die_with_parent_preexec()

        def preexec() -> None:
            os.umask(0o077)  # what a task writes locally (the model cache, scratch files) is private
            if die_with_parent is not None:  # the run and its watchdog both SIGKILLed: stop anyway
                die_with_parent()

        process = subprocess.Popen(
            [*self.command, str(spec_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=task_env,
            start_new_session=True,
            preexec_fn=preexec,
        )
        self.supervisor.watch_group(process.pid)
        try:
            return process.wait()
        finally:  # also on Ctrl-C / SIGTERM of the run: stop the task and whatever it started
            if process.poll() is None:
                terminate_groups([process.pid], GRACE_SECONDS)
            terminate_groups([process.pid], grace=0)  # what the task left in its group
            process.wait()
            self.supervisor.forget_group(process.pid)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def run_plan(
    plan: Plan,
    *,
    run_id: str,
    state_dir: Path,
    executor: Any,
    env: dict[str, str],
    cache: StageCache | None,
    log: TextIO,
    console: TextIO,
) -> list[TaskRecord]:
    """Run ``plan``'s tasks in order (reusing cached results where allowed); return what happened.

    Raises :class:`PipelineFailed` at the first task that fails; its record says why.
    """
    run_dir = state_dir / "runs" / run_id
    record_file = run_dir / "tasks.json"
    env = {**env, TASK_RECORD_ENV: str(record_file)}
    records = [TaskRecord(t.id, t.stage, t.iteration, t.display_name, status="not run") for t in plan.tasks]
    outputs: dict[str, dict[str, dict[str, Any]]] = {}
    total = len(plan)
    for n, (task, record) in enumerate(zip(plan.tasks, records, strict=True), start=1):
        started = time.monotonic()
        where = f"[{n}/{total}] {task.display_name}"
        inputs = {name: outputs[up.task][up.output] for name, up in task.inputs.items()}
        key = cache.key(task, inputs) if cache is not None else ""
        record.cache_key = key
        if cache is not None and task.cacheable:
            hit, why = cache.lookup(key)
            if hit is not None:
                outputs[task.id] = hit.outputs
                record.status, record.reused_from, record.outputs = "reused", hit.run_id, hit.outputs
                _say(console, log, f"{where}: reused from run {hit.run_id}")
                _write_records(record_file, run_id, records)
                continue
            record.note = why
            if why:
                _say(console, log, f"{where}: not reused ({why})")
        _say(console, log, f"{where}: running")
        task_dir = run_dir / "tasks" / f"{n:02d}-{task.id.replace('/', '-')}"
        task_dir.mkdir(parents=True, exist_ok=True)
        spec = {"task": task.to_dict(), "inputs": inputs}
        atomic_write_text(task_dir / SPEC_FILE, json.dumps(spec, indent=1, sort_keys=True) + "\n")
        log.write(
            f"\n===== {task.id}: {task.display_name}, {executor.where} ({time.strftime('%H:%M:%S')}) =====\n"
        )
        code = executor.run(task_dir / SPEC_FILE, env, log, stage=task.stage)
        record.seconds = round(time.monotonic() - started, 1)
        if code != 0 or not (task_dir / OUTPUTS_FILE).is_file():
            reason = _read_error(task_dir) or f"exit status {code}"
            cause = storage_cause(state_dir, reason)
            if cause:
                reason = f"{reason.rstrip('.')}; {cause}"
            record.status, record.note = "failed", reason
            _write_records(record_file, run_id, records)
            _say(console, log, f"{where}: failed after {record.seconds:.0f} s")
            raise PipelineFailed(f"task {task.id} ({task.display_name}) failed: {reason.rstrip('.')}.")
        outputs[task.id] = json.loads((task_dir / OUTPUTS_FILE).read_text(encoding="utf-8"))
        record.status, record.outputs = "ran", outputs[task.id]
        if cache is not None and task.cacheable:
            cache.record(key, task, run_id, outputs[task.id])
        _write_records(record_file, run_id, records)
        _say(console, log, f"{where}: done in {record.seconds:.0f} s")
    return records


# What SeaweedFS logs when the disk under its data directory is full.
_DISK_FULL = re.compile(
    r"no space left|disk (is )?full|not enough (free )?space|no (more )?(free|writable) volume|"
    r"no free space|insufficient (disk|storage)",
    re.IGNORECASE,
)


def check_free_space(state_dir: Path, minimum: int = MIN_FREE_BYTES) -> None:
    """Refuse to start a run on a (nearly) full disk: every stage would fail with an S3 error."""
    free = shutil.disk_usage(state_dir).free
    if free < minimum:
        raise ServicesError(
            f"{state_dir}: only {free / 2**20:.0f} MiB free on its disk (a run needs at least "
            f"{minimum / 2**20:.0f} MiB for artifacts and the MLflow store); free some space or pass "
            "another --state-dir"
        )


# A task's error that came from the S3 server (boto3/botocore's words).
_S3_ERROR = re.compile(
    r"ClientError|BotoCoreError|EndpointConnectionError|S3UploadFailedError|InternalError|SlowDown"
)
# SeaweedFS's (glog) error lines: "E1204 23:10:01.123456 ...".
_WEED_ERROR_LINE = re.compile(r"^E\d{4} ")


def storage_cause(state_dir: Path, reason: str = "") -> str:
    """Why a task's S3 writes may have failed, in a few words: a full disk (free space of the
    state directory, SeaweedFS's last complaint about it in ``weed.log``), or for an S3 error
    (``reason``) SeaweedFS's last error line; "" when nothing says so."""
    causes = []
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(state_dir).free
        if free < MIN_FREE_BYTES:
            causes.append(f"the disk of {state_dir} has only {free / 2**20:.0f} MiB free")
    log_file = state_dir / "services" / "weed.log"
    with contextlib.suppress(OSError):
        with open(log_file, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 256 * 1024))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
        complaint = next((line.strip() for line in reversed(lines) if _DISK_FULL.search(line)), "")
        if not complaint and _S3_ERROR.search(reason):
            complaint = next((line.strip() for line in reversed(lines) if _WEED_ERROR_LINE.match(line)), "")
        if complaint:
            causes.append(f"SeaweedFS ({log_file}): {complaint[:300]}")
    return "; ".join(causes)


def end_abandoned_runs(state_dir: Path, tracker: Tracker, current_run: str) -> list[str]:
    """Close what killed runs left behind: MLflow runs still RUNNING (stage runs KILLED, parent runs
    FAILED) and the scratch directories of their tasks. A run is abandoned when the process named by
    its ``owner.json`` is gone (or it has none, from before owner files)."""
    runs_dir = state_dir / "runs"

    def abandoned(run_id: str) -> bool:
        if run_id == current_run:
            return False
        try:
            owner = json.loads((runs_dir / run_id / OWNER_FILE).read_text(encoding="utf-8"))
            return not process_alive(int(owner["pid"]), owner.get("start_time"))
        except (OSError, ValueError, KeyError, TypeError):
            return True

    if runs_dir.is_dir():
        for run_dir in runs_dir.iterdir():
            if run_dir.is_dir() and abandoned(run_dir.name):
                for work in run_dir.glob(f"tasks/*/{TASK_WORK_DIR}"):
                    shutil.rmtree(work, ignore_errors=True)
    return tracker.end_abandoned_runs(
        lambda run_id: (runs_dir / run_id).is_dir() and abandoned(run_id),
        "the pipeline run was killed (its process is gone); closed by a later run",
    )


def _say(console: TextIO, log: TextIO, line: str) -> None:
    for stream in (console, log):
        stream.write(line + "\n")
        stream.flush()


def _read_error(task_dir: Path) -> str:
    try:
        return (task_dir / ERROR_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _write_records(path: Path, run_id: str, records: list[TaskRecord]) -> None:
    from dataclasses import asdict

    data = {"run_id": run_id, "tasks": [asdict(r) for r in records]}
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for this process (its tracker and store clients), restoring them."""
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
    if runner == "docker":  # so are the engine and the image: a missing one is found in a second
        from vrft.pipelines.local.docker import cpu_image, require_engine_and_image

        require_engine_and_image(cpu_image(config))
    plan = build_plan(config)
    state_dir = Path(state_dir).resolve()
    # Logs, task directories, the model cache and the stage cache are private (0700). The state
    # directory itself is made 0700 only when created here: `--state-dir` may name a shared one.
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for part in ("logs", "runs", "cache", "stage-cache"):
        private_dir(state_dir / part)
    check_free_space(state_dir)
    services = LocalServices(state_dir / "services")
    with services.in_use():  # `vrft down` refuses while this run uses the services
        return _run_with_services(config, plan, services, state_dir, output_dir, runner, started)


def _run_with_services(
    config: ExperimentConfig,
    plan: Plan,
    services: LocalServices,
    state_dir: Path,
    output_dir: str | Path | None,
    runner: str,
    started: float,
) -> LocalRunResult:
    status = services.status()
    owner = services.owner_pid() if status == "running" else None
    if owner is not None and owner != os.getpid():
        raise ServicesError(
            f"{services.state_dir}: another `vrft run` (pid {owner}) is using these services; "
            "wait for it or pass another --state-dir"
        )
    run_id = new_run_id()
    log_file = state_dir / "logs" / f"{run_id}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    record_file = state_dir / "runs" / run_id / "tasks.json"
    record_file.parent.mkdir(parents=True, exist_ok=True)
    me = os.getpid()
    atomic_write_text(
        record_file.parent / OWNER_FILE, json.dumps({"pid": me, "start_time": process_start_time(me)}) + "\n"
    )
    console = sys.__stdout__ or sys.stdout
    with Supervisor() as supervisor, open(log_file, "a", encoding="utf-8") as log:
        identity = None
        if status != "running":  # stopped, stale, or orphaned by a killed run (stopped first)
            services.start(tied=True)
            identity = services.identity()
            supervisor.watch_services(services.state_dir, *identity)
        print(f"run {run_id}: services up; {len(plan)} tasks; full log in {log_file}", flush=True)
        try:
            with environment(services.env()):
                ended = end_abandoned_runs(state_dir, Tracker(config.pipeline.tracking_uri or None), run_id)
                if ended:
                    _say(console, log, f"closed {len(ended)} MLflow runs left RUNNING by killed runs")
                records, parent_id = _run_tracked(
                    config, plan, run_id, state_dir, runner, supervisor, log, console
                )
                report = records[-1].outputs["report"]
                target = Path(output_dir or Path("outputs") / run_id / "report").resolve()
                report_dir = ArtifactStore.from_uri(report["uri"]).download_dir(
                    "", target, manifest_sha256=report["manifest_sha256"]
                )
                link = _comparison_url(config)
        except PipelineFailed as exc:
            _log_traceback(log)
            raise PipelineFailed(f"{exc} See {log_file}") from None
        except BaseException:
            _log_traceback(log)
            raise
        finally:
            supervisor.terminate_groups()
            if services.owned_by_this_process():
                services.stop()
                if identity is not None:
                    supervisor.forget_services(services.state_dir, *identity)
    return LocalRunResult(
        run_id=run_id,
        report_dir=report_dir,
        report_uri=report["uri"],
        mlflow_parent_run_id=parent_id,
        seconds=time.monotonic() - started,
        ui_hint=services.ui_hint(),
        log_file=log_file,
        record_file=record_file,
        ran=sum(r.status == "ran" for r in records),
        reused=sum(r.status == "reused" for r in records),
        comparison_url=link,
    )


def _comparison_url(config: ExperimentConfig) -> str:
    """The MLflow UI page (``vrft ui``'s address) listing the experiment's pipeline runs with their
    comparison metrics; "" untracked."""
    from vrft.report.comparison import comparison_url

    tracker = Tracker(config.pipeline.tracking_uri or None)
    experiment_id = tracker.experiment_id(config.experiment.name)
    return comparison_url(experiment_id) if experiment_id else ""


def _run_tracked(
    config: ExperimentConfig,
    plan: Plan,
    run_id: str,
    state_dir: Path,
    runner: str,
    supervisor: Supervisor,
    log: TextIO,
    console: TextIO,
) -> tuple[list[TaskRecord], str | None]:
    """Open the MLflow parent run and run the plan under it with the chosen executor; return the
    task records and the parent run's id."""
    tracker = Tracker(config.pipeline.tracking_uri or None)
    tags = {
        TAG_STAGE: STAGE_PIPELINE,  # what the report finds it by, and the runs table filters on
        "run_id": run_id,
        "config": config.experiment.name,
        "config_sha256": config.digest(),
    }
    stage_env = {RUN_ID_ENV: run_id, MODEL_CACHE_ENV: str((state_dir / "cache").resolve())}
    with environment(stage_env):
        if runner == "docker":
            from vrft.pipelines.local.docker import ContainerTasks, cpu_image

            executor: Any = ContainerTasks(cpu_image(config), state_dir, supervisor)
        else:
            executor = TaskProcesses(supervisor)
        cache = None
        if config.pipeline.caching:
            cache = StageCache(stage_cache_root(state_dir, tracker), executor.identity())
        try:
            with tracker.parent_run(config.experiment.name, f"pipeline-{run_id}", tags) as parent_id:
                # The parent run's id reaches the tasks through the environment parent_run just set.
                records = run_plan(
                    plan,
                    run_id=run_id,
                    state_dir=state_dir,
                    executor=executor,
                    env=dict(os.environ),
                    cache=cache,
                    log=log,
                    console=console,
                )
        finally:
            if isinstance(executor, TaskProcesses):
                executor.close()
    return records, parent_id


def _log_traceback(log: TextIO) -> None:
    """Append the exception being handled, with its traceback, to the run's log file."""
    with contextlib.suppress(OSError, ValueError):
        log.write(f"\n--- vrft run failed ({time.strftime('%Y-%m-%d %H:%M:%S')}) ---\n")
        log.write(traceback.format_exc())
        log.flush()


def summary(result: LocalRunResult) -> str:
    """What `vrft run` prints at the end."""
    return "\n".join(
        [
            f"run {result.run_id} finished in {result.seconds:.0f} s "
            f"({result.ran} tasks ran, {result.reused} reused from earlier runs)",
            f"report: {result.report_dir / 'report.html'}",
            f"        {result.report_dir / 'report.md'}",
            f"artifacts: {result.report_uri.rsplit('/report/', 1)[0]}/ (with a SHA-256 manifest per stage)",
            f"tasks: {result.record_file}",
            f"log: {result.log_file}",
            *([f"RFT vs SFT per run in MLflow: {result.comparison_url}"] if result.comparison_url else []),
            result.ui_hint,
        ]
    )


__all__ = [
    "DEFAULT_STATE_DIR",
    "RUNNERS",
    "TASK_RECORD_ENV",
    "LocalRunResult",
    "PipelineFailed",
    "TaskProcesses",
    "TaskRecord",
    "run_local",
    "run_plan",
    "summary",
]
