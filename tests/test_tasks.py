"""Row rendering: prompt, reward columns and SFT target agree on the model's convention."""

import pytest

from vrft import rewards
from vrft.models.coords import BoxConvention
from vrft.tasks import prompt_text, reward_name, solution_columns, target_answer

ROWS = {
    "detection": {
        "task": "detection",
        "category": "cat",
        "gt_boxes": [[10.0, 20.0, 300.0, 200.0], [400.0, 50.0, 600.0, 470.0]],
        "width": 640,
        "height": 480,
        "aliases": [],
        "noun": "",
        "instruction": "",
        "image_id": "1",
    },
    "negative": {
        "task": "detection",
        "category": "dog",
        "gt_boxes": [],
        "width": 640,
        "height": 480,
        "aliases": [],
        "noun": "",
        "instruction": "",
        "image_id": "2",
    },
    "classification": {
        "task": "classification",
        "category": "Boeing 737",
        "gt_boxes": [],
        "width": 300,
        "height": 200,
        "aliases": ["B737"],
        "noun": "aircraft",
        "instruction": "",
        "image_id": "3",
    },
    "grounding": {
        "task": "grounding",
        "category": "",
        "gt_boxes": [[5.0, 5.0, 50.0, 60.0]],
        "width": 100,
        "height": 80,
        "aliases": [],
        "noun": "",
        "instruction": "What holds the soup?",
        "image_id": "4",
    },
}
CONVENTIONS = [
    BoxConvention.for_family("qwen2_vl"),
    BoxConvention.for_family("qwen2_5_vl", max_pixels=401408),
]


@pytest.mark.parametrize("convention", CONVENTIONS, ids=["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("name", sorted(ROWS))
def test_sft_target_earns_the_full_reward(name, convention):
    row = ROWS[name]
    reward = rewards.resolve_reward(reward_name(row["task"]))
    (b,) = reward.breakdown(
        [target_answer(row, convention)], **{k: [v] for k, v in solution_columns(row, convention).items()}
    )
    assert b.format == 1.0
    assert b.overall == pytest.approx(reward.range[1])


def test_prompt_uses_the_model_convention():
    row = ROWS["detection"]
    assert "between 0 and 1000" in prompt_text(row, CONVENTIONS[0])
    assert "absolute pixel coordinates in the 644x476 image" in prompt_text(row, CONVENTIONS[1])
    assert "existence" not in prompt_text(row, CONVENTIONS[0], prompt="existence")
    assert "Is there any object belonging to the category 'cat'" in prompt_text(
        row, CONVENTIONS[0], prompt="existence"
    )
    assert prompt_text(ROWS["grounding"], CONVENTIONS[0]).startswith(
        "Output the bounding box in the image corresponding to the instruction: What holds the soup?."
    )
    assert "identify the model of the aircraft" in prompt_text(ROWS["classification"], CONVENTIONS[0])


def test_bad_rows():
    with pytest.raises(ValueError, match="task 'segmentation'"):
        solution_columns({"task": "segmentation"}, CONVENTIONS[0])
    with pytest.raises(ValueError, match="exactly one gt box"):
        solution_columns({**ROWS["grounding"], "gt_boxes": []}, CONVENTIONS[0])


def test_authors_style_changes_lisa_training_only():
    from vrft.tasks import training_prompt_text

    qwen2 = CONVENTIONS[0]
    grounding = ROWS["grounding"]
    grpo = training_prompt_text(grounding, qwen2, style="authors", stage="grpo")
    assert "soup? Output the thinking" in grpo and grpo != prompt_text(grounding, qwen2)
    sft = training_prompt_text(grounding, qwen2, style="authors", stage="sft")
    assert sft.endswith("instruction: What holds the soup?") and "<think>" not in sft
    assert target_answer(grounding, qwen2, "authors") == "(50,62),(500,750)"  # the bare box
    assert target_answer(grounding, qwen2).startswith("<think>")
    for name in ("detection", "classification"):  # the authors trained these on the evaluation prompts
        row = ROWS[name]
        assert training_prompt_text(row, qwen2, style="authors", stage="sft") == prompt_text(row, qwen2)
        assert target_answer(row, qwen2, "authors") == target_answer(row, qwen2)
