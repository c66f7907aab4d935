"""Property-based: arbitrary and adversarial text never breaks a reward or a parser."""

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrft import answers
from vrft.rewards import resolve_reward

NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
)
BOX = st.lists(NUMBERS, min_size=0, max_size=6)
ITEM = st.one_of(
    st.fixed_dictionaries({"Position": BOX, "Confidence": NUMBERS}),
    st.dictionaries(st.text(max_size=8), NUMBERS, max_size=3),
    BOX,
    NUMBERS,
)
TAGS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "No Objects",
    "[",
    "]",
    "{",
    "}",
    "(",
    ")",
    ",",
    "'",
    '"',
    ":",
]


@st.composite
def adversarial_text(draw):
    """Free text, tag soup, and answers built from (often malformed) box lists, possibly truncated."""
    kind = draw(st.sampled_from(["text", "soup", "boxes"]))
    if kind == "text":
        return draw(st.text(max_size=300))
    if kind == "soup":
        pieces = draw(st.lists(st.one_of(st.sampled_from(TAGS), st.text(max_size=10)), max_size=40))
        return "".join(pieces)
    items = draw(st.lists(ITEM, max_size=8))
    body = repr(items) if draw(st.booleans()) else str(items).replace("'", '"')
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    return f"<think>{draw(st.text(max_size=20))}</think><answer>{body}</answer>"


GT_BOXES = st.lists(
    st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(1, 500), st.floats(1, 500)).map(
        lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]]
    ),
    max_size=4,
)

COLUMNS = {
    "format": lambda draw: {},
    "detection": lambda draw: {"solution_boxes": [draw(GT_BOXES)]},
    "classification": lambda draw: {
        "class_name": [draw(st.text(max_size=20))],
        "aliases": [draw(st.lists(st.text(max_size=10), max_size=2))],
    },
    "classification_containment": lambda draw: {"class_name": [draw(st.text(max_size=20))]},
    "grounding_iou": lambda draw: {"solution_box": [draw(GT_BOXES.filter(bool))[0]]},
    "grounding_giou": lambda draw: {"solution_box": [draw(GT_BOXES.filter(bool))[0]]},
}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(name=st.sampled_from(sorted(COLUMNS)), text=adversarial_text(), data=st.data())
def test_rewards_are_finite_and_in_range(name, text, data):
    reward = resolve_reward(name)
    columns = COLUMNS[name](data.draw)
    conversational = data.draw(st.booleans())
    completion = [{"role": "assistant", "content": text}] if conversational else text
    (breakdown,) = reward.breakdown([completion], **columns)
    low, high = reward.range
    assert low <= breakdown.overall <= high
    for value in breakdown.as_dict().values():
        assert math.isfinite(value)
    assert breakdown.format in (0.0, 1.0)
    assert reward([completion], **columns) == [breakdown.overall]


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(adversarial_text(), st.text(max_size=500)))
def test_parsers_never_raise(text):
    answers.is_well_formed(text)
    answer = answers.extract_answer(text)
    parsed = answers.parse_detections(answer if answer is not None else text)
    for box in parsed.boxes:
        assert 0.0 <= box.confidence <= 1.0
        if box.valid:
            x1, y1, x2, y2 = box.box
            assert x2 > x1 and y2 > y1 and all(math.isfinite(v) for v in box.box)
    single = answers.parse_single_box(text)
    assert single is None or (single[2] > single[0] and single[3] > single[1])
    answers.labels_match(text, "cat", [text])
    answers.parse_yes_no(text)
    answers.completion_text([{"role": "assistant", "content": text}])
