"""The paper's published numbers (Visual-RFT, arXiv 2503.01785, Tables 2-8), for the report's paper column.

Values are percentages as printed. Rows are keyed by ``(model, method, shots)`` with methods
``base`` / ``sft`` / ``rft``; ``shots`` is ``None`` where the setting has no shot count (base rows,
LISA's 239 images, open-vocabulary training). Note that the paper's own Δ rows are RFT − base;
the report's Δ row is RFT − SFT, and its paper Δ is computed the same way from these values.

Two cells of the extracted paper text are garbled and were recovered from the table's own Δ row
(Δ = RFT − base): Table 2's Qwen2-VL-2B baseline row and its 4-shot RFT FGVC cell (45.9 + 28.9 =
74.8). Both are consistent with the printed averages.

>>> TABLES["table3"].value("Qwen2-VL-2B", "rft", 8, "mAP")
47.4
>>> TABLES["table4"].value("Qwen2-VL-7B", "sft", 10, "kitchen table")
49.7
>>> TABLES["table6"].value("Qwen2-VL-2B", "rft", None, "gIoU test")
34.4
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from vrft.answers import normalize_label

QWEN2_VL_2B = "Qwen2-VL-2B"
QWEN2_VL_7B = "Qwen2-VL-7B"

RowKey = tuple[str, str, int | None]


@dataclass(frozen=True)
class PaperTable:
    """One published table. ``metric_columns`` maps vrft metric keys to column names; per-category
    metrics (``AP/<category>``) match a column by normalised name (``horse_buggy`` = ``horse buggy``)."""

    key: str
    title: str
    task: str
    columns: tuple[str, ...]
    rows: dict[RowKey, dict[str, float]]
    metric_columns: dict[str, str] = field(default_factory=dict)

    def row(self, model: str, method: str, shots: int | None) -> dict[str, float] | None:
        """The paper's row for a run: the same model, method and shot count (base: the base row), or
        ``None`` — a shot count the paper did not run has no paper value (Table 4's 10-shot row is
        not a 4-shot row).

        >>> TABLES["table4"].row("Qwen2-VL-2B", "rft", 4) is None, TABLES["table4"].row("Qwen2-VL-2B", "rft", 10)["mAP"]
        (True, 19.4)
        """
        return self.rows.get((model, method, None if method == "base" else shots))

    def row_label(self, model: str, method: str, shots: int | None) -> str:
        """The paper's row, as the report names it (``""`` when the paper has none).

        >>> TABLES["table2"].row_label("Qwen2-VL-2B", "rft", 4), TABLES["table2"].row_label("Qwen2-VL-2B", "rft", 3)
        ('Qwen2-VL-2B RFT 4-shot', '')
        """
        if self.row(model, method, shots) is None:
            return ""
        shot_text = f" {shots}-shot" if shots is not None and method != "base" else ""
        return f"{model} {method.upper() if method != 'base' else 'Base'}{shot_text}"

    @property
    def name(self) -> str:
        """``Table 2`` from ``table2``."""
        return "Table " + self.key.removeprefix("table")

    def value(self, model: str, method: str, shots: int | None, column: str) -> float | None:
        row = self.row(model, method, shots)
        return row.get(column) if row else None

    @property
    def primary_metric(self) -> str:
        return {"detection": "mAP", "classification": "accuracy", "grounding": "mIoU"}[self.task]

    def column_for(self, metric: str, paper_column: str = "") -> str | None:
        """The paper column that vrft metric key ``metric`` corresponds to, if any.

        ``paper_column`` names the column of the primary metric where the table has several
        settings side by side (Table 2's datasets, Table 6's val split).
        """
        if paper_column and metric == self.primary_metric:
            if paper_column not in self.columns:
                raise ValueError(
                    f"paper_column: {paper_column!r} is not a column of {self.key} "
                    f"({', '.join(self.columns)})"
                )
            return paper_column
        if metric in self.metric_columns:
            return self.metric_columns[metric]
        if metric.startswith("AP/"):
            category = normalize_label(metric.split("/", 1)[1])
            for column in self.columns:
                if normalize_label(column) == category:
                    return column
        return None


def _table(
    key: str,
    title: str,
    task: str,
    columns: Sequence[str],
    rows: Sequence[tuple[str, str, int | None, Sequence[float]]],
    metric_columns: dict[str, str],
) -> PaperTable:
    table_rows: dict[RowKey, dict[str, float]] = {}
    for model, method, shots, values in rows:
        if len(values) != len(columns):
            raise ValueError(
                f"{key} {model} {method} {shots}: {len(values)} values for {len(columns)} columns"
            )
        table_rows[(model, method, shots)] = dict(zip(columns, values, strict=True))
    return PaperTable(key, title, task, tuple(columns), table_rows, metric_columns)


_B, _7 = QWEN2_VL_2B, QWEN2_VL_7B

TABLES: dict[str, PaperTable] = {
    t.key: t
    for t in (
        _table(
            "table2",
            "Table 2: few-shot fine-grained classification (accuracy)",
            "classification",
            ("Average", "Flower102", "Pets37", "FGVC", "Cars196"),
            [
                (_B, "base", None, (56.0, 54.8, 66.4, 45.9, 56.8)),
                (_B, "sft", 1, (51.7, 56.6, 54.7, 65.3, 30.0)),
                (_B, "rft", 1, (80.3, 70.8, 84.1, 72.5, 93.8)),
                (_B, "sft", 2, (58.8, 60.3, 65.6, 68.9, 40.2)),
                (_B, "rft", 2, (83.5, 75.8, 87.5, 75.3, 95.4)),
                (_B, "sft", 4, (55.6, 58.5, 55.5, 67.9, 40.5)),
                (_B, "rft", 4, (81.9, 71.4, 86.1, 74.8, 95.3)),
                (_B, "sft", 8, (60.3, 59.6, 71.4, 69.2, 40.9)),
                (_B, "rft", 8, (85.1, 77.7, 90.2, 75.9, 96.5)),
                (_B, "sft", 16, (64.0, 66.8, 71.6, 76.1, 41.5)),
                (_B, "rft", 16, (85.3, 79.2, 87.1, 79.4, 95.3)),
            ],
            {"accuracy": "Average"},
        ),
        _table(
            "table3",
            "Table 3: few-shot detection, 8 COCO categories (mAP)",
            "detection",
            ("mAP", "bus", "train", "fire hydrant", "stop sign", "cat", "dog", "bed", "toilet"),
            [
                (_B, "base", None, (19.6, 19.0, 15.8, 25.8, 18.4, 29.9, 23.2, 14.6, 9.8)),
                (_B, "sft", 1, (19.5, 18.3, 17.4, 23.1, 18.2, 28.0, 23.4, 17.3, 10.4)),
                (_B, "rft", 1, (33.6, 23.4, 35.7, 39.1, 23.8, 54.3, 42.5, 19.5, 30.8)),
                (_B, "sft", 2, (21.0, 22.1, 15.8, 29.8, 19.0, 28.9, 26.5, 15.5, 10.2)),
                (_B, "rft", 2, (41.5, 28.8, 39.6, 38.2, 48.0, 63.8, 52.7, 25.9, 34.9)),
                (_B, "sft", 4, (25.2, 25.4, 23.6, 26.6, 21.5, 35.6, 30.6, 18.4, 19.9)),
                (_B, "rft", 4, (40.6, 30.0, 40.6, 45.7, 35.0, 60.9, 44.9, 24.6, 43.1)),
                (_B, "sft", 8, (30.2, 25.8, 35.1, 29.4, 21.9, 44.5, 39.0, 22.6, 23.5)),
                (_B, "rft", 8, (47.4, 36.2, 47.9, 50.4, 47.7, 65.2, 57.0, 30.4, 44.0)),
                (_B, "sft", 16, (31.3, 24.0, 35.9, 32.0, 23.6, 39.8, 40.6, 27.5, 26.8)),
                (_B, "rft", 16, (46.8, 36.2, 44.4, 51.4, 48.5, 66.6, 56.2, 27.6, 43.4)),
                (_7, "base", None, (43.0, 35.0, 43.3, 37.1, 36.7, 57.3, 50.3, 37.4, 47.1)),
                (_7, "sft", 4, (44.1, 41.4, 51.7, 35.6, 30.8, 60.5, 52.7, 38.5, 41.5)),
                (_7, "rft", 4, (54.3, 44.3, 59.8, 52.0, 46.0, 72.7, 62.8, 41.9, 55.0)),
            ],
            {"mAP": "mAP"},
        ),
        _table(
            "table4",
            "Table 4: 10-shot detection, 6 LVIS rare categories (mAP)",
            "detection",
            ("mAP", "horse buggy", "die", "kitchen table", "omelet", "papaya", "stepladder"),
            [
                (_B, "base", None, (4.0, 2.9, 1.2, 13.4, 4.7, 1.5, 0.0)),
                (_B, "sft", 10, (10.0, 7.0, 7.6, 34.1, 4.7, 6.3, 0.0)),
                (_B, "rft", 10, (19.4, 9.1, 19.6, 42.2, 20.4, 14.5, 10.9)),
                (_7, "base", None, (15.4, 19.7, 21.9, 14.5, 18.1, 18.5, 0.0)),
                (_7, "sft", 10, (27.6, 26.9, 21.9, 49.7, 29.2, 25.2, 12.7)),
                (_7, "rft", 10, (33.8, 26.2, 27.8, 70.6, 23.5, 21.2, 29.3)),
            ],
            {"mAP": "mAP"},
        ),
        _table(
            "table5",
            "Table 5: few-shot detection, MG (monster girls), 5 categories (mAP)",
            "detection",
            ("mAP", "bird", "feline-or-canid", "serpent", "slime", "wyvern"),
            [
                (_B, "base", None, (20.6, 12.9, 19.8, 25.5, 18.4, 26.4)),
                (_B, "sft", 4, (26.8, 19.5, 22.4, 26.8, 33.5, 31.8)),
                (_B, "rft", 4, (61.8, 63.9, 53.2, 70.2, 64.5, 57.5)),
                (_B, "sft", 16, (51.3, 42.7, 44.4, 56.4, 61.1, 52.0)),
                (_B, "rft", 16, (63.4, 59.9, 50.8, 76.3, 71.7, 58.1)),
            ],
            {"mAP": "mAP"},
        ),
        _table(
            "table6",
            "Table 6: reasoning grounding on LISA (mIoU, gIoU)",
            "grounding",
            ("mIoU test", "mIoU val", "gIoU test"),
            [
                (_B, "base", None, (26.9, 30.1, 25.3)),
                (_B, "sft", None, (28.3, 29.7, 25.3)),
                (_B, "rft", None, (37.6, 34.4, 34.4)),
                (_7, "base", None, (40.4, 45.2, 38.0)),
                (_7, "sft", None, (39.1, 43.9, 37.2)),
                (_7, "rft", None, (43.9, 47.1, 43.7)),
            ],
            {"mIoU": "mIoU test", "gIoU": "gIoU test"},
        ),
        _table(
            "table7",
            "Table 7: open-vocabulary detection on COCO (65 base -> 15 novel, mAP)",
            "detection",
            ("mAP novel", "mAP base", "mAP all"),
            [
                (_B, "base", None, (9.8, 6.0, 6.7)),
                (_B, "sft", None, (13.6, 7.8, 8.9)),
                (_B, "rft", None, (31.3, 20.6, 22.6)),
                (_7, "base", None, (26.3, 17.5, 19.2)),
                (_7, "sft", None, (25.7, 17.5, 19.0)),
                (_7, "rft", None, (35.8, 25.4, 27.4)),
            ],
            {"mAP": "mAP all", "mAP/novel": "mAP novel", "mAP/base": "mAP base"},
        ),
        _table(
            "table8",
            "Table 8: open-vocabulary detection on 13 LVIS rare categories (mAP)",
            "detection",
            (
                "mAP",
                "casserole",
                "die",
                "egg roll",
                "futon",
                "garbage",
                "handsaw",
                "hippopotamus",
                "kitchen table",
                "mallet",
                "omelet",
                "shot glass",
                "stepladder",
                "sugar bowl",
            ),
            [
                (_B, "base", None, (2.7, 1.6, 1.2, 0.0, 2.4, 0.0, 10.0, 0.0, 13.4, 0.2, 4.7, 2.1, 0.0, 0.0)),
                (
                    _B,
                    "sft",
                    None,
                    (7.6, 3.9, 21.2, 0.0, 0.0, 10.7, 9.0, 11.6, 19.4, 0.0, 11.7, 6.3, 0.0, 5.2),
                ),
                (
                    _B,
                    "rft",
                    None,
                    (20.7, 24.5, 23.4, 2.0, 16.0, 27.7, 20.2, 14.4, 45.8, 11.1, 22.7, 6.0, 6.0, 40.2),
                ),
                (
                    _7,
                    "base",
                    None,
                    (15.7, 3.7, 21.9, 0.7, 24.5, 15.3, 19.2, 13.1, 14.5, 11.9, 18.1, 27.9, 0.0, 33.8),
                ),
                (
                    _7,
                    "sft",
                    None,
                    (24.0, 20.8, 25.4, 0.6, 41.8, 12.2, 19.2, 18.8, 42.5, 11.9, 15.3, 27.9, 28.1, 47.8),
                ),
                (
                    _7,
                    "rft",
                    None,
                    (30.4, 19.7, 27.8, 4.3, 41.8, 17.4, 35.1, 20.0, 70.6, 16.7, 23.5, 29.8, 29.3, 59.8),
                ),
            ],
            {"mAP": "mAP"},
        ),
    )
}


def paper_table(key: str) -> PaperTable:
    """The table named ``key`` (``table2`` … ``table8``); also accepts ``Table 3`` / ``3``."""
    normalized = "table" + "".join(ch for ch in key if ch.isdigit())
    if normalized not in TABLES:
        raise ValueError(f"paper_table: {key!r} is not one of {', '.join(TABLES)}")
    return TABLES[normalized]
