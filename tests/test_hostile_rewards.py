"""Rewards on hostile completions (issue 14): linear-time parsing bounded by the length cap,
Unicode look-alikes in class names, the constant detection answer, and the degenerate share."""

from __future__ import annotations

import pytest

from vrft.answers import MAX_ANSWER_CHARS, extract_answer, is_well_formed, labels_match
from vrft.rewards import (
    HardenedDetectionReward,
    classification,
    classification_containment,
    detection,
    detection_hardened,
    grounding_giou,
    monitor_functions_for_trainer,
    resolve_reward,
)

# Each of these took seconds to minutes before (regex scans from every unclosed tag or whitespace
# run to the end: quadratic); the module timeout is the bound, no wall-clock assertion.
pytestmark = pytest.mark.timeout(60)

N = MAX_ANSWER_CHARS
ADVERSARIAL = {
    "<answer> x 20000 (the issue's 160 kB)": "<answer>" * 20_000,
    "unclosed <answer> at the cap": "<answer>" * (N // 8),
    "unclosed <think> at the cap": "<think>" * (N // 7),
    "</think> repeated inside think": "<think>" + "</think>" * (N // 8 - 2) + "<answer>",
    "no objects then whitespace": "<think>.</think><answer>no objects" + " " * (N - 60) + "x</answer>",
    "code fence then whitespace": "<think>.</think><answer>```" + " " * (N - 60) + "x</answer>",
    "open parentheses and digits": "<think>.</think><answer>" + "(1" * (N // 2 - 20) + "</answer>",
}


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_adversarial_completions_score_in_linear_time(case):
    text = ADVERSARIAL[case]
    for reward, columns in (
        (detection, {"solution_boxes": [[[0, 0, 10, 10]]]}),
        (detection_hardened, {"solution_boxes": [[[0, 0, 10, 10]]]}),
        (classification, {"class_name": ["cat"]}),
        (classification_containment, {"class_name": ["cat"]}),
        (grounding_giou, {"solution_box": [[0, 0, 10, 10]]}),
    ):
        (value,) = reward([text], **columns)
        assert reward.range[0] <= value <= reward.range[1] - 1.0  # never well formed with a right answer


def test_text_beyond_the_cap_is_never_parsed():
    over = "<think>x</think><answer>" + "a" * N + "</answer>"
    assert not is_well_formed(over) and extract_answer(over) is None
    assert detection([over], solution_boxes=[[]]) == [0.0]


def test_linear_scans_keep_the_regex_semantics():
    assert extract_answer("<answer>a<answer>b</answer> <answer>c</answer>") == "c"
    assert extract_answer("<answer>a<answer>b</answer><answer>") == "a<answer>b"
    assert is_well_formed("  <think>a</think> \n <answer>b</answer>\n")
    assert not is_well_formed("<think>a</think>x<answer>b</answer>")
    assert not is_well_formed("<think>a<think></think><answer>b</answer>")
    assert not is_well_formed("<think>a</think><answer>b</think></answer>")
    assert not is_well_formed("<think>a</think><answer>")
    assert detection(["<think>.</think><answer>```json\n[]\n```</answer>"], solution_boxes=[[]]) == [3.0]
    assert detection(["<think>.</think><answer> 'No   objects' . </answer>"], solution_boxes=[[]]) == [3.0]


@pytest.mark.parametrize(
    "answer", ["ｃａｔ", "ca\u200bt", "\ufeffcat", "c\u00adat", "ＣＡＴ\u200d", "cat\u2060"]
)
def test_full_width_and_invisible_characters_match(answer):
    assert labels_match(answer, "cat")
    assert classification([f"<think>.</think><answer>{answer}</answer>"], class_name=["Cat"]) == [2.0]


def test_look_alikes_that_are_other_letters_do_not_match():
    assert not labels_match("c\u0430t", "cat")  # Cyrillic a: a different letter, not a form of "a"


# -- the constant detection answer ---------------------------------------------------------------

CONSTANT = "<think>.</think><answer>[{'Position': [0, 0, 1, 1], 'Confidence': 0}]</answer>"


def _honest(boxes: list[list[float]], confidence: float = 0.9) -> str:
    items = ", ".join(f"{{'Position': {b}, 'Confidence': {confidence}}}" for b in boxes)
    return f"<think>.</think><answer>[{items}]</answer>"


# (ground truth, an honest but imprecise answer: every box shifted, IoU from 0.14 to 0.68)
IMPRECISE = {
    "one box, IoU 0.43": ([[100, 100, 200, 200]], [[140, 100, 240, 200]]),
    "one box, IoU 0.14": ([[100, 100, 200, 200]], [[175, 100, 275, 200]]),
    "one box, IoU 0.68": ([[100, 100, 200, 200]], [[119, 100, 219, 200]]),
    "two boxes, one close, one missed": (
        [[100, 100, 200, 200], [300, 300, 360, 360]],
        [[110, 100, 210, 200], [330, 330, 390, 390]],
    ),
    "three boxes, all imprecise": (
        [[0, 0, 50, 50], [100, 0, 150, 50], [200, 0, 250, 50]],
        [[20, 0, 70, 50], [120, 0, 170, 50], [220, 0, 270, 50]],
    ),
}


def test_the_papers_reward_pays_the_constant_answer_two_of_three():
    """The known property the hardened variant exists for (kept: the paper's reward stays the default)."""
    for gt, _boxes in IMPRECISE.values():
        assert detection([CONSTANT], solution_boxes=[gt]) == [2.0]
    gt, boxes = IMPRECISE["one box, IoU 0.43"]
    assert detection([_honest(boxes)], solution_boxes=[gt])[0] < 2.0


@pytest.mark.parametrize("case", sorted(IMPRECISE))
def test_hardened_reward_pays_honest_imprecise_boxes_more_than_the_constant(case):
    gt, boxes = IMPRECISE[case]
    (constant,) = detection_hardened([CONSTANT], solution_boxes=[gt])
    (honest,) = detection_hardened([_honest(boxes)], solution_boxes=[gt])
    assert constant == pytest.approx(1.0, abs=1e-3)  # the format reward alone (the 1x1 box barely overlaps)
    assert honest > constant


def test_hardened_reward_keeps_the_extremes_and_the_range():
    gt = [[100, 100, 200, 200]]
    assert detection_hardened([_honest(gt, 1.0)], solution_boxes=[gt]) == [3.0]
    assert detection_hardened(["<think>.</think><answer>No Objects</answer>"], solution_boxes=[[]]) == [3.0]
    assert detection_hardened(["<think>.</think><answer>No Objects</answer>"], solution_boxes=[gt]) == [1.0]
    assert detection_hardened([CONSTANT], solution_boxes=[[]]) == [
        1.0
    ]  # boxes on an image without the category
    assert detection_hardened(["garbage"], solution_boxes=[gt]) == [0.0]
    assert isinstance(resolve_reward("detection_hardened", tau=0.4), HardenedDetectionReward)
    assert resolve_reward("detection").__class__.__name__ == "DetectionReward"  # the default is the paper's


def test_degenerate_share_is_a_zero_weight_monitor():
    (monitor,) = monitor_functions_for_trainer("detection")
    assert monitor.__name__ == "detection_degenerate"  # trl logs rewards/detection_degenerate/mean
    gt = [[100, 100, 200, 200]]
    completions = [
        CONSTANT,
        CONSTANT,
        _honest(gt),
        _honest([[0, 0, 1, 1]], 0.9),
        "<answer>No Objects</answer>",
        "garbage",
    ]
    assert monitor(completions, solution_boxes=[gt] * 6) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert [f.__name__ for f in monitor_functions_for_trainer("detection_hardened")] == [
        "detection_hardened_degenerate"
    ]
    assert monitor_functions_for_trainer("classification") == []
    assert monitor_functions_for_trainer("vrft.rewards:format_reward") == []


def test_the_report_plots_the_degenerate_share():
    from vrft.report.plots import _short, is_reward_metric

    assert is_reward_metric("rewards/detection_degenerate/mean")
    assert _short("rewards/detection_degenerate/mean") == "detection_degenerate"
