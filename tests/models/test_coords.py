"""Coordinate conventions: round trips and agreement with the processor's resize rule."""

import itertools

import pytest

from vrft.models.coords import BoxConvention, box_giou, box_iou, processor_resize_params, smart_resize

SIZES = [(640, 480), (481, 1013), (57, 3000), (1920, 1080), (100, 100), (28, 28), (4000, 30)]
BOXES = [(0, 0, 1, 1), (0.1, 0.2, 0.9, 0.95), (0.33, 0.01, 0.34, 0.99)]  # relative to the image


@pytest.mark.parametrize("kind", ["relative_1000", "resized_absolute"])
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_round_trip_within_rounding_error(kind, width, height):
    convention = BoxConvention(kind, max_pixels=401408)
    tolerance = convention.max_rounding_error(width, height)
    for rel in BOXES:
        box = [rel[0] * width, rel[1] * height, rel[2] * width, rel[3] * height]
        model_box = convention.to_model(box, width, height)
        assert all(isinstance(v, int) for v in model_box)
        back = convention.to_original(model_box, width, height)
        assert back == pytest.approx(box, abs=tolerance)
        # and model -> original -> model is exact
        assert convention.to_model(back, width, height) == model_box


def test_same_object_in_both_conventions_maps_to_the_same_pixels():
    width, height = 640, 480
    truth = [64.0, 48.0, 320.0, 240.0]
    qwen2 = BoxConvention.for_family("qwen2_vl")
    qwen25 = BoxConvention.for_family("qwen2_5_vl", max_pixels=401408)
    assert qwen2.to_model(truth, width, height) == [100, 100, 500, 500]
    resized_w, resized_h = qwen25.resized_size(width, height)
    assert (resized_w % 28, resized_h % 28) == (0, 0)
    a = qwen2.to_original(qwen2.to_model(truth, width, height), width, height)
    b = qwen25.to_original(qwen25.to_model(truth, width, height), width, height)
    assert a == pytest.approx(truth, abs=1) and b == pytest.approx(truth, abs=1)


@pytest.mark.parametrize(
    ("height", "width"), itertools.product([28, 100, 480, 1080, 4000], [30, 640, 1920, 3000])
)
def test_resize_rule_is_the_processors(height, width):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=401408)
    params = processor_resize_params(processor)
    assert params == {"factor": 28, "min_pixels": 3136, "max_pixels": 401408}
    convention = BoxConvention("resized_absolute", **params)
    import numpy as np

    image = np.zeros((height, width, 3), dtype=np.uint8)
    grid_t, grid_h, grid_w = processor(images=[image], return_tensors="np")["image_grid_thw"][0]
    assert convention.resized_size(width, height) == (grid_w * 14, grid_h * 14)
    assert smart_resize(height, width, 28, 3136, 401408) == (grid_h * 14, grid_w * 14)


def test_to_original_clips_overshoot():
    convention = BoxConvention("relative_1000")
    assert convention.to_original([-20, 0, 1100, 1000], 200, 100) == [0.0, 0.0, 200.0, 100.0]


def test_unknown_family_and_bad_size():
    with pytest.raises(ValueError, match="unknown model family 'llava'"):
        BoxConvention.for_family("llava")
    with pytest.raises(ValueError, match="positive"):
        BoxConvention().to_model([0, 0, 1, 1], 0, 10)
    with pytest.raises(ValueError, match="image size"):
        BoxConvention("resized_absolute").describe()


def test_iou_and_giou():
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_giou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert -1.0 <= box_giou([0, 0, 1, 1], [100, 100, 101, 101]) < -0.99
