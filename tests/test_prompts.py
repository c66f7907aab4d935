"""Prompt templates carry the target model's coordinate convention."""

import pytest

from vrft.models.coords import BoxConvention
from vrft.prompts import TEMPLATES, render_prompt


def test_paper_detection_prompt_for_qwen2_vl():
    text = render_prompt("detection", category="fire hydrant", convention=BoxConvention.for_family("qwen2_vl"))
    assert "category 'fire hydrant'" in text
    assert "(between 0 and 1000, integer)" in text
    assert "return 'No Objects'" in text
    assert "<answer>[{'Position': [x1, y1, x2, y2], 'Confidence': number}" in text
    assert text.endswith("Please strictly follow the format.")


def test_qwen25_prompt_names_the_resized_image_size():
    convention = BoxConvention.for_family("qwen2_5_vl", max_pixels=401408)
    text = render_prompt("detection", category="cat", convention=convention, width=1280, height=960)
    assert "0 and 1000" not in text
    assert "728x532" in text


def test_classification_nouns_and_fields():
    assert render_prompt("classification", noun="plant").startswith(
        "This is an image containing a plant. Please identify the species of the plant based on the image."
    )
    assert "identify the model of the car" in render_prompt("classification", noun="car")
    assert "<answer>species name</answer>" in render_prompt("classification", noun="pet")
    assert "identify the category of the bird" in render_prompt("classification", noun="bird")


def test_grounding_and_existence():
    text = render_prompt("grounding", instruction="What can hold water?", convention=BoxConvention())
    assert text.startswith("What can hold water?") and "[x1, y1, x2, y2]" in text
    assert "<answer>yes</answer>" in render_prompt("existence", category="dog")


def test_errors():
    with pytest.raises(ValueError, match="unknown prompt template 'nope'"):
        render_prompt("nope")
    with pytest.raises(ValueError, match="needs values for: category"):
        render_prompt("existence")
    assert set(TEMPLATES) == {"detection", "classification", "existence", "grounding"}
