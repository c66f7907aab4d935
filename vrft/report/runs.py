"""MLflow runs as the report reads them (and how an evaluation done by hand becomes one).

Every evaluation run carries the tags of :class:`vrft.tracking.RunTags`; the report groups runs by
``config`` and ``model`` into one table each, and places a run by ``method`` (``base``, ``sft``,
``rft``) and ``shots``. Training runs carry the same tags with ``stage=train``; the report plots
their reward metrics (``rewards/<part>/mean``, ``reward``) over steps. Metric values are fractions
in [0, 1], as :func:`vrft.evaluate.evaluate_checkpoint` computes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrft.tracking import (
    METHODS,
    STAGE_EVALUATE,
    STAGE_REPORT,
    STAGE_TRAIN,
    RunTags,
    Tracker,
    evaluation_tags,
)
from vrft.tracking import TAG_CONFIG as CONFIG
from vrft.tracking import TAG_DATASET as DATASET
from vrft.tracking import TAG_EVAL_MODE as EVAL_MODE
from vrft.tracking import TAG_EVAL_SPLIT as EVAL_SPLIT
from vrft.tracking import TAG_GATE_SOURCE as GATE_SOURCE
from vrft.tracking import TAG_GROUND_TRUTH as GROUND_TRUTH
from vrft.tracking import TAG_IMAGE_CAP as IMAGE_CAP
from vrft.tracking import TAG_METHOD as METHOD
from vrft.tracking import TAG_MODEL as MODEL
from vrft.tracking import TAG_PAPER_COLUMN as PAPER_COLUMN
from vrft.tracking import TAG_PAPER_MODEL as PAPER_MODEL
from vrft.tracking import TAG_PAPER_TABLE as PAPER_TABLE
from vrft.tracking import TAG_PROTOCOL_PREFIX as PROTOCOL_PREFIX
from vrft.tracking import TAG_RUN_ID as RUN_ID
from vrft.tracking import TAG_SEED as SEED
from vrft.tracking import TAG_SHOTS as SHOTS
from vrft.tracking import TAG_STAGE as STAGE
from vrft.tracking import TAG_TASK as TASK
from vrft.tracking import TAG_TRAINING as TRAINING

__all__ = [
    "CONFIG",
    "DATASET",
    "EVAL_MODE",
    "EVAL_SPLIT",
    "GATE_SOURCE",
    "GROUND_TRUTH",
    "IMAGE_CAP",
    "METHOD",
    "METHODS",
    "MODEL",
    "PAPER_COLUMN",
    "PAPER_MODEL",
    "PAPER_TABLE",
    "RUN_ID",
    "SEED",
    "SHOTS",
    "STAGE",
    "STAGE_EVALUATE",
    "STAGE_REPORT",
    "STAGE_TRAIN",
    "TASK",
    "TRAINING",
    "PROTOCOL_PREFIX",
]
TIMING_PREFIX = "timing/"  # logged for information; never a regression

_METRIC_NAME = re.compile(r"[^\w.\- /:]")


def metric_key(name: str) -> str:
    """A name MLflow accepts as a metric key (class names may hold apostrophes, parentheses, ...).

    >>> metric_key("accuracy/colt's foot"), metric_key("AP/fire hydrant")
    ('accuracy/colt_s foot', 'AP/fire hydrant')
    """
    return _METRIC_NAME.sub("_", name)


def evaluation_metrics(result: Any) -> dict[str, float]:
    """An :class:`~vrft.evaluate.EvalResult`'s metrics under MLflow-safe keys, plus
    ``timing/images_per_second`` and ``timing/seconds`` (never compared by the regression check)."""
    metrics = {metric_key(k): float(v) for k, v in result.metrics.items()}
    timing = result.summary.get("timing") or {}
    for name in ("images_per_second", "seconds"):
        if name in timing:
            metrics[TIMING_PREFIX + name] = float(timing[name])
    return metrics


def log_evaluation(
    result: Any, tags: RunTags, *, experiment: str, tracking_uri: str | None = None, artifacts: bool = True
) -> str:
    """Log an :class:`~vrft.evaluate.EvalResult` as one finished MLflow run; return its run id.

    Tags: ``tags`` plus :func:`evaluation_tags`; metrics: :func:`evaluation_metrics`; params: the
    evaluate config; artifacts (``evaluation/``): the whole output directory when ``artifacts``
    (predictions, completions, COCO files, metrics.json). Written through :class:`vrft.tracking.Tracker`
    (redacted; FAILED if logging fails), as the pipeline's evaluate stage does.
    """
    tags.validate()
    tracker = Tracker(tracking_uri or None)
    if not tracker.enabled:
        raise ValueError("log_evaluation: no MLflow store: pass tracking_uri or set MLFLOW_TRACKING_URI")
    shots = "" if tags.shots is None else f"-{tags.shots}shot"
    params = {"evaluate": result.summary.get("config", {})}
    with tracker.stage_run(
        STAGE_EVALUATE,
        params=params,
        tags={**tags.as_tags(STAGE_EVALUATE), **evaluation_tags(result)},
        run_name=f"eval-{tags.config}-{tags.method}{shots}",
        experiment=experiment,
    ) as run_id:
        tracker.log_metrics(evaluation_metrics(result))
        if artifacts:
            tracker.log_artifacts(Path(result.output_dir), "evaluation")
    assert run_id is not None
    return run_id


@dataclass
class RunRecord:
    """One MLflow run as the report reads it (latest value of each metric)."""

    run_id: str
    experiment_id: str
    start_time: int  # ms since the epoch
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]
    source: str = ""  # where the numbers were read: an evaluation artifact, or "" for an MLflow run

    @property
    def method(self) -> str:
        return self.tags.get(METHOD, "")

    @property
    def shots(self) -> int | None:
        value = self.tags.get(SHOTS, "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else None

    @property
    def seed(self) -> str:
        return self.tags.get(SEED, "")

    @property
    def comparability(self) -> dict[str, str]:
        """What must agree between rows of one table: eval mode, evaluated split, image cap, and every
        ``protocol.*`` entry the evaluation recorded (gate and its file, ground truth, system prompt,
        max_new_tokens, max_pixels, ...). A run that recorded no protocol has none to compare."""
        keys = [
            EVAL_MODE,
            EVAL_SPLIT,
            IMAGE_CAP,
            *sorted(k for k in self.tags if k.startswith(PROTOCOL_PREFIX)),
        ]
        return {k: self.tags.get(k, "") for k in keys}

    @property
    def training(self) -> str:
        """What trained the row (``reward:<name>``, ``sft:<style>``); "" for the base model or unknown."""
        return self.tags.get(TRAINING, "")

    @property
    def group(self) -> tuple[str, str]:
        """The table a run belongs to: (config, model)."""
        return self.tags.get(CONFIG, ""), self.tags.get(MODEL, "")

    @property
    def series(self) -> tuple[str, str, str, int | None]:
        """Reruns of the same thing share this key: (config, model, method, shots)."""
        return (*self.group, self.method, self.shots)


def run_record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        start_time=int(run.info.start_time or 0),
        status=run.info.status,
        tags=dict(run.data.tags),
        metrics=dict(run.data.metrics),
    )


def search_runs(client: Any, experiment_ids: list[str], stage: str) -> Iterator[RunRecord]:
    """Every active run of ``stage`` in the experiments, newest first (all result pages)."""
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=f"tags.{STAGE} = '{stage}'",
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        yield from (run_record(run) for run in page)
        token = page.token
        if not token:
            return
