"""RFT vs SFT at a glance, and where a rerun's numbers come from.

**The pipeline run's own metrics.** The report writes, on the pipeline's parent run in MLflow, one
metric per sweep iteration, headline metric and method, in % like the report's tables:

    <iteration>/<metric>/base           the base model
    <iteration>/<metric>/sft            the SFT baseline
    <iteration>/<metric>/rft            Visual-RFT (GRPO)
    <iteration>/<metric>/rft_minus_sft  RFT − SFT, in points (the report's Δ row)

``<iteration>`` is ``shots-K`` (``all-shots`` for settings without shots; repeats over seeds are the
report's mean), ``<metric>`` the task's headline metric (``accuracy``, ``mAP``, ``mIoU``). The
experiment's runs table then shows RFT and SFT of every pipeline run side by side, one row per
night, and MLflow's chart view groups the four metrics of an iteration under its prefix.
:func:`comparison_url` is the MLflow UI address that opens that table: MLflow's UI shows no metric
columns until a user picks them, so the report also stores the view (the pipeline runs, these
metrics as columns) as an MLflow shared view of the experiment (tag
``mlflow.sharedViewState.vrft-rft-vs-sft``, :func:`shared_view_state`), which the link opens.

**The previous run of a benchmark.** The report also records on the pipeline run which MLflow
evaluation run each of its rows came from (tag ``evaluation_runs``: series -> run id); the next run's
regression check compares each series with the numbers the previous pipeline run reported, even
when that run had reused them from an earlier one (:func:`previous_series`).

**Provenance.** Every artifact lives under ``<root>/runs/<run id>/<iteration>/<stage>/<name>/``, so an
evaluation's URI, and the dataset and checkpoint URIs it records, say which pipeline run produced
each result (:func:`provenance`): the same on a cluster (KFP's cache) and locally (the stage cache).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vrft.report.runs import RUN_ID, RunRecord, metric_key
from vrft.report.tables import ReportTable
from vrft.tracking import STAGE_PIPELINE, TAG_CONFIG, TAG_EVALUATION_RUNS, TAG_STAGE

#: What the context of an evaluation records about its inputs (the artifact URIs it read).
INPUT_PREFIX = "input."
#: The parent-run metric of RFT − SFT (points).
DELTA = "rft_minus_sft"
#: The MLflow UI's own address for ``vrft ui``/``mlflow ui`` on this machine (``ui_hint``'s port).
LOCAL_UI = "http://127.0.0.1:5000"
#: The experiment's shared view of the comparison: MLflow's UI (3.x) reads a view's state from the
#: experiment tag ``mlflow.sharedViewState.<key>`` when the page address names ``viewStateShareKey``.
SHARED_VIEW = "vrft-rft-vs-sft"
SHARED_VIEW_TAG = "mlflow.sharedViewState." + SHARED_VIEW
#: MLflow's limit on an experiment tag's value.
MAX_EXPERIMENT_TAG_VALUE = 5000


def iteration_name(shots: int | None) -> str:
    """The prefix of an iteration's metrics on the pipeline run.

    >>> iteration_name(4), iteration_name(None)
    ('shots-4', 'all-shots')
    """
    return "all-shots" if shots is None else f"shots-{shots}"


def comparison_metrics(tables: Sequence[ReportTable]) -> dict[str, float]:
    """The pipeline run's metrics (module docstring) from the report's tables: per shot count, the
    headline column of the base, SFT, RFT and Δ rows (base repeated under every shot count)."""
    metrics: dict[str, float] = {}
    for table in tables:
        prefix = (
            "" if len(tables) == 1 else metric_key(f"{table.config}-{table.model}").replace("/", "_") + "/"
        )
        key = table.primary
        base = table.row("base", None)
        shot_counts = sorted(
            {r.shots for r in table.rows if r.method != "base"}, key=lambda s: (s is not None, s)
        )
        for shots in shot_counts or [None]:
            name = f"{prefix}{iteration_name(shots)}/{metric_key(key)}"
            rows = {
                "base": base if base is not None else table.row("base", shots),
                "sft": table.row("sft", shots),
                "rft": table.row("rft", shots),
                DELTA: table.row("delta", shots),
            }
            for method, row in rows.items():
                value = None if row is None else row.values.get(key)
                if value is not None:
                    metrics[f"{name}/{method}"] = round(float(value), 4)
    return metrics


def comparison_url(experiment_id: str, ui: str = LOCAL_UI, *, chart: bool = False) -> str:
    """The MLflow UI page that lists the experiment's pipeline runs with their comparison metrics as
    columns (the shared view :func:`shared_view_state`; ``chart``: MLflow's chart view of them), in
    its model-training section.

    >>> print(comparison_url("3"))
    http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=vrft-rft-vs-sft
    """
    # No search parameter in the address: MLflow ignores a shared view when the address has one.
    url = f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    url += f"&viewStateShareKey={SHARED_VIEW}"
    return url + ("&compareRunsMode=CHART" if chart else "")


def shared_view_state(metric_keys: Iterable[str]) -> str:
    """The shared view's state, as MLflow's runs page keeps it: the pipeline runs (``stage =
    'pipeline'``), newest first, with ``metric_keys`` as columns (as many as MLflow's tag limit holds).

    >>> json.loads(shared_view_state(["shots-1/accuracy/rft"]))["selectedColumns"]
    ['metrics.`shots-1/accuracy/rft`']
    """
    state: dict[str, Any] = {
        "searchFilter": f"tags.{TAG_STAGE} = '{STAGE_PIPELINE}'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": [],
        "runsHiddenMode": "FIRST_10_RUNS",
        "hideEmptyCharts": True,
    }
    text = json.dumps(state)
    for key in metric_keys:
        state["selectedColumns"].append(f"metrics.`{key}`")
        longer = json.dumps(state)
        if len(longer) > MAX_EXPERIMENT_TAG_VALUE:
            break
        text = longer
    return text


def series_key(record: RunRecord) -> str:
    """What one row of a benchmark is, across its runs: model, method, shots and training seed."""
    return json.dumps([record.group[1], record.method, record.shots, record.seed])


@dataclass(frozen=True)
class PipelineRun:
    """An earlier pipeline run of the benchmark, as its report recorded it."""

    run_id: str  # the pipeline run id (artifact prefix runs/<run_id>/)
    start_time: int
    evaluation_runs: Mapping[str, str]  # series key -> MLflow evaluation run id


def pipeline_runs(client: Any, experiment_id: str, config: str, this_run: str) -> list[PipelineRun]:
    """The pipeline runs of config ``config`` other than ``this_run`` whose report recorded its rows,
    newest first."""
    found: list[PipelineRun] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.{TAG_STAGE} = '{STAGE_PIPELINE}' and tags.{TAG_CONFIG} = '{config}'",
            order_by=["attributes.start_time DESC"],
            max_results=1000,
            page_token=token,
        )
        for run in page:
            tags = run.data.tags
            if tags.get(RUN_ID) == this_run or TAG_EVALUATION_RUNS not in tags:
                continue
            try:
                mapping = json.loads(tags[TAG_EVALUATION_RUNS])
            except ValueError:
                continue
            if isinstance(mapping, dict):
                found.append(PipelineRun(tags.get(RUN_ID, ""), int(run.info.start_time or 0), mapping))
        token = page.token
        if not token:
            return found


def previous_series(
    record: RunRecord, earlier: Iterable[PipelineRun], evaluations: Mapping[str, RunRecord]
) -> tuple[PipelineRun, RunRecord] | None:
    """The newest earlier pipeline run that reported ``record``'s series, evaluated the same way, and
    the evaluation it reported (``evaluations``: MLflow evaluation runs by run id)."""
    key = series_key(record)
    for run in earlier:
        shown = evaluations.get(str(run.evaluation_runs.get(key, "")))
        if shown is not None and shown.comparability == record.comparability:
            return run, shown
    return None


def producing_run(uri: str) -> tuple[str, str, str]:
    """(pipeline run, iteration, stage) of an artifact URI ``<root>/runs/<run>/<iteration>/<stage>/<name>/``;
    empty strings for a URI of another shape.

    >>> producing_run("s3://vrft/runs/20261204-1/shots-2/grpo/grpo/")
    ('20261204-1', 'shots-2', 'grpo')
    """
    parts = [p for p in uri.rstrip("/").split("/") if p]
    if len(parts) >= 6 and parts[-5] == "runs":
        return parts[-4], parts[-3], parts[-2]
    return "", "", ""


@dataclass(frozen=True)
class Provenance:
    """One result a report used: which pipeline run produced it."""

    iteration: str
    stage: str  # dataset, grpo, sft, evaluate-base, ...
    run_id: str  # the pipeline run that produced it
    uri: str


def provenance(records: Sequence[RunRecord]) -> list[Provenance]:
    """Every artifact behind the report's rows (the evaluations, the datasets and checkpoints they
    read), once each, in iteration and pipeline order."""
    seen: dict[str, Provenance] = {}
    for record in records:
        uris = [record.source] + [v for k, v in sorted(record.tags.items()) if k.startswith(INPUT_PREFIX)]
        for uri in uris:
            run_id, iteration, stage = producing_run(uri)
            if run_id and uri not in seen:
                seen[uri] = Provenance(iteration, stage, run_id, uri)
    order = {"dataset": 0, "grpo": 1, "sft": 2}
    return sorted(seen.values(), key=lambda p: (p.iteration, order.get(p.stage, 3), p.stage))


def provenance_lines(items: Sequence[Provenance], this_run: str) -> list[str]:
    """One line per result: ``shots-2 grpo: reused from run R1`` or ``... ran in this run``."""
    return [
        f"{p.iteration} {p.stage}: "
        + ("ran in this run" if p.run_id == this_run or not this_run else f"reused from run {p.run_id}")
        for p in items
    ]
