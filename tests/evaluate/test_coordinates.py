"""A model answer in either family's convention maps back to the same original-pixel box."""

from __future__ import annotations

import pytest

from vrft.evaluate.detection import answer_boxes
from vrft.models.config import ModelConfig


@pytest.mark.parametrize("size", [(640, 480), (333, 500), (1280, 720)])
def test_qwen2_and_qwen25_answers_for_the_same_image_give_the_same_original_box(
    tiny_qwen2: ModelConfig, tiny_qwen25: ModelConfig, size: tuple[int, int]
) -> None:
    width, height = size
    truth = [0.2 * width, 0.25 * height, 0.7 * width, 0.9 * height]  # original pixels
    qwen2 = tiny_qwen2.convention(tiny_qwen2.load_processor())
    qwen25 = tiny_qwen25.convention(tiny_qwen25.load_processor())
    assert (qwen2.kind, qwen25.kind) == ("relative_1000", "resized_absolute")

    # What each model writes for that object: 0-1000 integers vs pixels of the processor-resized image.
    box2 = qwen2.to_model(truth, width, height)
    box25 = qwen25.to_model(truth, width, height)
    assert box2 != box25
    answer2 = f"[{{'Position': {box2}, 'Confidence': 0.9}}]"
    answer25 = f'[{{"bbox_2d": {box25}, "Confidence": 0.9}}]'

    ((got2, score2),) = answer_boxes(answer2, qwen2, width, height)[0]
    ((got25, score25),) = answer_boxes(answer25, qwen25, width, height)[0]
    assert score2 == score25 == 0.9
    tolerance = qwen2.max_rounding_error(width, height) + qwen25.max_rounding_error(width, height)
    assert got2 == pytest.approx(got25, abs=tolerance)
    assert got2 == pytest.approx(truth, abs=qwen2.max_rounding_error(width, height))
    assert got25 == pytest.approx(truth, abs=qwen25.max_rounding_error(width, height))

    # Read in the wrong convention, the same Qwen2.5-VL answer lands somewhere else entirely.
    ((wrong, _),) = answer_boxes(answer25, qwen2, width, height)[0]
    assert wrong != pytest.approx(truth, abs=5)


def test_qwen25_convention_follows_the_processor_pixel_bounds(tiny_qwen25: ModelConfig) -> None:
    """Resized-absolute boxes depend on max_pixels: the convention must come from the loaded processor."""
    small = tiny_qwen25.convention(tiny_qwen25.load_processor())
    large = ModelConfig(name_or_path=tiny_qwen25.name_or_path, min_pixels=3136, max_pixels=401408)
    large_convention = large.convention(large.load_processor())
    assert small.resized_size(640, 480) != large_convention.resized_size(640, 480)
    answer = "[{'Position': [10, 10, 50, 40], 'Confidence': 1.0}]"
    assert answer_boxes(answer, small, 640, 480)[0] != answer_boxes(answer, large_convention, 640, 480)[0]


def test_malformed_and_clipped_boxes_are_counted_not_scored(tiny_qwen2: ModelConfig) -> None:
    convention = tiny_qwen2.convention()
    answer = (
        "[{'Position': [100, 100, 200, 200], 'Confidence': 0.5}, {'Position': [5, 5, 1, 1], 'Confidence': 1},"
        " {'Position': [1100, 0, 1200, 50], 'Confidence': 0.4}]"
    )
    boxes, invalid = answer_boxes(answer, convention, 640, 480)
    assert boxes == [([64.0, 48.0, 128.0, 96.0], 0.5)]
    assert invalid == 2  # reversed corners; entirely outside the image once clipped
    assert answer_boxes("No Objects", convention, 640, 480) == ([], 0)
    assert answer_boxes(None, convention, 640, 480) == ([], 0)
