"""Paper-style tables from MLflow runs: base, then SFT / RFT / Δ (RFT − SFT) per shot count.

One table per (config, model) group. Values are percentages with one decimal, as in the paper. Where
the group reproduces a paper table, every column with a published counterpart gets a ``(paper)``
column beside it; the paper's Δ is computed like ours (RFT − SFT; the paper prints RFT − base).
For each (method, shots) the newest finished run is shown.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from vrft.report.config import ReportConfig
from vrft.report.paper import PaperTable, paper_table
from vrft.report.tracking import PAPER_COLUMN, PAPER_MODEL, PAPER_TABLE, TASK, RunRecord

PRIMARY = {"detection": "mAP", "classification": "accuracy", "grounding": "mIoU"}
PER_CATEGORY_PREFIX = {"detection": "AP/", "classification": "accuracy/"}
METHOD_LABELS = {"base": "Base", "sft": "SFT", "rft": "RFT", "delta": "Δ (RFT − SFT)"}


@dataclass
class Column:
    key: str  # the metric key in MLflow
    label: str  # the header
    paper: str | None = None  # the paper column it corresponds to


@dataclass
class TableRow:
    method: str  # base | sft | rft | delta
    shots: int | None
    values: dict[str, float | None]  # column key -> percent
    paper: dict[str, float | None] = field(default_factory=dict)
    run_id: str = ""

    @property
    def label(self) -> str:
        return METHOD_LABELS[self.method]


@dataclass
class ReportTable:
    config: str
    model: str
    task: str
    columns: list[Column]
    rows: list[TableRow]
    paper: PaperTable | None = None
    paper_model: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.config} — {self.model}"

    @property
    def primary(self) -> str:
        return self.columns[0].key

    def row(self, method: str, shots: int | None) -> TableRow | None:
        return next((r for r in self.rows if r.method == method and r.shots == shots), None)

    def to_dict(self) -> dict:
        return {"config": self.config, "model": self.model, "task": self.task,
                "paper_table": self.paper.key if self.paper else None, "paper_model": self.paper_model,
                "columns": [vars(c) for c in self.columns],
                "rows": [{"method": r.method, "shots": r.shots, "values": r.values, "paper": r.paper,
                          "run_id": r.run_id} for r in self.rows],
                "notes": self.notes}


def _shots_key(shots: int | None) -> tuple[int, int]:
    return (0, 0) if shots is None else (1, shots)


def _columns(runs: Sequence[RunRecord], task: str, config: ReportConfig, paper: PaperTable | None,
             paper_column: str, notes: list[str]) -> list[Column]:
    present: set[str] = set().union(*(r.metrics for r in runs))
    primary = PRIMARY.get(task, "")
    if config.metrics:
        keys = [k for k in config.metrics if k in present]
    else:
        keys = [primary] if primary in present else []
        keys += sorted(k for k in present if k.startswith("mAP/"))
        if task == "grounding":
            keys += [k for k in ("gIoU",) if k in present]
        prefix = PER_CATEGORY_PREFIX.get(task)
        per_category = sorted(k for k in present if prefix and k.startswith(prefix))
        if paper is not None:  # in the paper's column order, then the others by name
            def rank(key: str) -> tuple[int, str]:
                column = paper.column_for(key)
                return (paper.columns.index(column) if column in paper.columns else len(paper.columns), key)

            per_category.sort(key=rank)
        if len(per_category) > config.max_category_columns:
            notes.append(f"{len(per_category)} per-category columns left out (max_category_columns = "
                         f"{config.max_category_columns}); they are in each run's metrics.")
            per_category = []
        keys += per_category
    if not keys:
        raise ValueError(f"no metric to tabulate among {sorted(present)}")
    columns = []
    for key in keys:
        label = key.split("/", 1)[1] if key.startswith(("AP/", "accuracy/")) else key
        columns.append(Column(key, label, paper.column_for(key, paper_column) if paper else None))
    return columns


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def build_table(runs: Sequence[RunRecord], config: ReportConfig) -> ReportTable:
    """One table from the evaluation runs of one (config, model) group."""
    finished = sorted((r for r in runs if r.status == "FINISHED"), key=lambda r: r.start_time, reverse=True)
    if not finished:
        raise ValueError("no finished evaluation runs")
    latest: dict[tuple[str, int | None], RunRecord] = {}
    for run in finished:
        shots = None if run.method == "base" else run.shots
        latest.setdefault((run.method, shots), run)
    newest = finished[0]
    config_name, model = newest.group
    task = newest.tags.get(TASK, "detection")
    table_key = newest.tags.get(PAPER_TABLE) or config.paper_table
    paper = paper_table(table_key) if table_key else None
    paper_model = newest.tags.get(PAPER_MODEL) or config.paper_model
    paper_column = newest.tags.get(PAPER_COLUMN) or config.paper_column
    notes: list[str] = []
    columns = _columns(list(latest.values()), task, config, paper, paper_column, notes)

    def row(method: str, shots: int | None, run: RunRecord) -> TableRow:
        values = {c.key: _percent(run.metrics.get(c.key)) for c in columns}
        published = {c.key: paper.value(paper_model, method, shots, c.paper) if paper and c.paper else None
                     for c in columns}
        return TableRow(method, shots, values, published, run.run_id)

    rows: list[TableRow] = []
    if ("base", None) in latest:
        rows.append(row("base", None, latest[("base", None)]))
    shot_counts = sorted({s for m, s in latest if m != "base"}, key=_shots_key)
    for shots in shot_counts:
        trained = {m: row(m, shots, latest[(m, shots)]) for m in ("sft", "rft") if (m, shots) in latest}
        rows.extend(trained.values())
        if len(trained) == 2:
            sft, rft = trained["sft"], trained["rft"]
            rows.append(TableRow("delta", shots, {k: _delta(rft.values[k], sft.values[k]) for k in rft.values},
                                 {k: _delta(rft.paper.get(k), sft.paper.get(k)) for k in rft.values}))
    if paper is not None and not any(v is not None for r in rows for v in r.paper.values()):
        notes.append(f"{paper.key} has no row for model {paper_model!r} at these settings.")
    return ReportTable(config_name, model, task, columns, rows, paper, paper_model, notes)


def build_tables(runs: Sequence[RunRecord], config: ReportConfig) -> list[ReportTable]:
    """One table per (config, model) group, in config order; ``config.configs`` filters the groups."""
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        if not config.configs or run.group[0] in config.configs:
            groups[run.group].append(run)
    tables = []
    for key in sorted(groups):
        if any(r.status == "FINISHED" for r in groups[key]):
            tables.append(build_table(groups[key], config))
    return tables


def format_value(value: float | None, signed: bool = False) -> str:
    """One decimal like the paper; ``–`` for a missing value.

    >>> format_value(33.64), format_value(14.04, signed=True), format_value(None)
    ('33.6', '+14.0', '–')
    """
    if value is None:
        return "–"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def table_header(table: ReportTable) -> list[str]:
    header = ["Method", "Shots"]
    for column in table.columns:
        header.append(column.label)
        if column.paper:
            header.append(f"{column.label} (paper)")
    return header


def table_cells(table: ReportTable) -> list[list[str]]:
    """The body as strings: the same cells for Markdown and HTML."""
    body = []
    for row in table.rows:
        signed = row.method == "delta"
        cells = [row.label, "–" if row.shots is None else str(row.shots)]
        for column in table.columns:
            cells.append(format_value(row.values.get(column.key), signed))
            if column.paper:
                cells.append(format_value(row.paper.get(column.key), signed))
        body.append(cells)
    return body


def markdown_table(table: ReportTable) -> str:
    header = table_header(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * 2 + [" ---: "] * (len(header) - 2)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_cells(table)]
    return "\n".join(lines)
