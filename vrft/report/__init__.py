"""Stage 5: the RFT-vs-SFT report from a run's evaluations, and the regression check (see docs/evaluation.md).

``build_report(ReportConfig, output_dir, evaluations=[...], tracking_uri=..., experiment=...)`` writes paper-style tables
(base / SFT / RFT / Δ per shot count, the paper's numbers beside ours), plots, Markdown and a
self-contained HTML page. ``log_evaluation`` is how an evaluation becomes a run the report can read;
``check_regression`` compares a run with the previous run of the same series.
"""

from vrft._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "METHODS": "vrft.tracking.tags",
        "PaperTable": "vrft.report.paper",
        "RegressionResult": "vrft.report.regression",
        "ReportConfig": "vrft.report.config",
        "ReportResult": "vrft.report.build",
        "ReportTable": "vrft.report.tables",
        "RunRecord": "vrft.report.runs",
        "RunTags": "vrft.tracking.tags",
        "TABLES": "vrft.report.paper",
        "build_report": "vrft.report.build",
        "build_tables": "vrft.report.tables",
        "check_regression": "vrft.report.regression",
        "compare_runs": "vrft.report.regression",
        "evaluation_metrics": "vrft.report.runs",
        "evaluation_records": "vrft.report.artifacts",
        "evaluation_tags": "vrft.tracking.tags",
        "log_evaluation": "vrft.report.runs",
        "paper_table": "vrft.report.paper",
        "read_regression_summary": "vrft.report.build",
    },
)

__all__ = __dir__()
