"""Answer parsing: think/answer blocks, detection lists, single boxes, labels, yes/no."""

import pytest

from vrft.answers import (
    MAX_ANSWER_CHARS,
    completion_text,
    extract_answer,
    is_well_formed,
    labels_match,
    parse_detections,
    parse_literal,
    parse_single_box,
    parse_yes_no,
)


def test_extract_answer_takes_last_block_and_strips():
    assert extract_answer("<answer>a</answer> <answer> b </answer>") == "b"
    assert extract_answer("<answer>\nmulti\nline\n</answer>") == "multi\nline"
    assert extract_answer("<answer>unterminated") is None


def test_well_formed_rejects_nested_tags_and_prose():
    assert is_well_formed("<think></think><answer></answer>")
    assert not is_well_formed("<think>a</think>text<answer>b</answer>")
    assert not is_well_formed("<think>a</think><answer>b</answer></answer>")


@pytest.mark.parametrize(
    "text",
    [
        '[{"Position": [1, 2, 3, 4], "Confidence": 0.5}]',
        "[{'Position': [1, 2, 3, 4], 'Confidence': 0.5}]",
        '```json\n[{"Position": [1, 2, 3, 4], "Confidence": 0.5}]\n```',
        "Here are the boxes: [{'Position': [1, 2, 3, 4], 'Confidence': 0.5}].",
        "{'Position': [1, 2, 3, 4], 'Confidence': 0.5}",
        '[{"bbox_2d": [1, 2, 3, 4], "score": 0.5}]',
        '[{"position": [1.0, 2.0, 3.0, 4.0], "confidence": 0.5}]',
    ],
)
def test_detection_answer_variants(text):
    answer = parse_detections(text)
    assert answer.parsed and not answer.no_objects
    assert [(b.box, b.confidence, b.valid) for b in answer.boxes] == [((1.0, 2.0, 3.0, 4.0), 0.5, True)]


@pytest.mark.parametrize("text", ["No Objects", "no objects.", "'No Objects'", " NO OBJECT ", "[]"])
def test_no_objects_variants(text):
    assert parse_detections(text).no_objects


def test_confidence_is_clipped_and_missing_confidence_is_invalid():
    answer = parse_detections("[{'Position': [0, 0, 1, 1], 'Confidence': -3}, {'Position': [0, 0, 2, 2]}]")
    assert answer.boxes[0].confidence == 0.0 and answer.boxes[0].valid
    assert not answer.boxes[1].valid and answer.boxes[1].confidence == 1.0


def test_bool_and_wrong_length_are_invalid():
    answer = parse_detections(
        "[{'Position': [True, 0, 1, 1], 'Confidence': 0.5}, {'Position': [0, 0, 1], 'Confidence': 0.5}, 5]"
    )
    assert [b.valid for b in answer.boxes] == [False, False, False]


def test_unparsable_and_oversized():
    assert not parse_detections("the cat is here").parsed
    assert not parse_detections(None).parsed
    assert not parse_detections("[" + " " * MAX_ANSWER_CHARS + "]").parsed
    assert parse_literal("__import__('os').system('echo hacked')") is None


def test_single_box_variants():
    assert parse_single_box("(1, 2), (3, 4)") == (1.0, 2.0, 3.0, 4.0)
    assert parse_single_box("(1.5,2.5),(3,4)") == (1.5, 2.5, 3.0, 4.0)
    assert parse_single_box("[{'Position': [1, 2, 3, 4], 'Confidence': 0.9}]") == (1.0, 2.0, 3.0, 4.0)
    assert parse_single_box("The box is [1, 2, 3, 4].") == (1.0, 2.0, 3.0, 4.0)
    assert parse_single_box("[3, 2, 1, 4]") is None
    assert parse_single_box("[[1, 2, 3, 4], [5, 6, 7, 8]]") is None
    assert parse_single_box(None) is None


def test_completion_text_forms():
    assert completion_text("plain") == "plain"
    assert (
        completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}])
        == "ab"
    )
    assert completion_text({"role": "assistant", "content": "x"}) == "x"


def test_labels_match_aliases_and_no_substrings():
    assert labels_match("Golden Retriever", "golden_retriever")
    assert not labels_match("retriever", "golden_retriever")
    assert not labels_match("golden retriever, labrador", "golden_retriever")
    assert labels_match("pug dog", "pug", aliases=["pug dog"])
    assert not labels_match("   ", "pug")
    assert not labels_match("anything", "", aliases=[""])


def test_yes_no():
    assert parse_yes_no("Yes") is True
    assert parse_yes_no("No Objects") is False
    assert parse_yes_no("perhaps") is None and parse_yes_no(None) is None
