"""The tiny offline Qwen-VL checkpoints and the loading path shared with real checkpoints.

Everything here runs offline on a CPU in a few seconds: the tiny model is what every other
test and the default pipeline run train, so it must load, render prompts and generate exactly
as a real checkpoint does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor
from trl.chat_template_utils import qwen2_5_vl_chat_template

from vrft.models import loading
from vrft.models.loading import load_model, load_processor, model_family, resolve_dtype
from vrft.models.tiny import FALLBACK_CHAT_TEMPLATE, SPECIAL_TOKENS, build_tiny_model

FAMILIES = ["qwen2_vl", "qwen2_5_vl"]
STOCK_PROCESSORS = {"qwen2_vl": Qwen2VLProcessor, "qwen2_5_vl": Qwen2_5_VLProcessor}
PATCH_AREA = 28 * 28  # one image token covers a 2x2 merge of 14x14 patches


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, float]]:
    """One build per family, shared by the module: path and seconds taken."""
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        for family in FAMILIES:
            start = time.perf_counter()
            path = build_tiny_model(tmp_path_factory.mktemp(family) / "model", family=family, seed=0)
            results[family] = (path, time.perf_counter() - start)
    return results


def rectangle_image(width: int = 64, height: int = 48) -> Image.Image:
    """A red rectangle on blue: a real RGB image with structure, made without any file."""
    image = Image.new("RGB", (width, height), (20, 40, 200))
    image.paste((220, 30, 30), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    return image


def chat_inputs(processor, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """A batch of single-image detection prompts rendered with the checkpoint's own chat template."""
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "Detect the 'cat' in the image."}],
        }
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>" in prompt
    return processor(text=[prompt] * len(images), images=images, padding=True, return_tensors="pt")


def image_token_counts(processor, inputs) -> list[int]:
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return (inputs["input_ids"] == image_token_id).sum(dim=1).tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_builds_offline_fast_and_complete(built, family: str) -> None:
    path, seconds = built[family]
    assert seconds < 5, f"building took {seconds:.1f} s"
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "processor_config.json", "chat_template.jinja"} <= {p.name for p in path.iterdir()}  # fmt: skip
    assert [p.name for p in path.parent.iterdir()] == ["model"], "staging directories were left behind"
    assert model_family(path) == family

    processor_config = json.loads((path / "processor_config.json").read_text())
    assert processor_config["processor_class"] == STOCK_PROCESSORS[family].__name__
    assert processor_config["image_processor"]["size"] == {
        "shortest_edge": 56 * 56,
        "longest_edge": 112 * 112,
    }
    assert processor_config["video_processor"]["video_processor_type"] == "Qwen2VLVideoProcessor"


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_back_as_a_real_checkpoint(built, family: str) -> None:
    path, _ = built[family]
    processor = load_processor(path)
    model = load_model(path)

    assert isinstance(processor, STOCK_PROCESSORS[family]), "a bare tokenizer or the wrong processor"
    assert processor.chat_template == qwen2_5_vl_chat_template, (
        "not trl's template: SFT masking would not patch it"
    )
    assert FALLBACK_CHAT_TEMPLATE == qwen2_5_vl_chat_template
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == list(range(len(SPECIAL_TOKENS)))
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.padding_side) == (
        "<|im_end|>",
        "<|endoftext|>",
        "left",
    )
    assert 1000 <= len(tokenizer) <= 2000

    assert model.config.model_type == family
    assert model.dtype == torch.float32  # "auto" on a CPU
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.text_config.vocab_size == len(tokenizer)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert load_model(path, dtype="bfloat16").dtype == torch.bfloat16


def test_answer_format_tokenises_compactly(built) -> None:
    tokenizer = load_processor(built["qwen2_vl"][0]).tokenizer
    answer = (
        '<think>I see a dog.</think> <answer>[{"Position": [12, 345, 678, 999], "Confidence": 0.93}]</answer>'
    )
    ids = tokenizer(answer).input_ids
    assert tokenizer.decode(ids) == answer
    assert len(ids) < len(answer) / 2
    assert len(tokenizer("<answer>No Objects</answer>").input_ids) <= 8


@pytest.mark.parametrize("family", FAMILIES)
def test_generates_from_an_image_and_chat_prompt(built, family: str) -> None:
    path, _ = built[family]
    processor, model = load_processor(path), load_model(path)
    inputs = chat_inputs(processor, [rectangle_image(64, 48), rectangle_image(40, 90)])
    prompt_length = inputs["input_ids"].shape[1]
    assert inputs["attention_mask"][:, -1].all(), "prompts must be left-padded for generation"

    def generate(**kwargs) -> list[str]:
        output = model.generate(**inputs, max_new_tokens=16, **kwargs)
        new_tokens = output[:, prompt_length:]
        assert 0 < new_tokens.shape[1] <= 16
        return processor.batch_decode(new_tokens, skip_special_tokens=True)

    torch.manual_seed(7)
    sampled = generate(do_sample=True, temperature=1.0)
    torch.manual_seed(7)
    assert generate(do_sample=True, temperature=1.0) == sampled
    greedy = generate(do_sample=False)
    assert generate(do_sample=False) == greedy
    assert all(isinstance(text, str) and text for text in sampled + greedy)


@pytest.mark.parametrize("family", FAMILIES)
def test_image_tokens_respect_pixel_bounds(built, tmp_path: Path, family: str) -> None:
    large, wide, small = rectangle_image(640, 640), rectangle_image(640, 480), rectangle_image(8, 8)

    processor = load_processor(built[family][0])
    inputs = chat_inputs(processor, [large, wide, small])
    tokens = image_token_counts(processor, inputs)
    assert tokens == (inputs["image_grid_thw"].prod(dim=1) // 4).tolist()
    assert tokens[0] == 112 * 112 // PATCH_AREA, "the built max_pixels caps a large image"
    assert 0 < tokens[1] <= 112 * 112 // PATCH_AREA, "and a large one of another aspect ratio"
    assert tokens[2] == 56 * 56 // PATCH_AREA, "the built min_pixels lifts a small image"

    overridden = load_processor(built[family][0], min_pixels=28 * 28, max_pixels=56 * 56)
    assert image_token_counts(overridden, chat_inputs(overridden, [large, small])) == [4, 1]
    overridden.save_pretrained(tmp_path / "saved")  # as a trainer saves its checkpoint
    load_model(built[family][0]).save_pretrained(tmp_path / "saved")
    reloaded = load_processor(tmp_path / "saved")
    assert image_token_counts(reloaded, chat_inputs(reloaded, [large, small])) == [4, 1]
    with pytest.raises(ValueError, match="exceeds max_pixels"):
        load_processor(built[family][0], min_pixels=112 * 112, max_pixels=56 * 56)

    bigger = load_processor(build_tiny_model(tmp_path / "bigger", family=family, max_pixels=224 * 224))
    assert image_token_counts(bigger, chat_inputs(bigger, [large])) == [224 * 224 // PATCH_AREA]


def test_builds_and_runs_without_torchvision(tmp_path: Path) -> None:
    """Block torchvision before anything imports it, so the check means the same on a GPU box that has it."""
    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        sys.modules["torchvision"] = None  # any import of it now fails, and find_spec reports it absent
        assert importlib.util.find_spec("torchvision") is None
        from PIL import Image
        from vrft.models.loading import load_model, load_processor
        from vrft.models.tiny import build_tiny_model

        result = {{}}
        for family in ("qwen2_vl", "qwen2_5_vl"):
            path = build_tiny_model({str(tmp_path)!r} + "/" + family, family=family)
            processor, model = load_processor(path), load_model(path)
            prompt = processor.apply_chat_template(
                [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "Hi"}}]}}],
                add_generation_prompt=True,
            )
            inputs = processor(text=[prompt], images=[Image.new("RGB", (64, 48), "red")], return_tensors="pt")
            output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
            result[family] = [type(processor).__name__, output.shape[1] - inputs["input_ids"].shape[1]]
        print(json.dumps(result))
        """
    )
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result == {
        "qwen2_vl": ["Qwen2VLImageOnlyProcessor", 4],
        "qwen2_5_vl": ["Qwen2_5_VLImageOnlyProcessor", 4],
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_bytes(built, tmp_path: Path, family: str) -> None:
    first, _ = built[family]
    again = build_tiny_model(tmp_path / "again", family=family, seed=0)
    other = build_tiny_model(tmp_path / "other", family=family, seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (first / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (first / "tokenizer.json").read_bytes()


def test_replaces_an_earlier_build_and_never_leaves_a_partial_one(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "model"
    build_tiny_model(target, seed=0)
    weights = (target / "model.safetensors").read_bytes()
    assert build_tiny_model(target, seed=1) == target.absolute()
    assert (target / "model.safetensors").read_bytes() != weights

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(loading.Qwen2VLImageOnlyProcessor, "save_pretrained", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        build_tiny_model(tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_refuses_to_replace_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_tiny_model(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_model_family_and_dtype_resolution(built) -> None:
    path, _ = built["qwen2_5_vl"]
    assert model_family(str(path)) == "qwen2_5_vl"
    assert model_family(load_model(path).config) == "qwen2_5_vl"
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert resolve_dtype("float32", "cuda") == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown family"):
        build_tiny_model(path.parent / "x", family="llava")  # type: ignore[arg-type]
