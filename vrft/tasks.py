"""From a dataset row (original pixels) to what a model sees and what a reward checks.

The dataset stage stores ground truth in original-image pixels (:mod:`vrft.data.schema`). Training
and evaluation render each row for one model through this module only, so the prompt, the reward's
solution columns and the SFT target are always in the same coordinate convention:

* :func:`prompt_text` — the task's prompt (paper Table 1 / LISA), convention filled in;
* :func:`solution_columns` — the columns the task's reward reads (``solution_boxes``, ``class_name``
  + ``aliases``, ``solution_box``), in the model's convention;
* :func:`target_answer` — the SFT baseline's target completion, in exactly the format the prompt asks;
* :func:`reward_name` — the reward registered for the task.

>>> from vrft.models.coords import BoxConvention
>>> row = {"task": "detection", "category": "cat", "gt_boxes": [[64.0, 48.0, 128.0, 96.0]],
...        "width": 640, "height": 480, "aliases": [], "noun": "", "instruction": ""}
>>> solution_columns(row, BoxConvention("relative_1000"))
{'solution_boxes': [[100, 100, 200, 200]]}
>>> target_answer(row, BoxConvention("relative_1000"))
"<think>The image shows cat at the marked places.</think> <answer>[{'Position': [100, 100, 200, 200], 'Confidence': 1.0}]</answer>"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vrft.models.coords import BoxConvention
from vrft.prompts import render_prompt

TASK_REWARDS = {"detection": "detection", "classification": "classification", "grounding": "grounding_iou"}
TASK_PROMPTS = {"detection": "detection", "classification": "classification", "grounding": "grounding"}
# The SFT target's think block: a short fixed sentence. The few-shot data has no reasoning
# annotations, and an empty block would teach the model to skip thinking; the paper's SFT baseline
# trains on the answer.
SFT_THINK = {
    "detection": "The image shows {category} at the marked places.",
    "no_objects": "There is no {category} in the image.",
    "classification": "The distinguishing features identify this {noun}.",
    "grounding": "The instruction refers to the marked region.",
}


def _task(row: Mapping[str, Any]) -> str:
    task = row.get("task")
    if task not in TASK_PROMPTS:
        raise ValueError(
            f"row {row.get('image_id', '?')}: task {task!r} is not one of {sorted(TASK_PROMPTS)}"
        )
    return task


def reward_name(task: str) -> str:
    """The registered reward for a task (grounding trains on IoU; ``grounding_giou`` is an option)."""
    if task not in TASK_REWARDS:
        raise ValueError(f"task {task!r} is not one of {sorted(TASK_REWARDS)}")
    return TASK_REWARDS[task]


def prompt_text(row: Mapping[str, Any], convention: BoxConvention, *, prompt: str | None = None) -> str:
    """The user prompt for ``row``; ``prompt`` picks another named template (e.g. ``existence``)."""
    task = _task(row)
    name = prompt or TASK_PROMPTS[task]
    return render_prompt(
        name,
        convention=convention,
        width=int(row["width"]),
        height=int(row["height"]),
        category=row.get("category", ""),
        noun=row.get("noun", "") or "object",
        instruction=row.get("instruction", ""),
    )


def training_prompt_text(row: Mapping[str, Any], convention: BoxConvention, *, style: str, stage: str) -> str:
    """The prompt a training stage (``grpo`` or ``sft``) shows for ``row``: :func:`prompt_text`, except
    under ``style="authors"`` for grounding, where the authors trained GRPO on a prompt without the "."
    after the instruction and SFT on the question alone (no think instruction).

    >>> from vrft.models.coords import BoxConvention
    >>> row = {"task": "grounding", "instruction": "the cup", "width": 8, "height": 8}
    >>> training_prompt_text(row, BoxConvention("relative_1000"), style="authors", stage="sft")
    'Output the bounding box in the image corresponding to the instruction: the cup'
    >>> training_prompt_text(row, BoxConvention("relative_1000"), style="authors", stage="grpo")[71:111]
    'the cup Output the thinking process in <'
    """
    if style == "authors" and _task(row) == "grounding":
        name = "grounding_sft_authors" if stage == "sft" else "grounding_train_authors"
        return prompt_text(row, convention, prompt=name)
    return prompt_text(row, convention)


def conversation(text: str) -> list[dict[str, Any]]:
    """trl's conversational prompt: one user turn with string content. trl inserts the image
    (from the ``image`` column) itself, so no image placeholder goes here."""
    return [{"role": "user", "content": text}]


def solution_columns(row: Mapping[str, Any], convention: BoxConvention) -> dict[str, Any]:
    """The reward's columns for ``row``, boxes in the model's convention."""
    task = _task(row)
    width, height = int(row["width"]), int(row["height"])
    if task == "detection":
        return {"solution_boxes": [convention.to_model(b, width, height) for b in row["gt_boxes"]]}
    if task == "grounding":
        if len(row["gt_boxes"]) != 1:
            raise ValueError(f"row {row.get('image_id', '?')}: grounding needs exactly one gt box")
        return {"solution_box": convention.to_model(row["gt_boxes"][0], width, height)}
    return {"class_name": row["category"], "aliases": list(row.get("aliases") or [])}


def answer_text(row: Mapping[str, Any], convention: BoxConvention) -> str:
    """The correct answer block's content, as the prompt asks for it."""
    task = _task(row)
    columns = solution_columns(row, convention)
    if task == "detection":
        boxes = columns["solution_boxes"]
        if not boxes:
            return "No Objects"
        return repr([{"Position": box, "Confidence": 1.0} for box in boxes])
    if task == "grounding":
        x1, y1, x2, y2 = columns["solution_box"]
        return f"({x1},{y1}),({x2},{y2})"  # the authors' LISA answer format, as the prompt asks
    return str(row["category"])


def target_answer(row: Mapping[str, Any], convention: BoxConvention, style: str = "vrft") -> str:
    """The SFT target completion: a short think block and the correct answer, well formed; under
    ``style="authors"`` a grounding target is the bare box, as the authors' LISA SFT data (gen_sft.py)."""
    task = _task(row)
    if style == "authors" and task == "grounding":
        return answer_text(row, convention)
    key = "no_objects" if task == "detection" and not row["gt_boxes"] else task
    think = SFT_THINK[key].format(category=row.get("category", ""), noun=row.get("noun", "") or "object")
    return f"<think>{think}</think> <answer>{answer_text(row, convention)}</answer>"
