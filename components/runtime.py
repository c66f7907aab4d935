"""What every stage component does around its library function.

A component receives the experiment config as YAML text and its upstream artifacts; this module
turns those into plain arguments (a parsed config, local directories verified against their
SHA-256 manifests) and publishes the stage's output directory to the artifact store under the
run-scoped prefix ``<artifact_root>/runs/<run_id>/<stage>/``, recording the URI in the KFP
artifact's metadata and in the stage's MLflow run. It knows nothing of any particular stage.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrft.experiment import ExperimentConfig, experiment_from_json
from vrft.io import MANIFEST_NAME, atomic_write_text, sha256_file, write_manifest
from vrft.storage import STORE_ROOT_ENV, ArtifactStore, run_prefix
from vrft.tracking import TAG_IMAGE, Tracker, experiment_tags

RUN_ID_ENV = "VRFT_RUN_ID"
WORK_DIR_ENV = "VRFT_WORK_DIR"
IMAGE_ENV = "VRFT_IMAGE"
"""The container image a stage runs in (set by `vrft run --runner docker` and on a cluster), tagged ``image``."""


@dataclass
class StageContext:
    """One stage's view of the run: its config, where it reads and writes, its MLflow run."""

    stage: str
    config: ExperimentConfig
    run_id: str
    artifact_root: str
    tracker: Tracker
    work_dir: Path
    mlflow_run_id: str | None = None

    def local_dir(self, name: str) -> Path:
        """A fresh scratch directory for ``name`` inside the stage's work dir."""
        path = self.work_dir / name
        if path.exists():
            shutil.rmtree(path)
        return path

    def fetch(self, artifact: Any, name: str) -> Path:
        """Download an upstream artifact's directory and verify it against its manifest.

        A corrupted, truncated, missing or extra object raises ``ArtifactIntegrityError``.
        """
        uri = artifact.metadata.get("uri") if getattr(artifact, "metadata", None) else None
        if not uri:
            raise ValueError(f"stage {self.stage}: input {name!r} carries no artifact URI in its metadata")
        target = self.local_dir(name)
        return ArtifactStore.from_uri(uri).download_dir("", target)

    def publish(self, local_dir: Path, artifact: Any, name: str, *, exclude: tuple[str, ...] = ()) -> str:
        """Upload ``local_dir`` (with its manifest) and point the KFP ``artifact`` at it.

        ``exclude``: glob patterns left out (e.g. resumable ``checkpoint-*`` states, which stay local).
        """
        local_dir = Path(local_dir)
        if exclude:
            # Hard links: a multi-GB checkpoint is not copied to leave out its optimizer states.
            staged = self.local_dir(f"{name}-publish")
            shutil.copytree(local_dir, staged, ignore=shutil.ignore_patterns(*exclude), copy_function=_link_or_copy)
            local_dir = staged
        if not (local_dir / MANIFEST_NAME).exists():
            write_manifest(local_dir, {"stage": self.stage, "name": name})
        uri = run_prefix(self.artifact_root, self.run_id, self.stage, name)
        ArtifactStore.from_uri(uri).upload_dir(local_dir, "", overwrite=True)
        manifest_sha = sha256_file(local_dir / MANIFEST_NAME)
        artifact.metadata["uri"] = uri
        artifact.metadata["manifest_sha256"] = manifest_sha
        # The KFP artifact itself is a small pointer; the data lives in the store.
        Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(artifact.path), json.dumps({"uri": uri, "manifest_sha256": manifest_sha}) + "\n")
        self.tracker.log_artifact_uri(name, uri)
        return uri

    def tags(self, method: str = "") -> dict[str, str]:
        """The MLflow tags the report queries by (names and values: vrft.tracking.experiment_tags),
        plus the image the stage ran in."""
        tags = experiment_tags(self.config, method=method, run_id=self.run_id)
        if os.environ.get(IMAGE_ENV):
            tags[TAG_IMAGE] = os.environ[IMAGE_ENV]
        return tags


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def _unwind_on_sigterm() -> None:
    """A stopped run (or a deleted pod) sends SIGTERM: unwind like Ctrl-C, so that the stage's
    MLflow run ends KILLED and its scratch directory is removed, instead of dying mid-write."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def resolve_run_id(run_id: str) -> str:
    """The pipeline run's id: the parameter on a cluster, ``$VRFT_RUN_ID`` locally (kept out of
    the parameters so that the local runner's cache can reuse stages across runs)."""
    return run_id or os.environ.get(RUN_ID_ENV, "") or "adhoc"


@contextlib.contextmanager
def open_stage(name: str, config_json: str, run_id: str, *, stage: str = "", params: Any = None,
               method: str = "") -> Iterator[StageContext]:
    """Parse the config, open the stage's nested MLflow run (FAILED on error), give a work dir.

    ``name`` names the artifact prefix and the MLflow run (``grpo``, ``evaluate-sft``); ``stage``
    is the MLflow ``stage`` tag the report filters on (``train``, ``evaluate``), default ``name``.
    """
    _unwind_on_sigterm()
    config = experiment_from_json(config_json, source=f"{name} config")
    artifact_root = config.pipeline.artifact_root or os.environ.get(STORE_ROOT_ENV, "")
    if not artifact_root:
        raise ValueError(f"stage {name}: no artifact store: set pipeline.artifact_root or ${STORE_ROOT_ENV}")
    tracker = Tracker(config.pipeline.tracking_uri or None)
    base = os.environ.get(WORK_DIR_ENV) or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"vrft-{name}-", dir=base) as work:
        context = StageContext(stage=name, config=config, run_id=resolve_run_id(run_id),
                               artifact_root=artifact_root, tracker=tracker, work_dir=Path(work))
        with tracker.stage_run(stage or name, params=params(config) if callable(params) else params,
                               tags=context.tags(method), run_name=name,
                               experiment=config.experiment.name) as mlflow_run_id:
            context.mlflow_run_id = mlflow_run_id
            yield context
