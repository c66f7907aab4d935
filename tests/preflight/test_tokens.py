"""Image tokens and prompt lengths equal what the processor itself produces, for real image sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vrft.models.config import PAPER_MAX_PIXELS, ModelConfig
from vrft.preflight.tokens import ModelFiles, ModelFilesUnavailable

QWEN2_VL_2B = Path(__file__).resolve().parents[2] / "configs" / "models" / "qwen2-vl-2b-instruct"
# Photos (640×480, 1024×768), a portrait, extreme aspect ratios (20:1, 1:20, 150:1), a square, and
# images small enough for min_pixels to enlarge them.
SIZES = [
    (640, 480),
    (1024, 768),
    (480, 640),
    (2000, 100),
    (100, 2000),
    (4200, 28),
    (300, 300),
    (20, 20),
    (57, 13),
]


def _image(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (120, 30, 200))


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_image_tokens_equal_the_2b_processors_image_grid(width, height):
    """The shipped Qwen2-VL-2B config directory at the authors' max_pixels: the count equals
    prod(image_grid_thw) / merge² from the processor's own preprocessing of a generated image."""
    from transformers import Qwen2VLImageProcessorPil

    files = ModelFiles(ModelConfig(name_or_path=str(QWEN2_VL_2B), max_pixels=PAPER_MAX_PIXELS))
    processor = Qwen2VLImageProcessorPil.from_pretrained(QWEN2_VL_2B)
    grid = processor(
        images=[_image(width, height)], min_pixels=3136, max_pixels=PAPER_MAX_PIXELS, return_tensors="np"
    )["image_grid_thw"][0]
    assert files.image_tokens(width, height) == int(grid.prod()) // 4
    assert files.image_tokens(width, height) <= files.max_image_tokens


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_image_tokens_equal_the_image_pads_the_full_processor_inserts(tiny_qwen2, width, height):
    """The tiny model's full processor (text + image): the <|image_pad|> tokens it expands the
    prompt to are the image tokens; the whole prompt's length is the preflight's prompt count."""
    files = ModelFiles(tiny_qwen2)
    processor = tiny_qwen2.load_processor()
    text = "Is there any object belonging to the category 'stop sign' in the image?"
    rendered = files.render(text)
    inputs = processor(text=[rendered], images=[_image(width, height)], return_tensors="pt")
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    tokens = files.image_tokens(width, height)
    assert int((inputs["input_ids"] == pad).sum()) == tokens
    count = files.prompt_tokens(text, tokens)
    assert count.exact and count.value == inputs["input_ids"].shape[1]


def test_rendering_matches_the_processors_chat_template(tiny_qwen2):
    """The prompt is rendered exactly as evaluation (and trl) render it."""
    from vrft.evaluate.inference import chat_prompt
    from vrft.prompts import R1_SYSTEM_PROMPT

    files = ModelFiles(tiny_qwen2)
    processor = tiny_qwen2.load_processor()
    for system in ("", R1_SYSTEM_PROMPT):
        assert files.render("Find the cat.", system) == chat_prompt(processor, "Find the cat.", system)


def test_without_a_tokenizer_counts_are_upper_bounds(tiny_qwen2):
    """Byte-level BPE never has a token shorter than one byte: the byte count bounds the real one."""
    from vrft.models.coords import BoxConvention
    from vrft.prompts import render_prompt

    exact = ModelFiles(tiny_qwen2)
    bounded = ModelFiles(ModelConfig(name_or_path=str(QWEN2_VL_2B)))
    assert bounded.tokenizer is None and exact.tokenizer is not None
    for category in ("cat", "fire hydrant", "parking meter"):
        text = render_prompt("detection", category=category, convention=BoxConvention("relative_1000"))
        upper = bounded.prompt_tokens(text, 100)
        real = exact.prompt_tokens(text, 100)
        assert not upper.exact and real.exact
        assert upper.value >= real.value > 100
        assert str(upper).startswith("≤ ")


def test_aspect_ratio_over_200_is_refused_like_the_processor_does():
    files = ModelFiles(ModelConfig(name_or_path=str(QWEN2_VL_2B)))
    with pytest.raises(ValueError, match="aspect ratio"):
        files.image_tokens(5000, 20)


def test_an_unreadable_model_is_reported_not_raised_as_a_crash(tmp_path):
    with pytest.raises(ModelFilesUnavailable, match=str(tmp_path)):
        ModelFiles(ModelConfig(name_or_path=str(tmp_path)))
