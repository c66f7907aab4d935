"""Stage 5: the RFT-vs-SFT report from MLflow runs, and the regression check (see docs/evaluation.md).

``build_report(ReportConfig, output_dir, tracking_uri=..., experiment=...)`` writes paper-style tables
(base / SFT / RFT / Δ per shot count, the paper's numbers beside ours), plots, Markdown and a
self-contained HTML page. ``log_evaluation`` is how an evaluation becomes a run the report can read;
``check_regression`` compares a run with the previous run of the same series.
"""

from vrft.report.build import ReportResult, build_report, read_regression_summary
from vrft.report.config import ReportConfig
from vrft.report.paper import TABLES, PaperTable, paper_table
from vrft.report.regression import RegressionResult, check_regression, compare_runs
from vrft.report.tables import ReportTable, build_tables
from vrft.report.tracking import (
    METHODS,
    RunRecord,
    RunTags,
    evaluation_metrics,
    evaluation_tags,
    log_evaluation,
)

__all__ = [
    "METHODS", "TABLES", "PaperTable", "RegressionResult", "ReportConfig", "ReportResult", "ReportTable", "RunRecord",
    "RunTags", "build_report", "build_tables", "check_regression", "compare_runs", "evaluation_metrics",
    "evaluation_tags", "log_evaluation", "paper_table", "read_regression_summary",
]
