"""Summarise a bench/gpu/check.sh run from its output folder: each stage's exit status, the gpu tests'
outcome, and the benchmark numbers as the rows of docs/training.md's and docs/evaluation.md's tables
(with ``--memory``: the preflight's predicted vs measured peak memory rows).

    python bench/gpu/summary.py OUT
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any


def _load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["results"] if path.is_file() else []


def fmt(value: Any, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def grpo_row(r: dict[str, Any]) -> str:
    cells = [
        r["case"],
        r["device"],
        r["dtype"],
        fmt(r["parameters"], "{:,}"),
        fmt(r["step_s"], "{:.2f}"),
        fmt(r["rollout_s"], "{:.2f}"),
        fmt(r["score_s"], "{:.2f}"),
        fmt(r["train_s"], "{:.2f}"),
        fmt(r["rollout_tokens_per_s"], "{:,.0f}"),
        fmt(r["trained_tokens_per_step"], "{:,.0f}"),
        fmt(r["train_tokens_per_s"], "{:,.0f}"),
        fmt(r["mfu_train"], "{:.1%}"),
        fmt(r["peak_memory_gib"], "{:.1f} GiB"),
    ]
    return "| " + " | ".join(cells) + " |"


def eval_row(r: dict[str, Any]) -> str:
    case = (
        f"{r['case']} on {r['device']} ({r['dtype']}, {r['params_M']:,} M params), {r['images']} images, "
        f"bs {r['batch_size']}, {r['max_new_tokens']} new tokens"
    )
    cells = [
        case,
        f"{r['batch1_loop_images_per_s']:.2f} img/s",
        f"{r['vrft_batched_images_per_s']:.2f} img/s",
        f"{r['speedup']:.1f}×",
        r["identical_completions"],
    ]
    return "| " + " | ".join(cells) + " |"


def memory_row(r: dict[str, Any]) -> str:
    def pair(predicted: Any, measured: Any) -> str:
        return f"{fmt(predicted, '{:.2f}')} / {fmt(measured, '{:.2f}')}"

    cells = [
        f"{r['shape']} on {r['device']}, G {r['num_generations']}, checkpointing "
        f"{'on' if r['gradient_checkpointing'] else 'off'}, {r['prompt_tokens']:,} + {r['max_completion_length']} tokens",
        f"{r['predicted_gib']:.2f} GiB ({r['predicted_phase']})",
        fmt(r["measured_gib"], "{:.2f} GiB"),
        pair(r["predicted_rollout_gib"], r["measured_rollout_gib"]),
        pair(r["predicted_train_gib"], r["measured_train_gib"]),
        fmt(r["ratio"], "{:.2f}"),
        "n/a" if r["within_20_percent"] is None else ("yes" if r["within_20_percent"] else "no"),
    ]
    return "| " + " | ".join(cells) + " |"


def tests_line(path: Path) -> str:
    if not path.is_file():
        return "gpu tests: no report"
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{c.get('name')}"
        for c in suite.iter("testcase")
        if c.find("failure") is not None or c.find("error") is not None
    ]
    line = (
        f"gpu tests: {counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']} passed, "
        f"{counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
    )
    return line + (f" ({', '.join(failed)})" if failed else "")


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    lines = ["## bench/gpu/check.sh", "", "| stage | exit | seconds |", "| --- | --- | --- |"]
    stages = out / "stages.tsv"
    rows = stages.read_text().splitlines() if stages.is_file() else []
    lines += ["| " + " | ".join(row.split("\t")) + " |" for row in rows]
    ran = {row.split("\t")[0] for row in rows}
    memory_only = ran and "memory-2b" in ran and "grpo-2b" not in ran  # check.sh --memory
    if not memory_only:
        lines += ["", tests_line(out / "gpu-tests.xml"), "", "GRPO (docs/training.md):", ""]
        lines += [grpo_row(r) for r in _load(out / "grpo.json")] or ["no GRPO result"]
        lines += ["", "Evaluation (docs/evaluation.md):", ""]
        lines += [eval_row(r) for r in _load(out / "eval.json")] or ["no evaluation result"]
    if "memory-2b" in ran or (out / "memory.json").is_file():
        lines += ["", "Preflight memory, predicted vs measured (docs/training.md):", ""]
        memory = [memory_row(r) for r in _load(out / "memory.json")]
        header = [
            "| setting | predicted peak | measured peak | rollout predicted / measured GiB "
            "| training predicted / measured GiB | ratio | within 20 % |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += header + memory if memory else ["no memory result"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
