"""The report's rows from evaluation artifacts: the ``metrics.json`` of each evaluation directory
its own pipeline run handed it (:func:`vrft.evaluate.evaluate_checkpoint` output), not from MLflow.

MLflow holds every run of an experiment, so reading this run's rows from it lets two overlapping
runs mix numbers and fills a missing evaluation from an older run; the artifacts cannot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from vrft.io import ManifestError, verify_manifest
from vrft.report.runs import CONFIG, METHOD, MODEL, RunRecord, evaluation_metrics
from vrft.tracking import evaluation_tags


class _Summary:
    """The two attributes :func:`evaluation_tags` / :func:`evaluation_metrics` read, from metrics.json."""

    def __init__(self, summary: dict) -> None:
        self.summary = summary
        self.task = summary["task"]
        self.label = summary["label"]
        self.metrics = summary["metrics"]


def evaluation_record(directory: str | Path, source: str = "") -> RunRecord:
    """One evaluation directory as a report row source (tags from its stored run context); ``source``
    is where the report says the row came from (the artifact's URI; default: the directory)."""
    directory = Path(directory)
    path = directory / "metrics.json"
    try:
        verify_manifest(directory)  # what the evaluation wrote, unchanged since
    except ManifestError as exc:
        raise ManifestError(f"{exc}; {directory} is not what `vrft evaluate` wrote: evaluate again") from None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        result = _Summary(summary)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not an evaluation result ({exc})") from None
    context = dict(summary.get("context") or {})
    tags = {**context, **evaluation_tags(result), METHOD: result.label}
    tags.setdefault(CONFIG, "evaluation")
    tags.setdefault(MODEL, str((summary.get("model") or {}).get("name_or_path", "")))
    return RunRecord(
        run_id=context.get("run_id", "") + f"/{directory.name}",
        experiment_id="",
        start_time=0,
        status="FINISHED",
        tags=tags,
        metrics=evaluation_metrics(result),
        source=source or str(directory),
    )


def evaluation_records(directories: Sequence[str | Path], sources: Sequence[str] = ()) -> list[RunRecord]:
    if sources and len(sources) != len(directories):
        raise ValueError(f"{len(directories)} evaluation directories but {len(sources)} sources")
    return [evaluation_record(d, sources[n] if sources else "") for n, d in enumerate(directories)]
