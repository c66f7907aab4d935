"""The report as Markdown (PNG files beside it) and as one self-contained HTML page (PNGs inlined).

The HTML page has no external reference at all — styles inline, images as base64 data URIs — so it
can be mailed, attached to an MLflow run or opened from object storage as a single file.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vrft.report.regression import RegressionResult
from vrft.report.tables import ReportTable, markdown_table, table_cells, table_header

STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
th { background: #f3f3f3; }
tr.delta td { font-weight: bold; background: #fafafa; }
th.paper, td.paper { color: #777; font-style: italic; }
.regressed { color: #b00020; font-weight: bold; }
.note { color: #555; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
"""


@dataclass
class Section:
    """One table with its figures (caption, PNG path)."""

    table: ReportTable
    figures: list[tuple[str, Path]] = field(default_factory=list)


def _regression_lines(regressions: Sequence[RegressionResult]) -> list[str]:
    lines = []
    for result in regressions:
        s = result.series
        name = f"{s['config']} / {s['model']} / {s['method']}" + (
            f" / {s['shots']}-shot" if s["shots"] else ""
        )
        if result.status == "regressed":
            drops = ", ".join(
                f"{r.metric} {100 * r.previous:.1f} → {100 * r.current:.1f} (−{r.drop_points:.1f})"
                for r in result.regressions
            )
            lines.append(f"REGRESSED {name}: {drops}")
        elif result.status == "ok":
            lines.append(f"ok {name}: {len(result.compared)} metrics compared")
        else:
            lines.append(f"no previous run {name}")
    return lines


def render_markdown(
    title: str,
    sections: Sequence[Section],
    regressions: Sequence[RegressionResult],
    threshold_points: float,
    base_dir: Path,
) -> str:
    """Markdown with tables and image links relative to ``base_dir`` (the report directory)."""
    out = [
        f"# {title}",
        "",
        "Values in %. Δ = RFT − SFT (the paper's own Δ rows are RFT − base); "
        "`(paper: Table N, column)` columns are the published numbers of that table and column, row by row the paper's row of the same method and shot count.",
        "",
    ]
    for section in sections:
        table = section.table
        out += [f"## {table.title}", ""]
        if table.paper is not None:
            out += [f"Compared with {table.paper.title}, {table.paper_model}.", ""]
        out += [markdown_table(table), ""]
        out += [f"_{note}_" for note in table.notes] + ([""] if table.notes else [])
        for caption, path in section.figures:
            out += [f"![{caption}]({path.relative_to(base_dir).as_posix()})", ""]
    out += [f"## Regression check (threshold {threshold_points:g} points)", ""]
    out += [f"- {line}" for line in _regression_lines(regressions)] or ["- no runs checked"]
    return "\n".join(out) + "\n"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_table(table: ReportTable) -> str:
    paper_positions = set()  # header/cell indices of the "(paper)" columns
    position = 2  # after Method and Shots
    for column in table.columns:
        if column.paper:
            paper_positions.add(position + 1)
        position += 2 if column.paper else 1
    head = "".join(
        f"<th{' class=paper' if n in paper_positions else ''}>{html.escape(h)}</th>"
        for n, h in enumerate(table_header(table))
    )
    body = []
    for row, cells in zip(table.rows, table_cells(table), strict=True):
        tds = "".join(
            f"<td{' class=paper' if n in paper_positions else ''}>{html.escape(c)}</td>"
            for n, c in enumerate(cells)
        )
        body.append(f'<tr class="{row.method}">{tds}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(
    title: str, sections: Sequence[Section], regressions: Sequence[RegressionResult], threshold_points: float
) -> str:
    """One self-contained page: every figure inlined as a base64 PNG."""
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        '<p class="note">Values in %. Δ = RFT − SFT (the paper\'s own Δ rows are RFT − base); '
        "grey italic columns are the published numbers.</p>",
    ]
    for section in sections:
        table = section.table
        parts.append(f"<h2>{html.escape(table.title)}</h2>")
        if table.paper is not None:
            parts.append(
                f'<p class="note">Compared with {html.escape(table.paper.title)}, '
                f"{html.escape(table.paper_model)}.</p>"
            )
        parts.append(_html_table(table))
        parts += [f'<p class="note">{html.escape(note)}</p>' for note in table.notes]
        for caption, path in section.figures:
            parts.append(
                f'<figure><img alt="{html.escape(caption)}" src="{_data_uri(path)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts.append(f"<h2>Regression check (threshold {threshold_points:g} points)</h2><ul>")
    for line in _regression_lines(regressions) or ["no runs checked"]:
        css = ' class="regressed"' if line.startswith("REGRESSED") else ""
        parts.append(f"<li{css}>{html.escape(line)}</li>")
    parts.append("</ul>")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
