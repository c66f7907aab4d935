"""The one MLflow write path: one parent run per pipeline run, one nested run per stage.

A pipeline runs every stage in its own process (the local runner's subprocesses, a cluster's
pods), so the parent run is handed to the stages by id: :meth:`Tracker.parent_run` puts it in
``VRFT_MLFLOW_PARENT_RUN_ID`` for the processes started inside it, and :meth:`Tracker.stage_run`
in a stage process nests under that id (``mlflow.start_run(nested=True, parent_run_id=...)``,
which records the ``mlflow.parentRunId`` tag).

Without a tracking URI (argument or ``MLFLOW_TRACKING_URI``) a :class:`Tracker` does nothing and
never imports mlflow, so stages run the same with and without tracking. Everything it logs is
redacted first (:mod:`vrft.tracking.redaction`); tag names live in :mod:`vrft.tracking.tags`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from vrft.config import flatten, to_dict
from vrft.tracking.redaction import env_secrets, redact, redact_text, scrub, secrets_in
from vrft.tracking.store import check_sqlite_store, sqlite_store_path
from vrft.tracking.tags import (
    ARTIFACT_TAG_PREFIX,
    EXPERIMENT_KIND,
    STAGE_PIPELINE,
    TAG_ERROR,
    TAG_EXPERIMENT_KIND,
    TAG_RUN_ID,
    TAG_STAGE,
)

PARENT_RUN_ENV = "VRFT_MLFLOW_PARENT_RUN_ID"
# Where new experiments keep their artifacts (e.g. s3://vrft/mlflow); unset: MLflow's default.
MLFLOW_ARTIFACT_ROOT_ENV = "VRFT_MLFLOW_ARTIFACT_ROOT"

# MLflow's limits (mlflow.utils.validation): longer values are rejected, so they are cut here.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _param_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _experiment_slug(name: str) -> str:
    """A readable, collision-free directory name for an experiment's artifacts."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:60] or "experiment"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class Tracker:
    """MLflow runs for the pipeline, or nothing at all when no tracking URI is configured.

    ``tracking_uri`` defaults to ``$MLFLOW_TRACKING_URI``; ``artifact_root`` (where experiments
    created here keep artifacts) to ``$VRFT_MLFLOW_ARTIFACT_ROOT``. Runs use mlflow's fluent API, so
    code inside a stage run (e.g. a transformers MLflow callback) logs into the stage's run.

    Credential values seen in logged params or dicts are remembered and scrubbed from everything
    logged afterwards (tags, metric keys, error messages), not only from their own mapping.
    """

    def __init__(self, tracking_uri: str | None = None, *, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self.artifact_root = artifact_root or os.environ.get(MLFLOW_ARTIFACT_ROOT_ENV) or None
        self._seen_secrets: set[str] = set()
        self._store_checked = False
        self._kind_checked: set[str] = set()  # experiments whose kind tag this tracker has seen

    @classmethod
    def off(cls) -> Tracker:
        """A tracker that logs nothing, whatever the environment says."""
        tracker = cls()
        tracker.tracking_uri = None
        return tracker

    @property
    def enabled(self) -> bool:
        return self.tracking_uri is not None

    def _redact(self, mapping: Mapping[str, Any]) -> dict[str, Any]:
        self._seen_secrets |= secrets_in(mapping)
        return redact(mapping, self._seen_secrets)

    def _redact_text(self, text: str) -> str:
        return redact_text(text, self._seen_secrets)

    def _mlflow(self) -> Any:
        """mlflow, pointed at this tracker's store; imported only when tracking is on."""
        # Loopback only: MLflow's usage telemetry stays off unless a user turned it on explicitly.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("DO_NOT_TRACK", "true")
        if not self._store_checked:
            database = sqlite_store_path(self.tracking_uri or "")
            if database is not None:
                check_sqlite_store(database)
            self._store_checked = True
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow

    def _client(self) -> Any:
        """An explicit client on this tracker's store, for runs that are not the active one."""
        return self._mlflow().MlflowClient(tracking_uri=self.tracking_uri)

    def run_exists(self, run_id: str) -> bool:
        """Whether this store holds run ``run_id``."""
        if not self.enabled:
            return False
        from mlflow.exceptions import MlflowException

        try:
            self._client().get_run(run_id)
        except MlflowException:
            return False
        return True

    def store_identity(self) -> str:
        """Which MLflow store this is: its URI and the creation time of its Default experiment
        (a deleted and recreated sqlite file is another store). A sqlite file is the same store
        wherever it is (a moved state directory keeps its stage cache): its path does not count.
        ``"untracked"`` when disabled."""
        if not self.enabled:
            return "untracked"
        from mlflow.exceptions import MlflowException

        try:
            created = self._client().get_experiment("0").creation_time
        except MlflowException:
            created = None
        where = "sqlite" if sqlite_store_path(self.tracking_uri or "") is not None else self.tracking_uri
        return hashlib.sha256(f"{where}\0{created}".encode()).hexdigest()[:16]

    def _experiment_id(self, name: str) -> str:
        mlflow = self._mlflow()
        from mlflow.exceptions import MlflowException

        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            self._mark_kind(client, experiment)
            return experiment.experiment_id
        location = (
            f"{self.artifact_root.rstrip('/')}/{_experiment_slug(name)}" if self.artifact_root else None
        )
        try:
            return client.create_experiment(
                name, artifact_location=location, tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}
            )
        except MlflowException:  # another process created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            self._mark_kind(client, experiment)
            return experiment.experiment_id

    def _mark_kind(self, client: Any, experiment: Any) -> None:
        """Give an experiment vrft uses (made by an older vrft, or by hand) MLflow's experiment kind,
        so that its UI opens on the runs table; a kind someone chose is left as it is."""
        if experiment.experiment_id in self._kind_checked:
            return
        if TAG_EXPERIMENT_KIND not in (experiment.tags or {}):
            client.set_experiment_tag(experiment.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
        self._kind_checked.add(experiment.experiment_id)

    def set_experiment_tag(self, experiment: str, key: str, value: str) -> None:
        """Set a (redacted) tag on experiment ``experiment`` (e.g. the report's shared view)."""
        if not self.enabled:
            return
        clean = self._redact({key: str(value)})[key]
        self._client().set_experiment_tag(self._experiment_id(experiment), key, clean)

    def experiment_id(self, name: str) -> str | None:
        """The id of experiment ``name`` (created, with its kind, when missing); ``None`` untracked."""
        return self._experiment_id(name) if self.enabled else None

    def find_pipeline_run(self, experiment: str, run_id: str) -> str | None:
        """The parent run of pipeline run ``run_id`` (tags ``stage=pipeline``, ``run_id``) in
        ``experiment``: the one ``$VRFT_MLFLOW_PARENT_RUN_ID`` names, else the oldest such run;
        ``None`` when there is none (a cluster's stages run without one)."""
        if not self.enabled:
            return None
        named = os.environ.get(PARENT_RUN_ENV)
        if named:
            return named
        found = self._client().search_runs(
            [self._experiment_id(experiment)],
            filter_string=f"tags.{TAG_STAGE} = '{STAGE_PIPELINE}' and tags.{TAG_RUN_ID} = '{run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return found[0].info.run_id if found else None

    @contextlib.contextmanager
    def _run(self, tags: Mapping[str, Any], **start_kwargs: Any) -> Iterator[str]:
        """Start a run; end it FINISHED, or FAILED (KILLED on interrupts) with the error as a tag.

        MLflow's own context tags (source name, user, git) are resolved here and redacted too;
        passed as tags they take the place of the ones start_run would add unredacted.
        """
        mlflow = self._mlflow()
        from mlflow.tracking.context.registry import resolve_tags

        clean_tags = {
            k: _truncate(str(v), MAX_TAG_VALUE_LENGTH) for k, v in self._redact(resolve_tags(tags)).items()
        }
        run = mlflow.start_run(tags=clean_tags, **start_kwargs)
        try:
            yield run.info.run_id
        except BaseException as exc:
            status = "FAILED" if isinstance(exc, Exception) else "KILLED"
            try:
                mlflow.set_tag(
                    TAG_ERROR,
                    _truncate(self._redact_text(f"{type(exc).__name__}: {exc}"), MAX_TAG_VALUE_LENGTH),
                )
            finally:
                mlflow.end_run(status)
            raise
        mlflow.end_run()

    @contextlib.contextmanager
    def parent_run(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> Iterator[str | None]:
        """The pipeline run's parent run (resumed when ``run_id`` is given); yields its id.

        While the block runs, ``VRFT_MLFLOW_PARENT_RUN_ID`` holds the id, so stage processes
        started inside it nest under it.
        """
        if not self.enabled:
            yield None
            return
        if run_id is None:
            start: dict[str, Any] = {
                "experiment_id": self._experiment_id(experiment),
                "run_name": self._redact_text(run_name),
            }
        else:
            start = {"run_id": run_id}
        previous = os.environ.get(PARENT_RUN_ENV)
        with self._run(dict(tags or {}), **start) as parent_id:
            os.environ[PARENT_RUN_ENV] = parent_id
            try:
                yield parent_id
            finally:
                if previous is None:
                    os.environ.pop(PARENT_RUN_ENV, None)
                else:
                    os.environ[PARENT_RUN_ENV] = previous

    @contextlib.contextmanager
    def stage_run(
        self,
        stage: str,
        params: Any = None,
        tags: Mapping[str, Any] | None = None,
        *,
        parent_run_id: str | None = None,
        run_name: str | None = None,
        experiment: str | None = None,
        resume_run_id: str | None = None,
    ) -> Iterator[str | None]:
        """A stage's run, nested under ``parent_run_id`` or ``$VRFT_MLFLOW_PARENT_RUN_ID`` (or the
        active run); logs ``params`` (see :meth:`log_params`) and yields the run id.

        An exception inside marks the run FAILED with tag ``error`` = the (redacted) message, then
        propagates. ``run_name`` defaults to ``stage`` (e.g. ``evaluate-sft`` for stage ``evaluate``).
        Without a parent (a stage run on its own) the run goes to ``experiment`` when given.
        ``resume_run_id`` continues that run instead (a resumed training); params already logged
        are not logged again.
        """
        if not self.enabled:
            yield None
            return
        mlflow = self._mlflow()
        if resume_run_id:
            with self._run({**(tags or {}), TAG_STAGE: stage}, run_id=resume_run_id) as run_id:
                if params is not None:
                    self.log_params(params, skip_logged=True)
                yield run_id
            return
        parent = parent_run_id or os.environ.get(PARENT_RUN_ENV) or None
        start: dict[str, Any] = {"run_name": self._redact_text(run_name or stage), "nested": True}
        if parent is not None:
            start["parent_run_id"] = parent
            start["experiment_id"] = mlflow.MlflowClient().get_run(parent).info.experiment_id
        elif experiment is not None and mlflow.active_run() is None:
            start["experiment_id"] = self._experiment_id(experiment)
        with self._run({**(tags or {}), TAG_STAGE: stage}, **start) as run_id:
            if params is not None:
                self.log_params(params)
            yield run_id

    def log_params(self, params: Any, *, run_id: str | None = None, skip_logged: bool = False) -> None:
        """Log a (nested) dataclass config or mapping as flat, redacted params (``grpo.beta``), to
        the active run or ``run_id``. ``skip_logged``: leave out params the run already has (MLflow
        refuses to change a param, e.g. when a training resumes)."""
        if not self.enabled:
            return
        data = to_dict(params)
        if not isinstance(data, dict):
            raise TypeError(f"log_params: expected a dataclass or a mapping, got {type(params).__name__}")
        clean = {
            key: _truncate(_param_text(value), MAX_PARAM_VALUE_LENGTH)
            for key, value in self._redact(flatten(data)).items()
        }
        client = self._client()
        if run_id is None:
            run_id = self._active_mlflow("log_params").active_run().info.run_id
        if skip_logged:
            logged = client.get_run(run_id).data.params
            clean = {k: v for k, v in clean.items() if k not in logged}
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in clean.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit
            client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, *, run_id: str | None = None
    ) -> None:
        """Log numeric metrics (e.g. training loss at ``step``) to the active run or ``run_id``;
        non-finite values are left out (MLflow's stores disagree on them)."""
        if not self.enabled:
            return
        import math

        secrets = env_secrets() | self._seen_secrets
        clean = {
            scrub(str(key), secrets): float(value)
            for key, value in metrics.items()
            if math.isfinite(float(value))
        }
        if run_id is None:
            self._active_mlflow("log_metrics").log_metrics(clean, step=step)
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, value, now, step or 0) for key, value in clean.items()]
        client = self._client()
        for start in range(0, len(items), 1000):  # MLflow's batch limit
            client.log_batch(run_id, metrics=items[start : start + 1000])

    def create_run(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, Any] | None = None,
        *,
        parent_run_id: str | None = None,
    ) -> str | None:
        """Create a run without making it the active one (a training's own run); return its id.
        End it with :meth:`end_run`."""
        if not self.enabled:
            return None
        clean = {
            k: _truncate(str(v), MAX_TAG_VALUE_LENGTH) for k, v in self._redact(dict(tags or {})).items()
        }
        if parent_run_id:
            clean["mlflow.parentRunId"] = parent_run_id
        run = self._client().create_run(
            self._experiment_id(experiment), run_name=self._redact_text(run_name) or None, tags=clean
        )
        return run.info.run_id

    def end_run(self, run_id: str, error: BaseException | None = None) -> None:
        """End a run made by :meth:`create_run`: FINISHED, or FAILED (KILLED on interrupts) with the
        redacted error as tag ``error``."""
        if not self.enabled:
            return
        client = self._client()
        if error is None:
            client.set_terminated(run_id, "FINISHED")
            return
        client.set_tag(
            run_id,
            TAG_ERROR,
            _truncate(self._redact_text(f"{type(error).__name__}: {error}"), MAX_TAG_VALUE_LENGTH),
        )
        client.set_terminated(run_id, "FAILED" if isinstance(error, Exception) else "KILLED")

    def end_abandoned_runs(self, abandoned: Callable[[str], bool], reason: str) -> list[str]:
        """End the runs left RUNNING by a pipeline run that was killed (``kill -9`` runs no code):
        those whose pipeline run id (tag ``run_id``) ``abandoned`` says is gone. A stage's run ends
        KILLED, a pipeline's parent run FAILED, each with ``reason`` as tag ``error``. Returns their ids."""
        if not self.enabled:
            return []
        client = self._client()
        ended: list[str] = []
        experiments = [e.experiment_id for e in client.search_experiments()]
        if not experiments:
            return []
        for run in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000):
            pipeline_run = run.data.tags.get(TAG_RUN_ID, "")
            if not pipeline_run or not abandoned(pipeline_run):
                continue
            is_parent = "mlflow.parentRunId" not in run.data.tags
            client.set_tag(
                run.info.run_id, TAG_ERROR, _truncate(self._redact_text(reason), MAX_TAG_VALUE_LENGTH)
            )
            client.set_terminated(run.info.run_id, "FAILED" if is_parent else "KILLED")
            ended.append(run.info.run_id)
        return ended

    def set_tags(self, tags: Mapping[str, Any], *, run_id: str | None = None) -> None:
        """Set redacted tags on the active run (e.g. what an evaluation turned out to be), or on
        ``run_id`` (e.g. the pipeline's parent run, from its report stage)."""
        if not self.enabled:
            return
        clean = self._redact({k: str(v) for k, v in tags.items()})
        clean = {key: _truncate(str(value), MAX_TAG_VALUE_LENGTH) for key, value in clean.items()}
        if run_id is None:
            self._active_mlflow("set_tags").set_tags(clean)
            return
        from mlflow.entities import RunTag

        self._client().log_batch(run_id, tags=[RunTag(k, v) for k, v in clean.items()])

    def log_artifacts(
        self, local_dir: str | Path, artifact_path: str | None = None, *, run_id: str | None = None
    ) -> None:
        """Copy a directory's files into the active run's artifacts (the MLflow UI shows them), or
        into ``run_id``'s."""
        if not self.enabled:
            return
        if run_id is None:
            self._active_mlflow("log_artifacts").log_artifacts(str(local_dir), artifact_path=artifact_path)
            return
        self._client().log_artifacts(run_id, str(local_dir), artifact_path=artifact_path)

    def log_artifact_uri(self, name: str, uri: str) -> None:
        """Record where a stage put an output, as tag ``artifact.<name>`` = URI."""
        if not self.enabled:
            return
        self._active_mlflow("log_artifact_uri").set_tag(
            self._redact_text(ARTIFACT_TAG_PREFIX + name),
            _truncate(self._redact_text(uri), MAX_TAG_VALUE_LENGTH),
        )

    def log_dict(self, artifact_file: str, data: Any) -> None:
        """Store a redacted mapping or dataclass (e.g. the resolved config) as a JSON/YAML artifact."""
        if not self.enabled:
            return
        self._active_mlflow("log_dict").log_dict(self._redact(to_dict(data)), artifact_file)

    def _active_mlflow(self, what: str) -> Any:
        """mlflow, after checking a run is active (mlflow would otherwise start a stray run)."""
        mlflow = self._mlflow()
        if mlflow.active_run() is None:
            raise RuntimeError(f"Tracker.{what}: no active run (call it inside parent_run or stage_run)")
        return mlflow
