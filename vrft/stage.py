"""One stage run, the same wherever it is started: a pipeline's component, the CLI, a test.

:func:`open_stage` gives a stage what it needs around its library function: the parsed config,
its MLflow run (nested under the pipeline's parent run when there is one, tagged with
:class:`vrft.tracking.RunTags`, ended FAILED or KILLED with the error when the stage raises) and a
scratch work directory that is removed afterwards. The pipeline's components
(:mod:`vrft.components.runtime`) add artifact exchange on top; ``vrft dataset build``, ``vrft train``,
``vrft evaluate`` and ``vrft report`` use it as it is.

What a stage process may be told through its environment (a pipeline sets these; nothing else
needs to):

* ``VRFT_RUN_ID``: the pipeline run it belongs to (tagged ``run_id``; names artifact prefixes);
* ``VRFT_WORK_DIR``: where scratch directories go (a cluster pod's sized scratch volume);
* ``VRFT_IMAGE``: the container image it runs in (tagged ``image``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrft.experiment import ExperimentConfig
from vrft.signals import unwind_on_sigterm
from vrft.tracking import RunTags, Tracker

RUN_ID_ENV = "VRFT_RUN_ID"
WORK_DIR_ENV = "VRFT_WORK_DIR"
IMAGE_ENV = "VRFT_IMAGE"


@dataclass
class Stage:
    """One stage's view of its run: its config, its MLflow run and tags, its scratch space."""

    name: str  # names the MLflow run (grpo, evaluate-sft) and, in a pipeline, the artifact prefix
    config: ExperimentConfig
    run_id: str  # the pipeline run ("" outside a pipeline)
    tracker: Tracker
    tags: dict[str, str]
    work_dir: Path
    mlflow_run_id: str | None

    def local_dir(self, name: str) -> Path:
        """A fresh scratch directory for ``name`` inside the stage's work dir."""
        path = self.work_dir / name
        if path.exists():
            shutil.rmtree(path)
        return path


@contextlib.contextmanager
def open_stage(
    name: str,
    config: ExperimentConfig,
    *,
    kind: str = "",
    method: str = "",
    run_id: str = "",
    params: Any = None,
    resume_run_id: str | None = None,
    tracker: Tracker | None = None,
    experiment: str = "",
) -> Iterator[Stage]:
    """Open stage ``name``'s MLflow run (when a tracking URI is known) and a work dir around the block.

    ``kind`` is the ``stage`` tag the report filters on (``dataset``, ``train``, ``evaluate``,
    ``report``; default ``name``); ``method`` the report method (base, sft, rft); ``params`` what
    to log as params (a mapping or dataclass, or a function of the config); ``resume_run_id``
    continues an earlier run (a resumed training). Without ``tracker`` the config's
    ``pipeline.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, is used; a run without a parent goes to
    the MLflow experiment ``experiment`` (default: the config's ``experiment.name``).
    """
    unwind_on_sigterm(only_if_default=True)  # a stage process of a pipeline: stop cleanly on SIGTERM
    tracker = tracker or Tracker(config.pipeline.tracking_uri or None)
    kind = kind or name
    tags = RunTags.for_experiment(
        config, method=method, run_id=run_id, image=os.environ.get(IMAGE_ENV, "")
    ).as_tags(kind)
    base = os.environ.get(WORK_DIR_ENV) or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"vrft-{name}-", dir=base) as work:
        with tracker.stage_run(
            kind,
            params=params(config) if callable(params) else params,
            tags=tags,
            run_name=name,
            experiment=experiment or config.experiment.name,
            resume_run_id=resume_run_id,
        ) as mlflow_run_id:
            yield Stage(
                name=name,
                config=config,
                run_id=run_id,
                tracker=tracker,
                tags=tags,
                work_dir=Path(work),
                mlflow_run_id=mlflow_run_id,
            )
