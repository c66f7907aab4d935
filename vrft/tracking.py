"""MLflow tracking for the pipeline: one parent run per pipeline run, one nested run per stage.

The kfp local runner (and a cluster) runs every stage in its own process, so the parent run is
handed to the stages by id: :meth:`Tracker.parent_run` puts it in ``VRFT_MLFLOW_PARENT_RUN_ID``
for the processes started inside it, and :meth:`Tracker.stage_run` in a stage process nests under
that id (``mlflow.start_run(nested=True, parent_run_id=...)``, which records the
``mlflow.parentRunId`` tag).

Without a tracking URI (argument or ``MLFLOW_TRACKING_URI``) a :class:`Tracker` does nothing and
never imports mlflow, so stages run the same with and without tracking.

Every params/tags mapping and text goes through :func:`redact` / :func:`redact_text` first, so
credentials from the environment or a config never reach the store:

>>> redact({"s3.secret_key": "abc123xyz", "uri": "https://user:pw@example.org/x", "lr": 1e-6})
{'s3.secret_key': 'REDACTED', 'uri': 'https://REDACTED@example.org/x', 'lr': 1e-06}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from vrft.config import flatten, to_dict

PARENT_RUN_ENV = "VRFT_MLFLOW_PARENT_RUN_ID"
# Where new experiments keep their artifacts (e.g. s3://vrft/mlflow); unset: MLflow's default.
MLFLOW_ARTIFACT_ROOT_ENV = "VRFT_MLFLOW_ARTIFACT_ROOT"
GIT_COMMIT_ENV = "VRFT_GIT_COMMIT"

TAG_STAGE = "stage"
TAG_ERROR = "error"
ARTIFACT_TAG_PREFIX = "artifact."
STANDARD_TAG_KEYS = ("experiment", "dataset", "shots", "method", "model", "git_commit")

# MLflow's limits (mlflow.utils.validation): longer values are rejected, so they are cut here.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000

REDACTED = "REDACTED"  # also valid inside MLflow metric and param names
# Shorter values of credential variables are not scrubbed from other text: replacing every "1"
# or "abc" would mangle it.
MIN_SECRET_LENGTH = 6

_SENSITIVE_WORDS = re.compile(r"SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE_?KEY|API_?KEY|ACCESS_?KEY"
                              r"|AUTHORIZATION")
# "pad_token", "eos_token", "vision_start_token" are tokenizer settings, not credentials.
_TOKENIZER_WORDS = {"PAD", "EOS", "BOS", "UNK", "SEP", "CLS", "MASK", "IMAGE", "VIDEO", "VISION", "START", "END"}
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def is_sensitive_key(key: str) -> bool:
    """Whether a parameter, tag or environment variable name looks like it holds a credential.

    >>> [is_sensitive_key(k) for k in ("AWS_SECRET_ACCESS_KEY", "hub.hf_token", "db.password", "pad_token",
    ...                                "max_tokens", "AWS_ACCESS_KEY_ID", "model.name")]
    [True, True, True, False, False, True, False]
    """
    normalized = re.sub(r"[^A-Z0-9]+", "_", key.upper())
    if _SENSITIVE_WORDS.search(normalized):
        return True
    words = re.sub(r"[^A-Z0-9]+", "_", key.rsplit(".", 1)[-1].upper()).strip("_").split("_")
    return words[-1] == "TOKEN" and (len(words) == 1 or words[-2] not in _TOKENIZER_WORDS)


def env_secrets() -> set[str]:
    """Values of credential-like environment variables, to scrub wherever they appear."""
    return {v for k, v in os.environ.items() if is_sensitive_key(k) and len(v) >= MIN_SECRET_LENGTH}


def redact_text(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """``text`` with URL ``user:password@`` parts, the values of credential-like environment
    variables and ``extra_secrets`` replaced by ``REDACTED``."""
    return _scrub(text, env_secrets() | set(extra_secrets))


def _scrub(text: str, secrets: set[str]) -> str:
    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _secrets_in(mapping: Mapping[str, Any]) -> set[str]:
    """String values held under credential-like keys, at any depth."""
    found: set[str] = set()
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            found |= _secrets_in(value)
        elif is_sensitive_key(str(key)) and isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
            found.add(value)
    return found


def _redact_value(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, Mapping):
        return _redact_mapping(value, secrets)
    if isinstance(value, (list, tuple)):
        return [_redact_value(v, secrets) for v in value]
    if isinstance(value, str):
        return _scrub(value, secrets)
    return value


def _redact_mapping(mapping: Mapping[str, Any], secrets: set[str]) -> dict[str, Any]:
    return {_scrub(str(key), secrets): REDACTED if is_sensitive_key(str(key)) else _redact_value(value, secrets)
            for key, value in mapping.items()}


def redact(mapping: Mapping[str, Any], extra_secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of ``mapping`` (nested) that is safe to log.

    Values under credential-like keys become ``REDACTED``; in every other key and string value,
    URL user info and the values of credential-like environment variables, of the mapping's own
    credential keys and ``extra_secrets`` are replaced by ``REDACTED``.
    """
    return _redact_mapping(mapping, env_secrets() | _secrets_in(mapping) | set(extra_secrets))


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _param_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def current_git_commit(cwd: str | Path | None = None) -> str:
    """The checkout's ``git rev-parse HEAD``; else ``$VRFT_GIT_COMMIT`` (set in images); else "unknown"."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        result = None
    if result is not None and result.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", result.stdout.strip()):
        return result.stdout.strip()
    return os.environ.get(GIT_COMMIT_ENV) or "unknown"


def standard_tags(experiment: str, dataset: str, shots: int | str, method: str, model: str,
                  git_commit: str | None = None) -> dict[str, str]:
    """The tags the report filters runs by; ``git_commit`` defaults to :func:`current_git_commit`."""
    commit = git_commit if git_commit is not None else current_git_commit()
    values = (experiment, dataset, shots, method, model, commit)
    return {key: str(value) for key, value in zip(STANDARD_TAG_KEYS, values, strict=True)}


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

    @property
    def enabled(self) -> bool:
        return self.tracking_uri is not None

    def _redact(self, mapping: Mapping[str, Any]) -> dict[str, Any]:
        self._seen_secrets |= _secrets_in(mapping)
        return redact(mapping, self._seen_secrets)

    def _redact_text(self, text: str) -> str:
        return redact_text(text, self._seen_secrets)

    def _mlflow(self) -> Any:
        """mlflow, pointed at this tracker's store; imported only when tracking is on."""
        # Loopback only: MLflow's usage telemetry stays off unless a user turned it on explicitly.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("DO_NOT_TRACK", "true")
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow

    def _experiment_id(self, name: str) -> str:
        mlflow = self._mlflow()
        from mlflow.exceptions import MlflowException

        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = f"{self.artifact_root.rstrip('/')}/{_experiment_slug(name)}" if self.artifact_root else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another process created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    @contextlib.contextmanager
    def _run(self, tags: Mapping[str, Any], **start_kwargs: Any) -> Iterator[str]:
        """Start a run; end it FINISHED, or FAILED (KILLED on interrupts) with the error as a tag.

        MLflow's own context tags (source name, user, git) are resolved here and redacted too;
        passed as tags they take the place of the ones start_run would add unredacted.
        """
        mlflow = self._mlflow()
        from mlflow.tracking.context.registry import resolve_tags

        clean_tags = {k: _truncate(str(v), MAX_TAG_VALUE_LENGTH) for k, v in self._redact(resolve_tags(tags)).items()}
        run = mlflow.start_run(tags=clean_tags, **start_kwargs)
        try:
            yield run.info.run_id
        except BaseException as exc:
            status = "FAILED" if isinstance(exc, Exception) else "KILLED"
            try:
                mlflow.set_tag(TAG_ERROR, _truncate(self._redact_text(f"{type(exc).__name__}: {exc}"),
                                                    MAX_TAG_VALUE_LENGTH))
            finally:
                mlflow.end_run(status)
            raise
        mlflow.end_run()

    @contextlib.contextmanager
    def parent_run(self, experiment: str, run_name: str, tags: Mapping[str, Any] | None = None, *,
                   run_id: str | None = None) -> Iterator[str | None]:
        """The pipeline run's parent run (resumed when ``run_id`` is given); yields its id.

        While the block runs, ``VRFT_MLFLOW_PARENT_RUN_ID`` holds the id, so stage processes
        started inside it nest under it.
        """
        if not self.enabled:
            yield None
            return
        if run_id is None:
            start: dict[str, Any] = {"experiment_id": self._experiment_id(experiment),
                                     "run_name": self._redact_text(run_name)}
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
    def stage_run(self, stage: str, params: Any = None, tags: Mapping[str, Any] | None = None, *,
                  parent_run_id: str | None = None, run_name: str | None = None,
                  experiment: str | None = None) -> Iterator[str | None]:
        """A stage's run, nested under ``parent_run_id`` or ``$VRFT_MLFLOW_PARENT_RUN_ID`` (or the
        active run); logs ``params`` (see :meth:`log_params`) and yields the run id.

        An exception inside marks the run FAILED with tag ``error`` = the (redacted) message, then
        propagates. ``run_name`` defaults to ``stage`` (e.g. ``evaluate-sft`` for stage ``evaluate``).
        Without a parent (a stage run on its own) the run goes to ``experiment`` when given.
        """
        if not self.enabled:
            yield None
            return
        mlflow = self._mlflow()
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

    def log_params(self, params: Any) -> None:
        """Log a (nested) dataclass config or mapping as flat, redacted params (``grpo.beta``)."""
        if not self.enabled:
            return
        data = to_dict(params)
        if not isinstance(data, dict):
            raise TypeError(f"log_params: expected a dataclass or a mapping, got {type(params).__name__}")
        clean = self._redact(flatten(data))
        self._active_mlflow("log_params").log_params(
            {key: _truncate(_param_text(value), MAX_PARAM_VALUE_LENGTH) for key, value in clean.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics (e.g. training loss at ``step``) to the active run."""
        if not self.enabled:
            return
        secrets = env_secrets() | self._seen_secrets
        self._active_mlflow("log_metrics").log_metrics(
            {_scrub(str(key), secrets): float(value) for key, value in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set redacted tags on the active run (e.g. what an evaluation turned out to be)."""
        if not self.enabled:
            return
        clean = self._redact({k: str(v) for k, v in tags.items()})
        self._active_mlflow("set_tags").set_tags(
            {key: _truncate(str(value), MAX_TAG_VALUE_LENGTH) for key, value in clean.items()})

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        """Copy a directory's files into the active run's artifacts (the MLflow UI shows them)."""
        if not self.enabled:
            return
        self._active_mlflow("log_artifacts").log_artifacts(str(local_dir), artifact_path=artifact_path)

    def log_artifact_uri(self, name: str, uri: str) -> None:
        """Record where a stage put an output, as tag ``artifact.<name>`` = URI."""
        if not self.enabled:
            return
        self._active_mlflow("log_artifact_uri").set_tag(
            self._redact_text(ARTIFACT_TAG_PREFIX + name), _truncate(self._redact_text(uri), MAX_TAG_VALUE_LENGTH))

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
