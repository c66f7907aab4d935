"""Prompts equal the authors' strings character for character (their code produced the paper's
numbers); where vrft deviates (existence prompt, Qwen2.5-VL coordinates) the test names it."""

import pytest

from vrft.models.coords import BoxConvention
from vrft.prompts import R1_SYSTEM_PROMPT, TEMPLATES, render_prompt

pytestmark = pytest.mark.timeout(30)

# Written out here as the authors' evaluation and training scripts hold them (\n line breaks, and
# no space in "tags.The").
AUTHORS_DETECTION_FIRE_HYDRANT = (
    "Detect all objects belonging to the category 'fire hydrant' in the image, and provide the bounding boxes "
    "(between 0 and 1000, integer) and confidence (between 0 and 1, with two decimal places).\n"
    "If no object belonging to the category 'fire hydrant' in the image, return 'No Objects'.\n"
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "The output answer format should be as follows:\n"
    "<think> ... </think> <answer>[{'Position': [x1, y1, x2, y2], 'Confidence': number}, ...]</answer>\n"
    "Please strictly follow the format."
)
AUTHORS_CLASSIFICATION = {
    "plant": "This is an image containing a plant. Please identify the species of the plant based on the image.\n",
    "pet": "This is an image containing a pet. Please identify the species of the pet based on the image.\n",
    "aircraft": "This is an image containing an aircraft. Please identify the model of the aircraft based on the image.\n",
    "car": "This is an image containing a car. Please identify the model of the car based on the image.\n",
}
AUTHORS_CLASSIFICATION_TAIL = (
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "The output answer format should be as follows:\n"
    "<think> ... </think> <answer>species name</answer>\n"
    "Please strictly follow the format."
)
AUTHORS_LISA = (
    "Output the bounding box in the image corresponding to the instruction: the pokeymon that can perform "
    "Thunderbolt. Output the thinking process in <think> </think> and your grouding box. Following "
    '"<think> thinking process </think>\n<answer>(x1,y1),(x2,y2)</answer>)" format.'
)
AUTHORS_R1_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant "
    "first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning "
    "process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think><answer> answer here </answer>"
)


def test_detection_prompt_is_the_authors_character_for_character():
    text = render_prompt(
        "detection", category="fire hydrant", convention=BoxConvention.for_family("qwen2_vl")
    )
    assert text == AUTHORS_DETECTION_FIRE_HYDRANT


@pytest.mark.parametrize("noun", sorted(AUTHORS_CLASSIFICATION))
def test_classification_prompts_are_the_authors_character_for_character(noun):
    # Aircraft and cars ask for the "model" but the answer placeholder is "species name" for all four.
    assert (
        render_prompt("classification", noun=noun)
        == AUTHORS_CLASSIFICATION[noun] + AUTHORS_CLASSIFICATION_TAIL
    )


def test_lisa_prompt_and_system_prompt_are_the_authors():
    text = render_prompt(
        "grounding", instruction="the pokeymon that can perform Thunderbolt", convention=BoxConvention()
    )
    assert text == AUTHORS_LISA
    assert R1_SYSTEM_PROMPT == AUTHORS_R1_SYSTEM


def test_documented_deviation_qwen25_prompts_name_the_resized_image_size():
    convention = BoxConvention.for_family("qwen2_5_vl", max_pixels=401408)
    text = render_prompt("detection", category="cat", convention=convention, width=1280, height=960)
    assert "0 and 1000" not in text and "(absolute pixel coordinates in the 728x532 image, integer)" in text
    grounding = render_prompt(
        "grounding", instruction="the cat", convention=convention, width=1280, height=960
    )
    assert grounding.startswith(
        "Output the bounding box in the image corresponding to the instruction: the cat. "
        "Give the box in absolute pixel coordinates in the 728x532 image, integer. Output"
    )


def test_other_nouns_and_the_existence_prompt():
    assert "identify the category of the bird" in render_prompt("classification", noun="bird")
    assert render_prompt("existence", category="dog") == (
        "Is there any object belonging to the category 'dog' in the image?\n"
        "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
        "The output answer format should be as follows:\n"
        "<think> ... </think> <answer>yes</answer> or <think> ... </think> <answer>no</answer>\n"
        "Please strictly follow the format."
    )


def test_errors():
    with pytest.raises(ValueError, match="unknown prompt template 'nope'"):
        render_prompt("nope")
    with pytest.raises(ValueError, match="needs values for: category"):
        render_prompt("existence")
    assert set(TEMPLATES) == {
        "detection",
        "classification",
        "existence",
        "grounding",
        "grounding_train_authors",
        "grounding_sft_authors",
    }


# The authors' LISA training prompts (grpo_lisa.py on gen_sft.py's data): QUESTION_TEMPLATE wraps the
# SFT question, so there is no "." after the instruction; the SFT question has no think instruction.
AUTHORS_LISA_TRAIN = (
    "Output the bounding box in the image corresponding to the instruction: the pokeymon that can perform "
    "Thunderbolt Output the thinking process in <think> </think> and your grouding box. Following "
    '"<think> thinking process </think>\n<answer>(x1,y1),(x2,y2)</answer>)" format.'
)
AUTHORS_LISA_SFT = "Output the bounding box in the image corresponding to the instruction: the pokeymon that can perform Thunderbolt"


def test_lisa_training_prompts_are_the_authors():
    instruction = "the pokeymon that can perform Thunderbolt"
    convention = BoxConvention()
    assert render_prompt("grounding_train_authors", instruction=instruction, convention=convention) == (
        AUTHORS_LISA_TRAIN
    )
    assert render_prompt("grounding_sft_authors", instruction=instruction, convention=convention) == (
        AUTHORS_LISA_SFT
    )
