"""Regression check: did a rerun score worse than the previous run of the same thing?

"The same thing" is the run's series — same ``config``, ``model``, ``method`` and ``shots`` tags —
and "previous" is the newest finished evaluation run of that series that started before it. Every
metric both runs have is compared (``timing/*`` excepted: throughput is not quality); a metric
that dropped by more than ``threshold`` percentage points (metrics are fractions, so 1.0 means
0.01) is flagged. Nightly reruns read the summary JSON's ``status``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vrft.io import atomic_write_text, dumps_deterministic
from vrft.report.runs import STAGE_EVALUATE, TIMING_PREFIX, RunRecord, run_record, search_runs

STATUS_OK, STATUS_REGRESSED, STATUS_NO_PREVIOUS = "ok", "regressed", "no_previous"


@dataclass
class Regression:
    metric: str
    previous: float
    current: float
    drop_points: float  # (previous - current) * 100


@dataclass
class RegressionResult:
    run_id: str
    previous_run_id: str | None
    series: dict[str, Any]  # config, model, method, shots
    threshold_points: float
    status: str
    compared: list[str] = field(default_factory=list)
    regressions: list[Regression] = field(default_factory=list)
    # Every compared metric: current − previous (fractions; 0.0 where the evaluation was reused).
    deltas: dict[str, float] = field(default_factory=dict)
    previous: dict[str, float] = field(default_factory=dict)  # the previous values of the compared metrics
    # The pipeline runs behind the two sides: the previous run of the benchmark (what it reported) and
    # the run whose evaluation this row shows (another run's when the evaluation was reused).
    previous_pipeline_run: str = ""
    evaluated_in: str = ""
    headline: str = ""  # the metric a one-line summary shows first (the task's primary)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_runs(
    current: RunRecord, previous: RunRecord | None, threshold_points: float, metrics: Sequence[str] = ()
) -> RegressionResult:
    """Flag the metrics of ``current`` that are more than ``threshold_points`` below ``previous``.

    ``metrics`` restricts the comparison (default: every metric both runs logged, timing excepted).
    """
    config, model, method, shots = current.series
    series = {"config": config, "model": model, "method": method, "shots": shots}
    if previous is None:
        return RegressionResult(current.run_id, None, series, threshold_points, STATUS_NO_PREVIOUS)
    names = sorted(set(current.metrics) & set(previous.metrics))
    names = [n for n in names if not n.startswith(TIMING_PREFIX) and (not metrics or n in metrics)]
    regressions = []
    for name in names:
        drop = (previous.metrics[name] - current.metrics[name]) * 100.0
        if drop > threshold_points:
            regressions.append(Regression(name, previous.metrics[name], current.metrics[name], drop))
    status = STATUS_REGRESSED if regressions else STATUS_OK
    return RegressionResult(
        current.run_id,
        previous.run_id,
        series,
        threshold_points,
        status,
        names,
        regressions,
        deltas={n: current.metrics[n] - previous.metrics[n] for n in names},
        previous={n: previous.metrics[n] for n in names},
    )


def previous_run(run: RunRecord, candidates: Iterable[RunRecord]) -> RunRecord | None:
    """The newest finished run of ``run``'s series that started before it."""
    earlier = [
        c
        for c in candidates
        if c.series == run.series
        and c.run_id != run.run_id
        and c.status == "FINISHED"
        and c.start_time < run.start_time
    ]
    return max(earlier, key=lambda c: c.start_time, default=None)


def check_regression(
    run_id: str,
    *,
    tracking_uri: str | None = None,
    threshold_points: float = 1.0,
    metrics: Sequence[str] = (),
    output_path: str | Path | None = None,
) -> RegressionResult:
    """Compare run ``run_id`` with the previous run of its series; write the result JSON if asked."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    current = run_record(client.get_run(run_id))
    candidates = search_runs(client, [current.experiment_id], STAGE_EVALUATE)
    result = compare_runs(current, previous_run(current, candidates), threshold_points, metrics)
    if output_path is not None:
        write_summary([result], threshold_points, output_path)
    return result


def summarize(results: Sequence[RegressionResult], threshold_points: float) -> dict[str, Any]:
    """The nightly summary: overall status, every flagged metric as one flat entry (``regressions``:
    what a notification lists), and every checked run in full (``runs``)."""
    flagged = [
        {
            "run_id": r.run_id,
            "previous_run_id": r.previous_run_id,
            **r.series,
            "metric": f"{r.series['method']}/{item.metric}",
            "previous": item.previous,
            "current": item.current,
            "drop": item.previous - item.current,
            "drop_points": item.drop_points,
        }
        for r in results
        for item in r.regressions
    ]
    configs = sorted({r.series["config"] for r in results})
    return {
        "status": STATUS_REGRESSED if flagged else STATUS_OK,
        "config": ", ".join(configs),
        "threshold_points": threshold_points,
        "checked": len(results),
        "regressed_runs": sum(r.status == STATUS_REGRESSED for r in results),
        "regressions": flagged,
        "runs": [r.to_dict() for r in results],
    }


def write_summary(
    results: Sequence[RegressionResult], threshold_points: float, path: str | Path
) -> dict[str, Any]:
    summary = summarize(results, threshold_points)
    atomic_write_text(path, dumps_deterministic(summary))
    return summary
