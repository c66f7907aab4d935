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

from vrft.report.comparison import Provenance, provenance_lines
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


def _series_name(result: RegressionResult) -> str:
    s = result.series
    return f"{s['config']} / {s['model']} / {s['method']}" + (f" / {s['shots']}-shot" if s["shots"] else "")


def _compared_with(result: RegressionResult, this_run: str) -> str:
    """``vs run R1 (evaluation reused from run R1)``: which earlier pipeline run the row is compared
    with, and where this row's evaluation ran when not in this run."""
    text = f"vs run {result.previous_pipeline_run or result.previous_run_id}"
    if this_run and result.evaluated_in and result.evaluated_in != this_run:
        text += f" (evaluation reused from run {result.evaluated_in})"
    return text


def _regression_lines(regressions: Sequence[RegressionResult], this_run: str = "") -> list[str]:
    """One line per compared row: the previous run it is compared with and the deltas (points)."""
    lines = []
    for result in regressions:
        name = _series_name(result)
        if result.status == "regressed":
            drops = ", ".join(
                f"{r.metric} {100 * r.previous:.1f} → {100 * r.current:.1f} (−{r.drop_points:.1f})"
                for r in result.regressions
            )
            lines.append(f"REGRESSED {name} {_compared_with(result, this_run)}: {drops}")
        elif result.status == "ok":
            head = result.headline if result.headline in result.deltas else ""
            shown = (
                f"{head} {100 * result.previous[head]:.1f} → {100 * (result.previous[head] + result.deltas[head]):.1f}"
                f" (Δ {100 * result.deltas[head]:+.1f}); "
                if head
                else ""
            )
            largest = max((abs(d) for d in result.deltas.values()), default=0.0)
            lines.append(
                f"ok {name} {_compared_with(result, this_run)}: {shown}{len(result.compared)} metrics "
                f"compared, largest change {100 * largest:.1f} points"
            )
        else:
            lines.append(f"no previous run {name}")
    return lines


def render_markdown(
    title: str,
    sections: Sequence[Section],
    regressions: Sequence[RegressionResult],
    threshold_points: float,
    base_dir: Path,
    *,
    this_run: str = "",
    provenance: Sequence[Provenance] = (),
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
    out += [f"- {line}" for line in _regression_lines(regressions, this_run)] or ["- no runs checked"]
    if provenance:
        out += ["", "## Where the results come from", ""]
        out += [f"- {line}" for line in provenance_lines(provenance, this_run)]
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
    title: str,
    sections: Sequence[Section],
    regressions: Sequence[RegressionResult],
    threshold_points: float,
    *,
    this_run: str = "",
    provenance: Sequence[Provenance] = (),
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
    for line in _regression_lines(regressions, this_run) or ["no runs checked"]:
        css = ' class="regressed"' if line.startswith("REGRESSED") else ""
        parts.append(f"<li{css}>{html.escape(line)}</li>")
    parts.append("</ul>")
    if provenance:
        parts.append("<h2>Where the results come from</h2><ul>")
        parts += [f"<li>{html.escape(line)}</li>" for line in provenance_lines(provenance, this_run)]
        parts.append("</ul>")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
