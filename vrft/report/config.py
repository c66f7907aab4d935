"""The ``report:`` section of an experiment YAML (stage 5).

>>> from vrft.config import from_dict
>>> from_dict(ReportConfig, {"paper_table": "table3"}).regression_threshold
1.0
>>> from_dict(ReportConfig, {"paper_table": "table9"})
Traceback (most recent call last):
...
vrft.config.ConfigError: paper_table: 'table9' is not one of table2, table3, table4, table5, table6, table7, table8
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vrft.config import ConfigError
from vrft.report.paper import QWEN2_VL_2B, TABLES, paper_table


@dataclass
class ReportConfig:
    """What the RFT-vs-SFT report shows. Run tags (``paper_table``, ``paper_model``, ``paper_column``)
    override the paper fields per table, so one report can hold several paper settings.

    Parameters:
        title: The report's heading.
        paper_table: ``table2`` ... ``table8``: show the paper's numbers of that table beside ours.
        paper_model: Which of the paper's row groups (Qwen2-VL-2B or Qwen2-VL-7B).
        paper_column: The primary metric's paper column where a table has several (Tables 2 and 6).
        configs: Only runs of these config tags; empty: all.
        metrics: The tables' columns; empty: the primary metric, the category groups and one
            column per category.
        max_category_columns: With more categories than this (e.g. 102 flowers) the per-category
            columns are left out.
        regression_threshold: Percentage points a metric may drop from the previous run before it
            is flagged as a regression.
        regression_metrics: The metrics the regression check compares; empty: every metric both
            runs have.
        log_to_mlflow: Log the report files as artifacts of a ``stage=report`` MLflow run.
    """

    title: str = "Visual-RFT: RFT vs SFT"
    paper_table: str = ""
    paper_model: str = QWEN2_VL_2B
    paper_column: str = ""
    configs: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    max_category_columns: int = 16
    regression_threshold: float = 1.0
    regression_metrics: list[str] = field(default_factory=list)
    log_to_mlflow: bool = True

    def validate(self) -> None:
        if self.paper_table:
            try:
                key = paper_table(self.paper_table).key
            except ValueError as exc:
                raise ConfigError(
                    f"paper_table: {self.paper_table!r} is not one of {', '.join(TABLES)}"
                ) from exc
            if self.paper_column and self.paper_column not in TABLES[key].columns:
                raise ConfigError(
                    f"paper_column: {self.paper_column!r} is not a column of {key} "
                    f"({', '.join(TABLES[key].columns)})"
                )
        if self.regression_threshold < 0:
            raise ConfigError(f"regression_threshold: must be >= 0 points, got {self.regression_threshold}")
        if self.max_category_columns < 0:
            raise ConfigError(f"max_category_columns: must be >= 0, got {self.max_category_columns}")
