"""Rewards: the acceptance cases of the specification, adversarial input, registry and trl form."""

import math

import pytest

from vrft import rewards
from vrft.rewards import (
    ClassificationReward,
    DetectionReward,
    GroundingReward,
    Reward,
    resolve_reward,
    reward_functions_for_trainer,
)

GT = [[100, 100, 200, 200]]


def det(answer: str, gt=GT, **options):
    reward = DetectionReward(**options) if options else rewards.detection
    return reward.breakdown([f"<think>x</think><answer>{answer}</answer>"], solution_boxes=[gt])[0]


def test_exact_box_scores_iou_conf_format():
    b = det('[{"Position":[100,100,200,200],"Confidence":0.9}]')
    assert (b.iou, b.conf, b.format) == (1.0, 0.9, 1.0)
    assert b.overall == pytest.approx(2.9)


def test_extra_false_positive_halves_iou_and_scores_one_minus_confidence():
    b = det(
        '[{"Position":[100,100,200,200],"Confidence":0.9},{"Position":[500,500,600,600],"Confidence":0.6}]'
    )
    assert b.iou == pytest.approx(0.5)
    assert b.conf == pytest.approx((0.9 + 0.4) / 2)


def test_iou_exactly_tau_is_not_a_match():
    b = det('[{"Position":[100,100,200,300],"Confidence":0.7}]')
    assert b.iou == 0.0
    assert b.conf == pytest.approx(0.3)


def test_tau_is_configurable():
    b = det('[{"Position":[100,100,200,300],"Confidence":0.7}]', tau=0.4)
    assert b.iou == pytest.approx(0.5) and b.conf == pytest.approx(0.7)


def test_no_objects_rules():
    assert (det("No Objects", gt=[]).iou, det("No Objects", gt=[]).conf) == (1.0, 1.0)
    assert (det("No Objects").iou, det("No Objects").conf) == (0.0, 0.0)
    boxes_on_empty = det(
        '[{"Position":[1,1,5,5],"Confidence":0.8},{"Position":[9,9,20,20],"Confidence":0.2}]', gt=[]
    )
    assert boxes_on_empty.iou == 0.0
    assert boxes_on_empty.conf == pytest.approx(((1 - 0.8) + (1 - 0.2)) / 2)


def test_missed_object_is_punished_by_default_but_not_with_paper_normalisation():
    two_gt = [[100, 100, 200, 200], [300, 300, 400, 400]]
    answer = '[{"Position":[100,100,200,200],"Confidence":0.9}]'
    assert det(answer, gt=two_gt).iou == pytest.approx(0.5)
    assert det(answer, gt=two_gt, iou_normalization="predictions").iou == pytest.approx(1.0)


def test_matching_goes_by_descending_confidence():
    # The confident box takes the ground truth; the less confident duplicate-ish box is unmatched.
    answer = (
        '[{"Position":[100,100,200,190],"Confidence":0.2},{"Position":[100,100,200,200],"Confidence":0.9}]'
    )
    b = det(answer)
    assert b.iou == pytest.approx(1.0 / 2)
    assert b.conf == pytest.approx((0.9 + 0.8) / 2)


def test_exact_duplicates_are_dropped():
    answer = (
        '[{"Position":[100,100,200,200],"Confidence":0.9},{"Position":[100,100,200,200],"Confidence":0.9}]'
    )
    assert det(answer).iou == 1.0


def test_python_literal_quoting_is_accepted():
    assert det("[{'Position': [100, 100, 200, 200], 'Confidence': 0.9}]").iou == 1.0


@pytest.mark.parametrize(
    "answer",
    [
        '[{"Position":[100,100,200,200],"Confidence":NaN}]',
        '[{"Position":[100,100,200,200],"Confidence":"nan"}]',
        "[{'Position': [100, 100, 200, 200], 'Confidence': float('nan')}]",
        '[{"Position":[200,100,100,200],"Confidence":0.9}]',
        '[{"Position":["100",100,200,200],"Confidence":0.9}]',
        '[{"Position":[100,100,200,1e999],"Confidence":0.9}]',
        "[" + ",".join(f'{{"Position":[{i},0,{i + 5},10],"Confidence":0.5}}' for i in range(10_000)) + "]",
        "[" * 5000 + "]" * 5000,
        '[{"Position":[100,100,200,200],"Confidence":0.9},{"Position":[1,2',
        "9" * 5000,
        "{'Position': [100, 100, 200, 200], 'Confidence': 0.9, 'x': __import__('os').system('true')}",
    ],
)
def test_adversarial_answers_give_finite_rewards(answer):
    b = det(answer)
    for value in b.as_dict().values():
        assert math.isfinite(value)
    assert 0.0 <= b.overall <= 3.0


def test_invalid_box_is_an_unmatched_prediction_with_confidence_one():
    b = det('[{"Position":[100,100,200,200],"Confidence":0.9},{"Position":[5,5,1,1],"Confidence":0.2}]')
    assert b.iou == pytest.approx(0.5)  # two predictions, one match
    assert b.conf == pytest.approx((0.9 + 0.0) / 2)  # invalid box scored as c=1, unmatched -> 0


def test_nan_confidence_box_scores_worst_case():
    b = det('[{"Position":[100,100,200,200],"Confidence":NaN}]')
    assert (b.iou, b.conf) == (0.0, 0.0)


@pytest.mark.parametrize(
    "completion",
    [
        "<think>x</think><answer>a</answer><answer>b</answer>",
        "<think>x</think><answer>a</answer> and more",
        "prefix <think>x</think><answer>a</answer>",
        "<answer>a</answer>",
        "<think>x</think>",
        "<think>x<answer>a</answer></think><answer>a</answer>",
        "<think>x</think><think>y</think><answer>a</answer>",
    ],
)
def test_format_zero(completion):
    assert rewards.format_reward([completion]) == [0.0]


def test_format_one_allows_whitespace():
    assert rewards.format_reward(["  <think>a\nb</think>\n\n<answer> c </answer>\n"]) == [1.0]


def test_conversational_completions():
    completion = [
        {
            "role": "assistant",
            "content": '<think>x</think><answer>[{"Position":[100,100,200,200],"Confidence":0.9}]</answer>',
        }
    ]
    assert rewards.detection([completion], solution_boxes=[GT]) == [pytest.approx(2.9)]


def test_classification_cases():
    r = ClassificationReward()

    def acc(answer, truth="Boeing 737", aliases=None):
        return r.breakdown(
            [f"<think>t</think><answer>{answer}</answer>"], class_name=[truth], aliases=[aliases]
        )[0].accuracy

    assert acc("") == 0.0
    assert acc("Boeing 737 or Airbus A320") == 0.0
    assert acc(" boeing_737 ") == 1.0
    assert acc("Boeing-737.") == 1.0
    assert acc("737") == 0.0
    assert acc("Boeing 737 Boeing 737") == 0.0
    assert acc("B737", aliases=["B737", "Boeing 737-800"]) == 1.0
    assert r(["<think>t</think><answer>boeing 737</answer>"], class_name=["Boeing 737"]) == [2.0]
    # An answer outside the answer tags earns nothing.
    assert r(["Boeing 737"], class_name=["Boeing 737"]) == [0.0]


def test_grounding_iou_and_giou():
    completion = "<think>t</think><answer>[0, 0, 10, 20]</answer>"
    b = GroundingReward("iou").breakdown([completion], solution_box=[[0, 0, 10, 10]])[0]
    assert b.iou == pytest.approx(0.5) and b.overall == pytest.approx(1.5)
    far = "<think>t</think><answer>[100, 100, 110, 110]</answer>"
    g = GroundingReward("giou").breakdown([far], solution_box=[[0, 0, 10, 10]])[0]
    assert 0.0 <= g.iou < 0.1  # GIoU near -1 -> near 0 after +1
    lisa = "<think>t</think><answer>(0,0),(10,10)</answer>"
    assert GroundingReward("giou")([lisa], solution_box=[[0, 0, 10, 10]]) == [3.0]
    assert GroundingReward("iou")(
        ["<think>t</think><answer>nothing</answer>"], solution_box=[[0, 0, 1, 1]]
    ) == [1.0]


def test_think_prefilled_chat_templates():
    completion = "the cat is left</think><answer>cat</answer>"
    assert ClassificationReward()([completion], class_name=["cat"]) == [1.0]
    assert ClassificationReward(think_prefilled=True)([completion], class_name=["cat"]) == [2.0]


def test_missing_column_names_the_column():
    with pytest.raises(KeyError, match="solution_boxes"):
        rewards.detection(["x"])


def test_trl_extra_kwargs_are_ignored():
    out = rewards.detection(
        ["<think>x</think><answer>No Objects</answer>"],
        prompts=["p"],
        completion_ids=[[1, 2]],
        trainer_state=None,
        solution_boxes=[[]],
        image=[None],
    )
    assert out == [3.0]


def test_registry_names_and_dotted_paths(tmp_path, monkeypatch):
    for name in ["detection", "classification", "grounding_iou", "grounding_giou", "format"]:
        assert isinstance(resolve_reward(name), Reward)
    assert resolve_reward("grounding_giou").name == "grounding_giou"
    plugin = tmp_path / "my_rewards.py"
    plugin.write_text(
        "def length_reward(completions, **kw):\n    return [float(len(c)) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = resolve_reward("my_rewards:length_reward")
    assert fn(["ab", "abc"]) == [2.0, 3.0]
    with pytest.raises(ValueError, match="no attribute"):
        resolve_reward("my_rewards:missing")
    with pytest.raises(ValueError, match="cannot import"):
        resolve_reward("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="only apply to classes"):
        resolve_reward("my_rewards:length_reward", tau=0.3)


def test_parts_for_trainer_sum_to_the_reward():
    completions = [
        '<think>x</think><answer>[{"Position":[100,100,200,200],"Confidence":0.9}]</answer>',
        "junk",
        "<think>x</think><answer>No Objects</answer>",
    ]
    cols = {"solution_boxes": [GT, GT, []]}
    funcs = reward_functions_for_trainer("detection")
    assert [f.__name__ for f in funcs] == ["detection_iou", "detection_conf", "detection_format"]
    summed = [sum(values) for values in zip(*(f(completions, **cols) for f in funcs))]
    assert summed == pytest.approx(rewards.detection(completions, **cols))
    parts = [b.as_dict() for b in rewards.detection.breakdown(completions, **cols)]
    assert all(set(p) == {"overall", "format", "iou", "conf"} for p in parts)
    assert sum(p["format"] for p in parts) / len(parts) == pytest.approx(2 / 3)


# -- the authors' Table 2 training reward (issue 22, point 1) ----------------------------------------

# (completion, class name, the authors' accuracy): their grpo_classification.py, string branch.
CONTAINMENT_CASES = [
    ("<think>x</think><answer>2012 BMW M3 Coupe</answer>", "2012 BMW M3 Coupe", 1.0),
    ("<think>x</think><answer>BMW</answer>", "2012 BMW M3 Coupe", 1.0),  # the answer is inside the name
    ("<think>x</think><answer></answer>", "2012 BMW M3 Coupe", 1.0),  # "" is inside every name
    ("<think>x</think><answer>Audi S4, BMW M3 Coupe 2012</answer>", "BMW M3 Coupe", 1.0),  # a list
    ("<think>x</think><answer>american bulldog</answer>", "american_bulldog", 1.0),  # spaces and _ go
    ("<think>x</think><answer>Audi S4</answer>", "2012 BMW M3 Coupe", 0.0),
    ("the answer is 2012 BMW M3 Coupe", "2012 BMW M3 Coupe", 1.0),  # no block: the whole completion
    ("<think>x</think><answer>BMW\nM3</answer>", "2012 BMW M3 Coupe", 0.0),  # no one-line block
]


@pytest.mark.parametrize(("completion", "name", "accuracy"), CONTAINMENT_CASES)
def test_classification_containment_is_the_authors_two_way_containment(completion, name, accuracy):
    (b,) = rewards.classification_containment.breakdown([completion], class_name=[name])
    assert b.accuracy == accuracy
    assert b.overall == b.accuracy + b.format


def test_containment_format_is_the_authors_and_strict_classification_stays_the_default():
    lax = "<think>x</think>\n<answer>a</answer><answer>BMW</answer>"  # two answer blocks
    (b,) = rewards.classification_containment.breakdown([lax], class_name=["2012 BMW M3 Coupe"])
    assert b.format == 1.0  # their regex accepts it; vrft's format reward does not
    assert rewards.format_reward([lax]) == [0.0]
    # The strict reward (vrft's default for classification) does not pay the empty answer or the list.
    assert rewards.classification(["<think>x</think><answer></answer>"], class_name=["cat"]) == [1.0]
    from vrft.tasks import reward_name

    assert reward_name("classification") == "classification"
    assert resolve_reward("classification_containment").name == "classification_containment"
