"""Pieces the three task evaluators share."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vrft.answers import extract_answer, is_well_formed


def answer_of(completion: str, require_tags: bool) -> str | None:
    """The answer a completion gives: its last ``<answer>`` block, else (unless ``require_tags``)
    the whole completion.

    The lenient default matters for base checkpoints, which often answer without the tags: their
    answer is still scored, and the missing format shows up separately in ``format_rate``.

    >>> answer_of("<think>x</think><answer>yes</answer>", True), answer_of("yes", False), answer_of("yes", True)
    ('yes', 'yes', None)
    """
    answer = extract_answer(completion)
    if answer is None and not require_tags:
        return completion.strip()
    return answer


#: The literal text the authors' COCO, LVIS and classification evaluation put before the question.
IMAGE_PLACEHOLDER = "<image>\n"


def eval_prompt(text: str, config: Any) -> str:
    """A detection/classification prompt as evaluated: after ``<image>\\n`` with ``image_placeholder``.

    >>> from vrft.evaluate.config import EvaluateConfig
    >>> eval_prompt("Detect", EvaluateConfig(image_placeholder=True))
    '<image>\\nDetect'
    """
    return IMAGE_PLACEHOLDER + text if config.image_placeholder else text


def format_rate(completions: list[str]) -> float:
    """Share of completions that follow the ``<think>…</think><answer>…</answer>`` contract."""
    return sum(is_well_formed(c) for c in completions) / len(completions) if completions else 0.0


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence pycocotools' prints (``creating index...``, the summary table) on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@dataclass
class TaskOutput:
    """What one task evaluator hands back to :func:`vrft.evaluate.evaluate_checkpoint`.

    ``metrics`` are flat, MLflow-ready fractions in [0, 1] (``mAP``, ``AP/bus``, ``accuracy``, …);
    ``per_category`` keeps the same per-category numbers keyed by the original name, with ``None``
    where a category has no ground truth; ``files`` are extra JSON outputs (name -> data).
    """

    metrics: dict[str, float]
    per_category: dict[str, dict[str, float | None]]
    predictions: list[dict[str, Any]]
    completions: list[dict[str, Any]]
    details: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    num_requests: int = 0
