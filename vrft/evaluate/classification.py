"""Classification evaluation: accuracy overall and per class, under two named protocols.

* ``accuracy`` — the authors' protocol, the one behind the paper's Table 2 (so the comparable
  number): the answer is the first ``<answer>…</answer>`` on one line (none: wrong); answer and
  class name lose spaces and underscores and are lower-cased; the answer is right when either
  string contains the other. "Boeing 737-800" is right for "737-800" — and so is an empty answer
  or a list of every class, which is why the reward does not use this rule.
* ``accuracy_strict`` — the classification reward's rule (:func:`vrft.answers.labels_match`:
  normalised equality with the class name or an alias, no substring test).
"""

from __future__ import annotations

from collections import defaultdict

from vrft.answers import contains_either_way, first_line_answer, labels_match
from vrft.evaluate.common import TaskOutput, answer_of, eval_prompt, format_rate
from vrft.evaluate.config import EvaluateConfig
from vrft.evaluate.data import EvalSplit
from vrft.evaluate.inference import Generator, Request
from vrft.models.coords import BoxConvention
from vrft.tasks import prompt_text

PAPER_PROTOCOL = "authors: first <answer> on one line, spaces/underscores removed, two-way containment"
STRICT_PROTOCOL = "reward: normalised exact match with the class name or an alias"


def authors_answer(completion: str) -> str | None:
    """The answer as the authors' evaluation reads it: the first one-line ``<answer>`` block.

    >>> authors_answer("<think>a</think><answer>Boeing 737</answer>"), authors_answer("737-800")
    ('Boeing 737', None)
    """
    return first_line_answer(completion)


def authors_correct(answer: str | None, class_name: str) -> bool:
    """The authors' two-way containment after removing spaces and underscores, case folded.

    >>> authors_correct("Boeing 737-800", "737-800"), authors_correct("737", "Boeing_737")
    (True, True)
    >>> authors_correct("", "cat"), authors_correct("Airbus A320", "737-800"), authors_correct(None, "cat")
    (True, False, False)
    """
    return answer is not None and contains_either_way(answer, class_name)


def evaluate_classification(
    split: EvalSplit, generator: Generator, convention: BoxConvention, config: EvaluateConfig
) -> TaskOutput:
    requests = [
        Request(
            f"{row['image_id']}|{i}",
            i,
            eval_prompt(prompt_text(row, convention), config),
            row["width"] * row["height"],
        )
        for i, row in enumerate(split.rows)
    ]
    texts = generator.generate(requests, split.load_image, desc="classification")
    predictions, completions = [], []
    per_class: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for row, req, text in zip(split.rows, requests, texts, strict=True):
        answer = answer_of(text, config.require_answer_tags)
        strict = labels_match(answer, row["category"], row.get("aliases") or [])
        paper = authors_correct(authors_answer(text), row["category"])
        per_class[row["category"]].append((paper, strict))
        predictions.append(
            {
                "image_id": row["image_id"],
                "category": row["category"],
                "answer": answer,
                "correct": paper,
                "correct_strict": strict,
            }
        )
        completions.append(
            {
                "key": req.key,
                "step": "classification",
                "image_id": row["image_id"],
                "category": row["category"],
                "prompt": req.prompt,
                "completion": text,
            }
        )
    outcomes = [o for values in per_class.values() for o in values]
    metrics = {
        "accuracy": sum(p for p, _ in outcomes) / len(outcomes),
        "accuracy_strict": sum(s for _, s in outcomes) / len(outcomes),
        "format_rate": format_rate(texts),
    }
    per_category: dict[str, dict[str, float | None]] = {}
    for name in sorted(per_class):
        values = per_class[name]
        accuracy = sum(p for p, _ in values) / len(values)
        strict = sum(s for _, s in values) / len(values)
        per_category[name] = {"accuracy": accuracy, "accuracy_strict": strict, "count": float(len(values))}
        metrics[f"accuracy/{name}"] = accuracy
        metrics[f"accuracy_strict/{name}"] = strict
    return TaskOutput(
        metrics=metrics,
        per_category=per_category,
        predictions=predictions,
        completions=completions,
        details={
            "num_classes": len(per_class),
            "protocols": {"accuracy": PAPER_PROTOCOL, "accuracy_strict": STRICT_PROTOCOL},
        },
        num_requests=len(requests),
    )
