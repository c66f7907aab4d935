"""Named prompt templates: the paper's Table 1 prompts plus the category-existence and LISA prompts.

Each template is rendered with the coordinate convention of the target model filled in, so a
Qwen2.5-VL model is never told "between 0 and 1000" (see :mod:`vrft.models.coords`).

>>> from vrft.models.coords import BoxConvention
>>> text = render_prompt("detection", category="stop sign", convention=BoxConvention("relative_1000"))
>>> text.startswith("Detect all objects belonging to the category 'stop sign' in the image, and provide the "
...                 "bounding boxes (between 0 and 1000, integer)")
True
>>> render_prompt("classification", noun="aircraft")[:76]
'This is an image containing an aircraft. Please identify the model of the ai'
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Formatter

from vrft.models.coords import BoxConvention

FORMAT_SUFFIX = "Please strictly follow the format."
THINK_ANSWER = "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."

# The authors' prompts, character for character (line breaks included; "tags.The" has no space in
# their code). The paper's Table 1 prints them on one line and shortens the example list; the code
# is what produced the published numbers, so vrft follows the code. docs/evaluation.md lists where
# vrft deviates (the existence prompt is vrft's own; Qwen2.5-VL prompts name its pixel convention).
AUTHORS_DETECTION = (
    "Detect all objects belonging to the category '{category}' in the image, and provide the bounding boxes "
    "({coordinates}) and confidence (between 0 and 1, with two decimal places).\n"
    "If no object belonging to the category '{category}' in the image, return 'No Objects'.\n"
    f"{THINK_ANSWER}The output answer format should be as follows:\n"
    "<think> ... </think> <answer>[{{'Position': [x1, y1, x2, y2], 'Confidence': number}}, ...]</answer>\n"
    f"{FORMAT_SUFFIX}"
)
AUTHORS_CLASSIFICATION = (
    "This is an image containing {article} {noun}. Please identify the {field} of the {noun} based on the image.\n"
    f"{THINK_ANSWER}The output answer format should be as follows:\n"
    "<think> ... </think> <answer>species name</answer>\n"
    f"{FORMAT_SUFFIX}"
)
# LISA: the authors' grounding prompt ("grouding" is their spelling) with the R1 system prompt below.
AUTHORS_LISA = (
    "Output the bounding box in the image corresponding to the instruction: {instruction}.{coordinates_note} "
    "Output the thinking process in <think> </think> and your grouding box. "
    'Following "<think> thinking process </think>\n<answer>(x1,y1),(x2,y2)</answer>)" format.'
)
# The authors' LISA *training* prompts (grpo_lisa.py on gen_sft.py's data): their GRPO prompt has no "."
# after the instruction; their SFT prompt is the question alone, and its target a bare box.
AUTHORS_LISA_QUESTION = "Output the bounding box in the image corresponding to the instruction: {instruction}"
AUTHORS_LISA_TRAIN = (
    AUTHORS_LISA_QUESTION + "{coordinates_note} Output the thinking process in <think> </think> and your "
    'grouding box. Following "<think> thinking process </think>\n<answer>(x1,y1),(x2,y2)</answer>)" format.'
)
R1_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant "
    "first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning "
    "process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think><answer> answer here </answer>"
)
SYSTEM_PROMPTS = {"": "", "r1": R1_SYSTEM_PROMPT}


@dataclass(frozen=True)
class PromptTemplate:
    """A named template; ``{coordinates}`` is filled from the model's box convention."""

    name: str
    task: str
    text: str
    description: str

    @property
    def fields(self) -> set[str]:
        return {f for _, f, _, _ in Formatter().parse(self.text) if f}


TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        PromptTemplate(
            name="detection",
            task="detection",
            description="The authors' detection prompt (paper Table 1): boxes with confidences, or 'No Objects'.",
            text=AUTHORS_DETECTION,
        ),
        PromptTemplate(
            name="classification",
            task="classification",
            description="The authors' classification prompt (noun: plant, pet, aircraft, car, ...).",
            text=AUTHORS_CLASSIFICATION,
        ),
        PromptTemplate(
            name="existence",
            task="detection",
            description="vrft's own step-one prompt (the authors used a precomputed category list instead).",
            text=(
                "Is there any object belonging to the category '{category}' in the image?\n"
                f"{THINK_ANSWER}The output answer format should be as follows:\n"
                "<think> ... </think> <answer>yes</answer> or <think> ... </think> <answer>no</answer>\n"
                f"{FORMAT_SUFFIX}"
            ),
        ),
        PromptTemplate(
            name="grounding",
            task="grounding",
            description="The authors' LISA reasoning-grounding prompt: one box as (x1,y1),(x2,y2).",
            text=AUTHORS_LISA,
        ),
        PromptTemplate(
            name="grounding_train_authors",
            task="grounding",
            description="The authors' LISA GRPO training prompt (no '.' after the instruction).",
            text=AUTHORS_LISA_TRAIN,
        ),
        PromptTemplate(
            name="grounding_sft_authors",
            task="grounding",
            description="The authors' LISA SFT prompt: the question alone, no think instruction.",
            text=AUTHORS_LISA_QUESTION + "{coordinates_note}",
        ),
    )
}

# The field asked for per classification noun (the authors: species for flowers/pets, model for
# aircraft/cars; the answer placeholder is "species name" for all four); any other noun asks for its "category".
CLASSIFICATION_FIELDS = {
    "plant": "species",
    "flower": "species",
    "pet": "species",
    "aircraft": "model",
    "car": "model",
    "coloured shape": "colour",
}  # the default run's synthetic colour task


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def render_prompt(
    name: str,
    *,
    convention: BoxConvention | None = None,
    width: int | None = None,
    height: int | None = None,
    **values: str,
) -> str:
    """Render template ``name``; ``convention`` (+ image size for Qwen2.5-VL) fills ``{coordinates}``.

    >>> render_prompt("existence", category="cat")[:58]
    "Is there any object belonging to the category 'cat' in the"
    >>> render_prompt("detection", category="cat")
    Traceback (most recent call last):
    ...
    ValueError: prompt 'detection' needs a box convention (the model's coordinate system)
    """
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r} (known: {', '.join(sorted(TEMPLATES))})")
    template = TEMPLATES[name]
    fields = dict(values)
    if "coordinates_note" in template.fields:
        # Qwen2-VL grounds natively in 0-1000 and the authors' LISA prompt names no coordinates;
        # any other convention must be named, or the model answers in the wrong one.
        fields["coordinates_note"] = (
            ""
            if convention is None or convention.kind == "relative_1000"
            else f" Give the box in {convention.describe(width, height)}."
        )
    if "coordinates" in template.fields:
        if convention is None:
            raise ValueError(f"prompt {name!r} needs a box convention (the model's coordinate system)")
        fields["coordinates"] = convention.describe(width, height)
    if name == "classification":
        noun = fields.get("noun") or "object"
        fields["noun"] = noun
        fields.setdefault("article", _article(noun))
        fields.setdefault("field", CLASSIFICATION_FIELDS.get(noun, "category"))
    missing = sorted(template.fields - fields.keys())
    if missing:
        raise ValueError(f"prompt {name!r} needs values for: {', '.join(missing)}")
    return template.text.format(**fields)
