"""Classification evaluation: accuracy overall and per class.

An answer is correct under exactly the rule the classification reward uses
(:func:`vrft.answers.labels_match`: normalised equality with the class name or an alias, no
substring test), so an empty answer or a list of classes is wrong here too.
"""

from __future__ import annotations

from collections import defaultdict

from vrft.answers import labels_match
from vrft.evaluate.common import TaskOutput, answer_of, format_rate
from vrft.evaluate.config import EvaluateConfig
from vrft.evaluate.data import EvalSplit
from vrft.evaluate.inference import Generator, Request
from vrft.models.coords import BoxConvention
from vrft.tasks import prompt_text


def evaluate_classification(split: EvalSplit, generator: Generator, convention: BoxConvention,
                            config: EvaluateConfig) -> TaskOutput:
    requests = [Request(f"{row['image_id']}|{i}", i, prompt_text(row, convention), row["width"] * row["height"])
                for i, row in enumerate(split.rows)]
    texts = generator.generate(requests, split.load_image, desc="classification")
    predictions, completions = [], []
    per_class: dict[str, list[bool]] = defaultdict(list)
    for row, req, text in zip(split.rows, requests, texts, strict=True):
        answer = answer_of(text, config.require_answer_tags)
        correct = labels_match(answer, row["category"], row.get("aliases") or [])
        per_class[row["category"]].append(correct)
        predictions.append({"image_id": row["image_id"], "category": row["category"], "answer": answer,
                            "correct": correct})
        completions.append({"key": req.key, "step": "classification", "image_id": row["image_id"],
                            "category": row["category"], "prompt": req.prompt, "completion": text})
    outcomes = [c for values in per_class.values() for c in values]
    metrics = {"accuracy": sum(outcomes) / len(outcomes), "format_rate": format_rate(texts)}
    per_category: dict[str, dict[str, float | None]] = {}
    for name in sorted(per_class):
        accuracy = sum(per_class[name]) / len(per_class[name])
        per_category[name] = {"accuracy": accuracy, "count": float(len(per_class[name]))}
        metrics[f"accuracy/{name}"] = accuracy
    return TaskOutput(metrics=metrics, per_category=per_category, predictions=predictions, completions=completions,
                      details={"num_classes": len(per_class)}, num_requests=len(requests))
