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
            description="Visual-RFT Table 1 detection prompt: boxes with confidences, or 'No Objects'.",
            text=(
                "Detect all objects belonging to the category '{category}' in the image, and provide the "
                "bounding boxes ({coordinates}) and confidence (between 0 and 1, with two decimal places). "
                "If no object belonging to the category '{category}' in the image, return 'No Objects'. "
                f"{THINK_ANSWER} The output answer format should be as follows: <think> ... </think> "
                "<answer>[{{'Position': [x1, y1, x2, y2], 'Confidence': number}}, "
                "{{'Position': [x1, y1, x2, y2], 'Confidence': number}}]</answer> "
                f"{FORMAT_SUFFIX}"
            ),
        ),
        PromptTemplate(
            name="classification",
            task="classification",
            description="Visual-RFT Table 1 classification prompt (noun: plant, pet, aircraft, car, ...).",
            text=(
                "This is an image containing {article} {noun}. Please identify the {field} of the {noun} "
                f"based on the image. {THINK_ANSWER} The output answer format should be as follows: "
                "<think> ... </think> <answer>{field} name</answer> "
                f"{FORMAT_SUFFIX}"
            ),
        ),
        PromptTemplate(
            name="existence",
            task="detection",
            description="Step one of the evaluation protocol: is the category present at all?",
            text=(
                "Is there any object belonging to the category '{category}' in the image? "
                f"{THINK_ANSWER} The output answer format should be as follows: <think> ... </think> "
                f"<answer>yes</answer> or <think> ... </think> <answer>no</answer> {FORMAT_SUFFIX}"
            ),
        ),
        PromptTemplate(
            name="grounding",
            task="grounding",
            description="LISA reasoning grounding: one box for the region the instruction refers to.",
            text=(
                "{instruction} Find the single region of the image that this refers to and give its "
                "bounding box ({coordinates}). "
                f"{THINK_ANSWER} The output answer format should be as follows: <think> ... </think> "
                f"<answer>[x1, y1, x2, y2]</answer> {FORMAT_SUFFIX}"
            ),
        ),
    )
}

# The field asked for per classification noun (the paper: species for flowers/pets, model for
# aircraft/cars); any other noun asks for its "category".
CLASSIFICATION_FIELDS = {"plant": "species", "flower": "species", "pet": "species", "aircraft": "model", "car": "model",
                         "coloured shape": "colour"}  # the default run's synthetic colour task


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def render_prompt(name: str, *, convention: BoxConvention | None = None, width: int | None = None,
                  height: int | None = None, **values: str) -> str:
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

