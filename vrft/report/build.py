"""Stage 5 entry point: :func:`build_report` turns a pipeline run's evaluations into the RFT-vs-SFT report.

Output directory (written atomically):

* ``report.md`` — tables (Markdown) and links to ``plots/*.png``;
* ``report.html`` — the same, self-contained (PNGs inlined as base64);
* ``plots/<config>-<model>-shots.png`` and ``…-rewards.png``;
* ``tables.json`` — every table's numbers and source run ids;
* ``regression.json`` — the regression check of the newest run of every series (nightly reruns read
  its ``status``);
* ``manifest.json``.

With ``log_to_mlflow`` the directory is also logged as the artifacts of a ``stage=report`` run in
the same experiment, through :class:`vrft.tracking.Tracker` (this sets MLflow's process-wide
tracking URI to ``tracking_uri``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vrft.io import atomic_directory, atomic_write_text, check_output_apart, local_store_path, write_manifest
from vrft.report.artifacts import evaluation_records
from vrft.report.comparison import (
    SHARED_VIEW_TAG,
    PipelineRun,
    Provenance,
    comparison_metrics,
    pipeline_runs,
    previous_series,
    producing_run,
    provenance,
    series_key,
    shared_view_state,
)
from vrft.report.config import ReportConfig
from vrft.report.html import Section, render_html, render_markdown
from vrft.report.plots import History, is_reward_metric, plot_metric_vs_shots, plot_reward_curves, slug
from vrft.report.regression import RegressionResult, compare_runs, previous_run, write_summary
from vrft.report.runs import (
    RUN_ID,
    STAGE,
    STAGE_EVALUATE,
    STAGE_REPORT,
    STAGE_TRAIN,
    RunRecord,
    search_runs,
)
from vrft.report.tables import ReportTable, build_tables
from vrft.tracking import (
    STAGE_PIPELINE,
    TAG_CONFIG,
    TAG_EVALUATION_RUNS,
    TAG_REGRESSION_STATUS,
    TAG_STAGE,
    Tracker,
)

REPORT_MD, REPORT_HTML, TABLES_JSON, REGRESSION_JSON = (
    "report.md",
    "report.html",
    "tables.json",
    "regression.json",
)


@dataclass
class ReportResult:
    output_dir: Path
    markdown: Path
    html: Path
    plots: list[Path]
    tables: list[ReportTable]
    regressions: list[RegressionResult]
    regression_summary: dict[str, Any]
    mlflow_run_id: str | None
    run_id: str = ""  # the pipeline run the report belongs to ("" for a report across runs)
    # series key -> the MLflow evaluation run behind that row (what the next run compares with)
    evaluation_runs: dict[str, str] = field(default_factory=dict)
    provenance: list[Provenance] = field(default_factory=list)  # which run produced each result


def _latest_per_series(runs: list[RunRecord]) -> list[RunRecord]:
    latest: dict[tuple, RunRecord] = {}
    for run in sorted(runs, key=lambda r: r.start_time, reverse=True):
        if run.status == "FINISHED":
            latest.setdefault(run.series, run)
    return sorted(latest.values(), key=lambda r: (r.series[:3], r.shots or 0))


def _reward_histories(client: Any, runs: list[RunRecord]) -> dict[str, dict[str, History]]:
    """run label -> reward key -> [(step, value)], for the newest training run of each series."""
    histories: dict[str, dict[str, History]] = {}
    for run in _latest_per_series(runs):
        label = run.method.upper() + (f" {run.shots}-shot" if run.shots else "")
        series = {
            key: [(m.step, m.value) for m in client.get_metric_history(run.run_id, key)]
            for key in run.metrics
            if is_reward_metric(key)
        }
        if series:
            histories[label] = series
    return histories


def _history_previous(run: RunRecord, history: list[RunRecord], this_run: str) -> RunRecord | None:
    """The newest finished MLflow run of ``run``'s series, evaluated the same way, from another pipeline run."""
    same = [
        h
        for h in history
        if h.series == run.series
        and h.status == "FINISHED"
        and h.comparability == run.comparability
        and (not this_run or h.tags.get(RUN_ID) != this_run)
        and (not run.seed or h.seed in ("", run.seed))
    ]
    return max(same, key=lambda h: h.start_time, default=None)


def _mlflow_evaluation(run: RunRecord, history: list[RunRecord]) -> RunRecord | None:
    """The MLflow evaluation run that logged the evaluation artifact ``run`` was read from: the
    pipeline run that produced it (a reused evaluation names an earlier one), same series and seed."""
    made_in = run.tags.get(RUN_ID, "")
    same = [
        h
        for h in history
        if made_in
        and h.tags.get(RUN_ID) == made_in
        and h.series == run.series
        and h.seed == run.seed
        and h.status == "FINISHED"
    ]
    return max(same, key=lambda h: h.start_time, default=None)


class _PreviousRuns:
    """The regression check's "previous run of the same benchmark": the newest earlier pipeline run
    of the config whose report showed the series (what it reported, even if it had reused that
    evaluation itself); for runs reported before pipeline runs recorded that, the newest MLflow
    evaluation of the series from another pipeline run."""

    def __init__(self, client: Any, experiment_id: str, history: list[RunRecord], this_run: str) -> None:
        self.client, self.experiment_id = client, experiment_id
        self.history, self.this_run = history, this_run
        self.by_id = {h.run_id: h for h in history}
        self._earlier: dict[str, list[PipelineRun]] = {}

    def find(self, run: RunRecord) -> tuple[str, RunRecord | None]:
        """(previous pipeline run id, the evaluation it showed); ("", None) when there is none."""
        config = run.group[0]
        if self.client is not None and config not in self._earlier:
            self._earlier[config] = pipeline_runs(self.client, self.experiment_id, config, self.this_run)
        found = previous_series(run, self._earlier.get(config, []), self.by_id)
        if found is not None:
            return found[0].run_id, found[1]
        shown = _history_previous(run, self.history, self.this_run)
        return (shown.tags.get(RUN_ID, "") if shown else ""), shown


def build_report(
    config: ReportConfig,
    output_dir: str | Path,
    *,
    tracking_uri: str = "",
    experiment: str = "",
    evaluations: Sequence[str | Path] | None = None,
    sources: Sequence[str] = (),
    run_id: str = "",
    overwrite: bool = False,
) -> ReportResult:
    """Write the report into ``output_dir``.

    With ``evaluations`` (evaluation output directories: what a pipeline run hands its report) the
    tables hold exactly those; MLflow (``tracking_uri`` / ``experiment``, optional) then only gives
    the regression check its previous runs (other pipeline runs than ``run_id``) and the reward
    curves (training runs tagged ``run_id``); ``sources`` (one per evaluation, optional) is what the
    tables cite for each: the artifacts' URIs rather than the local copies. Without ``evaluations``
    the tables come from the experiment's MLflow evaluation runs, newest per (method, shots, seed) —
    for reports across runs.
    """
    from mlflow.tracking import MlflowClient

    if sources and evaluations is None:
        raise ValueError("build_report: sources name evaluations, but no evaluations were passed")
    # overwrite would delete a local MLflow store or an evaluation inside the output directory
    check_output_apart(
        output_dir,
        {
            "MLflow store": local_store_path(tracking_uri) if tracking_uri else None,
            **{f"evaluations[{i}]": directory for i, directory in enumerate(evaluations or ())},
        },
    )
    client = None
    experiment_id = ""
    history: list[RunRecord] = []
    train_runs: list[RunRecord] = []
    if tracking_uri and experiment:
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None and evaluations is None:
            raise ValueError(f"no MLflow experiment named {experiment!r} at {tracking_uri}")
        if found is not None:
            experiment_id = found.experiment_id
            history = list(search_runs(client, [found.experiment_id], STAGE_EVALUATE))
            train_runs = list(search_runs(client, [found.experiment_id], STAGE_TRAIN))
    elif evaluations is None:
        raise ValueError(
            "build_report: pass the evaluations, or an MLflow tracking_uri and experiment to read"
        )
    if evaluations is not None:
        eval_runs = evaluation_records(list(evaluations), sources)
        if run_id:
            train_runs = [r for r in train_runs if r.tags.get(RUN_ID) == run_id]
    else:
        eval_runs = history
    tables = build_tables(eval_runs, config)
    if not tables:
        raise ValueError(
            f"experiment {experiment!r} has no finished evaluation runs (tag {STAGE}={STAGE_EVALUATE})"
            + (f" for configs {config.configs}" if config.configs else "")
        )
    shown = {(t.config, t.model) for t in tables}
    headline = {(t.config, t.model): t.primary for t in tables}
    evaluation_runs: dict[str, str] = {}
    if evaluations is not None:
        previous = _PreviousRuns(client if experiment_id else None, experiment_id, history, run_id)
        regressions = []
        for run in eval_runs:
            if run.group not in shown:
                continue
            logged = _mlflow_evaluation(run, history)
            if logged is not None:
                evaluation_runs[series_key(run)] = logged.run_id
            previous_pipeline_run, shown_before = previous.find(run)
            result = compare_runs(run, shown_before, config.regression_threshold, config.regression_metrics)
            result.previous_pipeline_run = previous_pipeline_run
            result.evaluated_in = producing_run(run.source)[0] or run.tags.get(RUN_ID, "")
            result.headline = headline.get(run.group, "")
            regressions.append(result)
    else:
        regressions = [
            compare_runs(
                run, previous_run(run, eval_runs), config.regression_threshold, config.regression_metrics
            )
            for run in _latest_per_series([r for r in eval_runs if r.group in shown])
        ]
    train_by_group: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in train_runs:
        train_by_group[run.group].append(run)

    sources_of_results = provenance(eval_runs) if evaluations is not None else []
    output_dir = Path(output_dir)
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        sections = []
        for table in tables:
            name = slug([table.config, table.model])
            section = Section(table)
            shots_plot = plot_metric_vs_shots(table, tmp / "plots" / f"{name}-shots.png")
            if shots_plot is not None:
                section.figures.append((f"{table.title}: {table.columns[0].label} vs shots", shots_plot))
            histories = (
                _reward_histories(client, train_by_group.get((table.config, table.model), []))
                if client is not None
                else {}
            )
            rewards_plot = plot_reward_curves(
                histories,
                tmp / "plots" / f"{name}-rewards.png",
                f"{table.title}: reward parts over training steps",
            )
            if rewards_plot is not None:
                section.figures.append((f"{table.title}: reward parts over training steps", rewards_plot))
            sections.append(section)
        atomic_write_text(
            tmp / REPORT_MD,
            render_markdown(
                config.title,
                sections,
                regressions,
                config.regression_threshold,
                tmp,
                this_run=run_id,
                provenance=sources_of_results,
            ),
        )
        atomic_write_text(
            tmp / REPORT_HTML,
            render_html(
                config.title,
                sections,
                regressions,
                config.regression_threshold,
                this_run=run_id,
                provenance=sources_of_results,
            ),
        )
        atomic_write_text(
            tmp / TABLES_JSON, json.dumps([t.to_dict() for t in tables], indent=2, allow_nan=False)
        )
        summary = write_summary(regressions, config.regression_threshold, tmp / REGRESSION_JSON)
        write_manifest(tmp, {"format": "vrft.report/1", "experiment": experiment})
        plot_names = [path.relative_to(tmp) for s in sections for _, path in s.figures]

    mlflow_run_id = None
    if config.log_to_mlflow and tracking_uri and experiment:
        tracker = Tracker(tracking_uri)
        with tracker.stage_run(
            STAGE_REPORT, tags={RUN_ID: run_id} if run_id else {}, run_name="report", experiment=experiment
        ) as mlflow_run_id:
            _log_report(tracker, output_dir, summary, len(tables))
    return ReportResult(
        output_dir,
        output_dir / REPORT_MD,
        output_dir / REPORT_HTML,
        [output_dir / p for p in plot_names],
        tables,
        regressions,
        summary,
        mlflow_run_id,
        run_id,
        evaluation_runs,
        sources_of_results,
    )


def log_report(tracker: Tracker, result: ReportResult) -> None:
    """Record a built report in the active (report stage's) MLflow run: its regression status, the
    number of regressions and tables, and the report's files as artifacts."""
    _log_report(tracker, result.output_dir, result.regression_summary, len(result.tables))


def log_on_pipeline_run(tracker: Tracker, result: ReportResult, experiment: str, config: str) -> str | None:
    """Give the pipeline run (MLflow's parent run of ``result.run_id``) the comparison: its metrics
    (:func:`vrft.report.comparison.comparison_metrics`), the regression status, which evaluation run
    each row showed (tag ``evaluation_runs``: what the next run compares with) and the report's files
    as artifacts (``report/``), and the experiment the shared view the comparison link opens. Where no such run exists (a cluster's stages run without one) one
    is made, tagged ``stage=pipeline`` and ``run_id``, and ended. Returns its id (``None`` untracked)."""
    if not tracker.enabled or not result.run_id:
        return None
    parent = tracker.find_pipeline_run(experiment, result.run_id)
    made = parent is None
    if parent is None:
        parent = tracker.create_run(
            experiment,
            f"pipeline-{result.run_id}",
            {TAG_STAGE: STAGE_PIPELINE, RUN_ID: result.run_id, TAG_CONFIG: config},
        )
        assert parent is not None
    metrics = comparison_metrics(result.tables)
    try:
        tracker.log_metrics(metrics, run_id=parent)
        tracker.set_experiment_tag(experiment, SHARED_VIEW_TAG, shared_view_state(list(metrics)))
        tracker.set_tags(
            {
                TAG_STAGE: STAGE_PIPELINE,
                TAG_REGRESSION_STATUS: result.regression_summary.get("status", ""),
                TAG_EVALUATION_RUNS: json.dumps(result.evaluation_runs, sort_keys=True),
            },
            run_id=parent,
        )
        tracker.log_artifacts(result.output_dir, "report", run_id=parent)
    except BaseException as exc:
        if made:
            tracker.end_run(parent, exc)
        raise
    if made:
        tracker.end_run(parent)
    return parent


def _log_report(tracker: Tracker, output_dir: Path, summary: dict[str, Any], tables: int) -> None:
    tracker.set_tags({TAG_REGRESSION_STATUS: summary.get("status", "")})
    tracker.log_metrics({"regressions": float(len(summary.get("regressions", []))), "tables": float(tables)})
    tracker.log_artifacts(output_dir, "report")


def read_regression_summary(report_dir: str | Path) -> dict[str, Any]:
    """The ``regression.json`` of a finished report (what a nightly job checks)."""
    return json.loads((Path(report_dir) / REGRESSION_JSON).read_text(encoding="utf-8"))
