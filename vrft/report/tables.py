"""Paper-style tables from MLflow runs: base, then SFT / RFT / Δ (RFT − SFT) per shot count.

One table per (config, model) group. Values are percentages with one decimal, as in the paper. Where
the group reproduces a paper table, every column with a published counterpart gets a ``(paper)``
column beside it; the paper's Δ is computed like ours (RFT − SFT; the paper prints RFT − base).
Rows come from this run's evaluation artifacts (or, from the CLI, the newest MLflow run per
(method, shots, seed)); rows evaluated differently from the rest of their table are refused with
a reason; repeats over training seeds show mean ± standard deviation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from vrft.paper_mode import authors_protocol, authors_training
from vrft.report.config import ReportConfig
from vrft.report.paper import PaperTable, paper_table
from vrft.report.runs import (
    EVAL_MODE,
    EVAL_SPLIT,
    GATE_SOURCE,
    GROUND_TRUTH,
    IMAGE_CAP,
    PAPER_COLUMN,
    PAPER_MODEL,
    PAPER_TABLE,
    PROTOCOL_PREFIX,
    TASK,
    RunRecord,
)

PRIMARY = {"detection": "mAP", "classification": "accuracy", "grounding": "mIoU"}
PER_CATEGORY_PREFIX = {"detection": "AP/", "classification": "accuracy/"}
METHOD_LABELS = {"base": "Base", "sft": "SFT", "rft": "RFT", "delta": "Δ (RFT − SFT)"}


@dataclass
class Column:
    key: str  # the metric key in MLflow
    label: str  # the header
    paper: str | None = None  # the paper column it corresponds to
    paper_label: str = ""  # where the paper's values come from: "Table 2, Cars196"


@dataclass
class TableRow:
    method: str  # base | sft | rft | delta
    shots: int | None
    values: dict[str, float | None]  # column key -> percent
    paper: dict[str, float | None] = field(default_factory=dict)
    run_id: str = ""
    spread: dict[str, float | None] = field(default_factory=dict)  # standard deviation over seeds
    n: int = 1  # seeds averaged
    seeds: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # the evaluation artifacts read
    within_spread: dict[str, bool] = field(default_factory=dict)  # Δ rows: |Δ| inside the seeds' spread
    paper_row: str = ""  # the paper's row its paper values come from ("Qwen2-VL-2B RFT 4-shot"); "" for none
    training: str = ""  # what trained the row: "reward:<name>" (RFT), "sft:<style>" (SFT)

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
        return {
            "config": self.config,
            "model": self.model,
            "task": self.task,
            "paper_table": self.paper.key if self.paper else None,
            "paper_model": self.paper_model,
            "columns": [vars(c) for c in self.columns],
            "rows": [
                {
                    "method": r.method,
                    "shots": r.shots,
                    "values": r.values,
                    "paper": r.paper,
                    "paper_row": r.paper_row,
                    "training": r.training,
                    "run_id": r.run_id,
                    "spread": r.spread,
                    "n": r.n,
                    "seeds": r.seeds,
                    "sources": r.sources,
                    "within_spread": r.within_spread,
                }
                for r in self.rows
            ],
            "notes": self.notes,
        }


def _shots_key(shots: int | None) -> tuple[int, int]:
    return (0, 0) if shots is None else (1, shots)


def _columns(
    runs: Sequence[RunRecord],
    task: str,
    config: ReportConfig,
    paper: PaperTable | None,
    paper_column: str,
    notes: list[str],
) -> list[Column]:
    present: set[str] = set().union(*(r.metrics for r in runs))
    primary = PRIMARY.get(task, "")
    if config.metrics:
        keys = [k for k in config.metrics if k in present]
    else:
        keys = [primary] if primary in present else []
        keys += [k for k in ("accuracy_strict", "existence/recall") if k in present]
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
            notes.append(
                f"{len(per_category)} per-category columns left out (max_category_columns = "
                f"{config.max_category_columns}); they are in each run's metrics."
            )
            per_category = []
        keys += per_category
    if not keys:
        raise ValueError(f"no metric to tabulate among {sorted(present)}")
    columns = []
    for key in keys:
        label = key.split("/", 1)[1] if key.startswith(("AP/", "accuracy/")) else key
        published = paper.column_for(key, paper_column) if paper else None
        where = f"{paper.name}, {published}" if paper and published else ""
        columns.append(Column(key, label, published, where))
    return columns


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _mean_spread(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``None`` with fewer than two values)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


_NAMES = {EVAL_MODE: "eval mode", EVAL_SPLIT: "evaluated split", IMAGE_CAP: "image cap"}


def _short(key: str, value: str) -> str:
    """A value as a refusal line shows it: hashes by their first 12 digits."""
    if key == EVAL_SPLIT or key.endswith("sha256"):
        return value[:12] or "?"
    return value or "?"


def _name(key: str) -> str:
    return _NAMES.get(key, key.removeprefix(PROTOCOL_PREFIX))


def _differences(run: RunRecord, reference: dict[str, str]) -> list[str]:
    """``name mine ≠ reference`` for each comparability entry where ``run`` differs from ``reference``."""
    mine = run.comparability
    keys = list(dict.fromkeys([*reference, *mine]))
    return [
        f"{_name(k)} {_short(k, mine.get(k, ''))} ≠ {_short(k, reference.get(k, ''))}"
        for k in keys
        if mine.get(k, "") != reference.get(k, "")
    ]


def _values(runs: Sequence[RunRecord], key: str) -> list[str]:
    """The distinct values of tag ``key`` over ``runs`` (every row, not only the first), in order."""
    return list(dict.fromkeys(r.tags.get(key, "") for r in runs if r.tags.get(key, "")))


def _one(runs: Sequence[RunRecord], key: str, missing: str = "?") -> str:
    values = _values(runs, key)
    return " / ".join(values) if values else missing


def _authors_deviations(task: str, runs: Sequence[RunRecord]) -> list[str]:
    """Where the rows' recorded protocol and training differ from the authors' code: vrft's own
    (often stricter) choices, named."""
    protocol = {k.removeprefix(PROTOCOL_PREFIX): _one(runs, k, "") for k in _protocol_keys(runs)}
    metric = "lvis" if "lvis_ap" in protocol else ""
    authors = authors_protocol(task, metric, masks="grounding_mask" in protocol)
    out = []
    for key, theirs in authors.items():
        ours = protocol.get(key, "")
        if ours and ours.split("@", 1)[0] != theirs:
            out.append(f"{key} {ours} (the authors': {theirs})")
    if task == "classification" and protocol.get("test_list") == "none":
        out.append("eval split not read from the authors' test list")
    for method in ("rft", "sft"):
        theirs = authors_training(task, method)
        ours = _one([r for r in runs if r.method == method], "training", "")
        if theirs and ours and ours != theirs:
            out.append(f"{method.upper()} training {ours} (the authors': {theirs})")
    return out


def _protocol_keys(runs: Sequence[RunRecord]) -> list[str]:
    return sorted({k for r in runs for k in r.tags if k.startswith(PROTOCOL_PREFIX)})


def _protocol_notes(task: str, runs: Sequence[RunRecord], paper: PaperTable | None) -> list[str]:
    """How the numbers were computed — read from every row — and where that differs from the paper's
    protocol."""
    notes, deviations = [], []
    caps = [c for c in _values(runs, IMAGE_CAP) if c != "all"]
    if caps:
        deviations.append(f"only the first {' / '.join(caps)} eval images (the paper: the full set)")
    if task == "classification":
        notes.append(
            "Protocol: accuracy = the authors' rule (first <answer>, spaces and _ removed, two-way "
            "containment; paper-comparable); accuracy_strict = the reward's exact match."
        )
    elif task == "detection":
        modes = _values(runs, EVAL_MODE)
        gates = _values(runs, GATE_SOURCE)
        recalls = sorted(
            {round(r.metrics["existence/recall"] * 100, 1) for r in runs if "existence/recall" in r.metrics}
        )
        text = f"Protocol: detection mode {' / '.join(modes) or '?'}"
        if gates:
            text += f"; one existence gate for every row, from {' / '.join(gates)}" + (
                f" (recall {', '.join(f'{v:.1f}%' for v in recalls)})" if recalls else ""
            )
        text += f"; ground truth {_one(runs, GROUND_TRUTH)}."
        notes.append(text)
        if any(m != "existence_gated" for m in modes):
            deviations.append(
                f"mode {' / '.join(modes)} (the paper gates with the base model's category list)"
            )
        elif any(g == "ground_truth" for g in gates):
            deviations.append("gate from the ground truth (the paper: from the base model)")
        if "rebuilt" in _values(runs, GROUND_TRUTH):
            deviations.append("ground truth rebuilt from rows (crowd regions dropped)")
    elif task == "grounding":
        notes.append("Protocol: box IoU of the first instruction per image (the authors' LISA evaluation).")
    protocol = [f"{_name(k)} {_short(k, _one(runs, k))}" for k in _protocol_keys(runs)]
    if protocol:
        notes.append("Evaluated with: " + "; ".join(protocol) + ".")
    trained = [
        f"{m.upper()} rows: {_one([r for r in runs if r.method == m], 'training')}"
        for m in ("rft", "sft")
        if any(r.method == m for r in runs)
    ]
    if trained:
        notes.append("Trained with: " + "; ".join(trained) + ".")
    if paper is not None:
        deviations += _authors_deviations(task, runs)
        notes.append(
            "Paper columns: "
            + (
                "same protocol as ours."
                if not deviations
                else "NOT the same protocol — ours differs: " + "; ".join(deviations) + "."
            )
        )
    return notes


def _reference_training(runs: Sequence[RunRecord]) -> dict[str, str]:
    """Per method, the training most of its rows share (the newest on a tie): rows trained otherwise
    are refused, so a table never mixes rewards."""
    out = {}
    for method in ("sft", "rft"):
        values = [r.training for r in runs if r.method == method]
        if values:
            out[method] = max(dict.fromkeys(values), key=values.count)
    return out


def build_table(runs: Sequence[RunRecord], config: ReportConfig) -> ReportTable:
    """One table from the evaluation runs of one (config, model) group.

    Rows whose eval mode, evaluated split or image cap differ from the table's reference (the base
    row, else the most common setting) are refused, each with a one-line reason in the notes. Runs
    of the same (method, shots) with different ``seed`` tags are repeats: the row shows their mean
    and standard deviation; MLflow reruns of the same seed keep only the newest.
    """
    finished = sorted((r for r in runs if r.status == "FINISHED"), key=lambda r: r.start_time, reverse=True)
    if not finished:
        raise ValueError("no finished evaluation runs")
    latest: dict[tuple[str, int | None, str], RunRecord] = {}
    for run in finished:
        shots = None if run.method == "base" else run.shots
        seed = "" if run.method == "base" else run.seed
        latest.setdefault((run.method, shots, seed), run)
    newest = finished[0]
    config_name, model = newest.group
    task = newest.tags.get(TASK, "detection")
    table_key = newest.tags.get(PAPER_TABLE) or config.paper_table
    paper = paper_table(table_key) if table_key else None
    paper_model = newest.tags.get(PAPER_MODEL) or config.paper_model
    paper_column = newest.tags.get(PAPER_COLUMN) or config.paper_column
    notes: list[str] = []

    base = [r for (m, _, _), r in latest.items() if m == "base"]
    settings = [tuple(sorted(r.comparability.items())) for r in latest.values()]
    reference = dict(base[0].comparability if base else max(settings, key=settings.count))
    training = _reference_training(list(latest.values()))
    kept: dict[tuple[str, int | None], list[RunRecord]] = defaultdict(list)
    for (method, shots, _), run in sorted(
        latest.items(), key=lambda kv: (kv[0][0], _shots_key(kv[0][1]), kv[0][2])
    ):
        differences = _differences(run, reference)
        if method in training and run.training != training[method]:
            differences.append(f"training {run.training or '?'} ≠ {training[method] or '?'}")
        if differences:
            label = (
                METHOD_LABELS.get(method, method)
                + (f" {shots}-shot" if shots else "")
                + (f" seed {run.seed}" if run.seed else "")
            )
            notes.append(f"Refused {label} ({run.source or run.run_id}): {'; '.join(differences)}.")
        else:
            kept[(method, shots)].append(run)
    if not kept:
        raise ValueError(f"{config_name}: every evaluation was refused as not comparable")
    columns = _columns([r for rs in kept.values() for r in rs], task, config, paper, paper_column, notes)

    def row(method: str, shots: int | None, group: list[RunRecord]) -> TableRow:
        values, spread = {}, {}
        for c in columns:
            present = [100.0 * r.metrics[c.key] for r in group if c.key in r.metrics]
            values[c.key], spread[c.key] = _mean_spread(present)
        published = {
            c.key: paper.value(paper_model, method, shots, c.paper) if paper and c.paper else None
            for c in columns
        }
        seeds = sorted(r.seed for r in group if r.seed)
        return TableRow(
            method,
            shots,
            values,
            published,
            ",".join(r.run_id for r in group),
            spread=spread,
            n=len(group),
            seeds=seeds,
            sources=[r.source for r in group if r.source],
            paper_row=paper.row_label(paper_model, method, shots) if paper else "",
            training=group[0].training,
        )

    rows: list[TableRow] = []
    if ("base", None) in kept:
        rows.append(row("base", None, kept[("base", None)]))
    shot_counts = sorted({s for m, s in kept if m != "base"}, key=_shots_key)
    for shots in shot_counts:
        trained = {m: row(m, shots, kept[(m, shots)]) for m in ("sft", "rft") if (m, shots) in kept}
        rows.extend(trained.values())
        if len(trained) == 2:
            sft, rft = trained["sft"], trained["rft"]
            delta = TableRow(
                "delta",
                shots,
                {k: _delta(rft.values[k], sft.values[k]) for k in rft.values},
                {k: _delta(rft.paper.get(k), sft.paper.get(k)) for k in rft.values},
                n=min(rft.n, sft.n),
            )
            for k, value in delta.values.items():
                a, b = rft.spread.get(k), sft.spread.get(k)
                if value is not None and a is not None and b is not None:
                    delta.spread[k] = (a * a + b * b) ** 0.5
                    delta.within_spread[k] = abs(value) <= a + b
            rows.append(delta)
    if any(r.n > 1 for r in rows if r.method != "delta"):
        notes.append(
            "± is the standard deviation over training seeds; a Δ marked ~ is inside the seeds' "
            "spread (|Δ| ≤ sd(RFT) + sd(SFT)): not an effect."
        )
    elif shot_counts:
        notes.append(
            "One training seed per row: the seed-to-seed spread is unknown, so small Δ may be noise "
            "(set experiment.seeds to repeat)."
        )
    if paper is not None and not any(v is not None for r in rows for v in r.paper.values()):
        notes.append(f"{paper.name} has no row for model {paper_model!r} at these settings.")
    elif paper is not None:
        cited = [r for r in rows if r.method != "delta"]
        missing = [f"{r.label} {r.shots}-shot" for r in cited if not r.paper_row and r.shots is not None]
        notes.append(
            f"Paper values: {paper.name}, rows "
            + ", ".join(dict.fromkeys(r.paper_row for r in cited if r.paper_row))
            + (f"; the paper has no row for {', '.join(missing)} (no paper value shown)" if missing else "")
            + "."
        )
    notes = _protocol_notes(task, [r for rs in kept.values() for r in rs], paper) + notes
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
            header.append(
                f"{column.label} (paper: {column.paper_label})"
                if column.paper_label
                else f"{column.label} (paper)"
            )
    return header


def table_cells(table: ReportTable) -> list[list[str]]:
    """The body as strings: the same cells for Markdown and HTML."""
    body = []
    for row in table.rows:
        signed = row.method == "delta"
        cells = [row.label, "–" if row.shots is None else str(row.shots)]
        for column in table.columns:
            text = format_value(row.values.get(column.key), signed)
            spread = row.spread.get(column.key)
            if spread is not None and row.values.get(column.key) is not None:
                text += f" ± {spread:.1f}"
            if row.within_spread.get(column.key):
                text += " ~"
            cells.append(text)
            if column.paper:
                cells.append(format_value(row.paper.get(column.key), signed))
        body.append(cells)
    return body


def markdown_table(table: ReportTable) -> str:
    header = table_header(table)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([" --- "] * 2 + [" ---: "] * (len(header) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_cells(table)]
    return "\n".join(lines)
