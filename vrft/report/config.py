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
    override the paper fields per table, so one report can hold several paper settings."""

    title: str = "Visual-RFT: RFT vs SFT"
    paper_table: str = ""  # table2 ... table8: show the paper's numbers beside ours
    paper_model: str = QWEN2_VL_2B  # which of the paper's row groups (Qwen2-VL-2B / Qwen2-VL-7B)
    paper_column: str = ""  # the primary metric's paper column where a table has several (Table 2, 6)
    configs: list[str] = field(default_factory=list)  # only these config tags; empty = all
    metrics: list[str] = field(default_factory=list)  # table columns; empty = primary + groups + per category
    max_category_columns: int = (
        16  # more categories than this (e.g. 102 flowers): per-category columns left out
    )
    regression_threshold: float = 1.0  # percentage points a metric may drop before it is flagged
    regression_metrics: list[str] = field(default_factory=list)  # empty = every metric both runs have
    log_to_mlflow: bool = True  # log the report files as artifacts of a stage=report run

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
