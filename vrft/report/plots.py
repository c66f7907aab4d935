"""The report's figures, drawn with matplotlib's object API (Agg canvas; no pyplot, no display).

* :func:`plot_metric_vs_shots` — the primary metric against shots for SFT and RFT, the base model as
  a horizontal line, and the paper's published curves dashed where the table maps to one.
* :func:`plot_reward_curves` — each reward part over training steps, one panel per part, one line
  per training run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vrft.report.tables import ReportTable

COLOURS = {"sft": "#1f77b4", "rft": "#d62728", "base": "#555555"}
_REWARD_KEY = re.compile(r"(^|/)rewards/.+/mean$|(^|/)reward$")

History = list[tuple[int, float]]


def is_reward_metric(key: str) -> bool:
    """Reward series as trl logs them: ``rewards/<part>/mean`` and the total ``reward``.

    >>> [k for k in ("rewards/detection_iou/mean", "rewards/detection_iou/std", "reward", "kl") if is_reward_metric(k)]
    ['rewards/detection_iou/mean', 'reward']
    """
    return bool(_REWARD_KEY.search(key))


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110, format="png")
    return path


def plot_metric_vs_shots(table: ReportTable, path: Path) -> Path | None:
    """Primary metric vs shots; ``None`` when the table has no shot counts to put on an axis."""
    key = table.primary
    label = table.columns[0].label
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.add_subplot()
    plotted = False
    all_shots: set[int] = set()
    highest = 0.0
    for method in ("sft", "rft"):
        rows = [r for r in table.rows if r.method == method and r.shots is not None]
        ours = [(r.shots, r.values.get(key)) for r in rows if r.values.get(key) is not None]
        if ours:
            xs, ys = zip(*ours, strict=True)
            axes.plot(xs, ys, "o-", color=COLOURS[method], label=f"{method.upper()} (vrft)")
            all_shots.update(xs)
            highest = max(highest, *ys)
            plotted = True
        published = [(r.shots, r.paper.get(key)) for r in rows if r.paper.get(key) is not None]
        if published:
            xs, ys = zip(*published, strict=True)
            axes.plot(
                xs,
                ys,
                "o--",
                color=COLOURS[method],
                markerfacecolor="white",
                alpha=0.8,
                label=f"{method.upper()} (paper)",
            )
            highest = max(highest, *ys)
    if not plotted:
        return None
    base = table.row("base", None)
    if base is not None and base.values.get(key) is not None:
        axes.axhline(base.values[key], color=COLOURS["base"], linestyle=":", label="base (vrft)")
        highest = max(highest, base.values[key])
    if base is not None and base.paper.get(key) is not None:
        axes.axhline(base.paper[key], color=COLOURS["base"], linestyle="--", alpha=0.6, label="base (paper)")
        highest = max(highest, base.paper[key])
    axes.set_ylim(
        0, highest * 1.15 if highest > 0 else 1.0
    )  # scores are >= 0; an all-zero run stays readable
    shots = sorted(all_shots)
    if len(shots) > 1 and shots[-1] / shots[0] >= 4:
        axes.set_xscale("log", base=2)
    axes.set_xticks(shots, [str(s) for s in shots])
    axes.set_xlabel("shots (training images per category)")
    axes.set_ylabel(f"{label} (%)")
    axes.set_title(f"{table.title}: {label} vs shots", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def plot_reward_curves(histories: dict[str, dict[str, History]], path: Path, title: str) -> Path | None:
    """``histories``: run label -> reward key -> [(step, value)]; ``None`` when there is nothing to draw."""
    keys = sorted(
        {k for series in histories.values() for k, points in series.items() if points},
        key=lambda k: (k == "reward" or k.endswith("/reward"), k),
    )
    if not keys:
        return None
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows))
    for n, key in enumerate(keys):
        axes = figure.add_subplot(rows, columns, n + 1)
        for run_label, series in sorted(histories.items()):
            points = sorted(series.get(key, []))
            if points:
                steps, values = zip(*points, strict=True)
                axes.plot(steps, values, label=run_label, linewidth=1.2)
        axes.set_title(_short(key), fontsize=9)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if n == 0:
            axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def _short(key: str) -> str:
    """``rewards/detection_iou/mean`` -> ``detection_iou``."""
    parts = [p for p in key.split("/") if p not in ("rewards", "mean", "train")]
    return "/".join(parts) or key


def slug(parts: Sequence[str]) -> str:
    """A file-name-safe name from free text (config and model names).

    >>> slug(["coco_8cat", "Qwen/Qwen2-VL-2B-Instruct"])
    'coco_8cat-Qwen_Qwen2-VL-2B-Instruct'
    """
    return "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p).strip("_") for p in parts if p)
