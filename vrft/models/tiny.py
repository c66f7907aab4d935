"""A tiny, randomly initialised Qwen2-VL / Qwen2.5-VL built offline in well under a second.

Tests and the default pipeline run need a model with the real architecture, processor, chat
template and special tokens, but no model hub is reachable and a 2B model is far too slow on a
CPU. :func:`build_tiny_model` writes a directory that loads exactly like a real checkpoint
(through :mod:`vrft.models.loading`), with a byte-level BPE tokenizer trained here on generated
text that covers the Visual-RFT answer format, so completions are short in tokens.

>>> import tempfile
>>> from vrft.models.loading import model_family
>>> with tempfile.TemporaryDirectory() as tmp:
...     model_family(build_tiny_model(tmp + "/tiny", family="qwen2_5_vl"))
'qwen2_5_vl'
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from vrft.models.loading import IMAGE_ONLY_PROCESSORS

Family = Literal["qwen2_vl", "qwen2_5_vl"]
#: ``test``: the 0.3 M-parameter model the tests use (fastest); ``base``: the 1.2 M-parameter
#: model tools/pretrain_tiny.py pre-trains into the default run's base (big enough to learn).
Size = Literal["test", "base"]
_SIZES = {
    # head_dim 16 in both, so mrope_section [2, 3, 3] sums to 16 / 2.
    "test": {
        "text": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
        "vision": {"depth": 2, "embed_dim": 32, "num_heads": 2},
    },
    "base": {
        "text": {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
        },
        "vision": {"depth": 4, "embed_dim": 64, "num_heads": 4},
    },
}

#: Qwen2-VL's special tokens in their real order; here they take ids 0..13.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
VOCAB_SIZE = 1024

#: Used only where trl's bundled template cannot be found; a test keeps it identical to trl's.
FALLBACK_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CATEGORIES = [
    "bus", "train", "fire hydrant", "stop sign", "cat", "dog", "bed", "toilet", "horse_buggy", "die",
    "kitchen_table", "omelet", "papaya", "stepladder", "mouse", "fork", "hot dog", "airplane",
    "suitcase", "parking meter", "sandwich", "hair drier", "toaster", "snowboard", "frisbee", "bear",
    "casserole", "egg_roll", "futon", "garbage", "handsaw", "hippopotamus", "mallet", "shot_glass",
    "sugar_bowl", "person", "car", "bicycle", "motorcycle", "truck", "boat", "bird", "horse", "sheep",
    "cow", "elephant", "zebra", "giraffe", "umbrella", "bottle", "cup", "knife", "bowl", "banana",
    "apple", "orange", "pizza", "cake", "chair", "couch", "laptop", "keyboard", "book", "clock",
    "vase", "scissors", "teddy bear", "sunflower", "daisy", "rose", "tulip", "orchid", "lotus",
    "Abyssinian", "Bengal", "Persian", "Siamese", "beagle", "boxer", "pug", "Boeing 747",
    "Airbus A320", "Cessna 172", "Tesla Model S", "Audi TT", "Ford F-150",
]  # fmt: skip
_WORDS = (
    "the a an of in on at to and or but is are was there here it its image picture photo shows this "
    "that these I we see can find one two three four some many few every each object objects "
    "category categories class box boxes bounding position confidence detect detected located near "
    "far left right top bottom center middle corner edge large small tall wide long short red "
    "green blue yellow black white gray brown orange pink purple background foreground front back "
    "behind above below beside between inside outside so answer think final output format integer "
    "number please identify species model plant pet aircraft car containing thinking process tags "
    "should be as follows no not targets simply respond with looks like appears seems likely "
    "clearly visible partially hidden occluded standing sitting lying parked flying running "
    "road street grass sky water table room wall floor tree building window door light shadow "
    "first second third another other same different shape color size part whole group pair "
    "therefore because since given likely confident sure"
).split()
_CLASSIFICATION_DOMAINS = [("plant", "species"), ("pet", "species"), ("aircraft", "model"), ("car", "model")]


def _corpus(rng: random.Random, lines: int = 800) -> Iterator[str]:
    """Visual-RFT detection and classification prompts and answers, so the BPE learns their pieces."""
    for _ in range(lines):
        category = rng.choice(_CATEGORIES)
        boxes = [
            [rng.randint(0, 500), rng.randint(0, 500), rng.randint(500, 1000), rng.randint(500, 1000)]
            for _ in range(rng.randint(0, 3))
        ]
        if boxes:
            answer = (
                "["
                + ", ".join(f'{{"Position": {box}, "Confidence": {rng.random():.2f}}}' for box in boxes)
                + "]"
            )
        else:
            answer = "No Objects"
        reasoning = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16)))
        domain, kind = rng.choice(_CLASSIFICATION_DOMAINS)
        # Special tokens are atomic added tokens, so they are left out: the BPE learns the text around them.
        yield (
            "system\nYou are a helpful assistant.\nuser\nPicture 1: "
            f"Detect all objects belonging to the category '{category}' in the image, and provide the "
            "bounding boxes (between 0 and 1000, integer) and confidence (between 0 and 1, with two digits "
            "after the decimal point). If no targets are detected in the image, simply respond with "
            "'No Objects'. Output the thinking process in <think> </think> and final answer in "
            "<answer> </answer> tags.\nassistant\n"
            f"<think>{reasoning}.</think> <answer>{answer}</answer>\n"
            f"This is an image containing a {domain}. Please identify the {kind} of the {domain}.\n"
            f"<think>{reasoning} {category}</think><answer>{category}</answer>"
        )


def _train_tokenizer() -> PreTrainedTokenizerFast:
    """A Qwen2-style byte-level BPE (same normaliser, split regex and special tokens) of ~1k entries."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(random.Random(0)), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=SPECIAL_TOKENS[1:],
        padding_side="left",
        model_max_length=32768,
    )


def chat_template() -> str:
    """trl's bundled Qwen2.5-VL template (Qwen2-VL's is byte-identical), else an equivalent string.

    Using trl's exact text matters: trl recognises it and swaps in its training variant with
    ``{% generation %}`` markers for assistant-only SFT loss.
    """
    if importlib.util.find_spec("trl") is not None:
        template = importlib.resources.files("trl") / "chat_templates" / "qwen2_5_vl.jinja"
        if template.is_file():
            return template.read_text(encoding="utf-8")
    return FALLBACK_CHAT_TEMPLATE


def _model_config(
    family: Family,
    tokenizer: PreTrainedTokenizerFast,
    size: Size = "test",
) -> Qwen2VLConfig | Qwen2_5_VLConfig:
    """Real architecture, toy sizes: text head_dim 16 so mrope_section [2, 3, 3] sums to 16 / 2."""
    ids = tokenizer.convert_tokens_to_ids
    dims = _SIZES[size]
    text = {
        "vocab_size": len(tokenizer),
        **dims["text"],
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
    }
    token_ids = {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }
    seeing = dims["vision"]
    if family == "qwen2_vl":
        vision = {**seeing, "hidden_size": text["hidden_size"], "mlp_ratio": 2}
        return Qwen2VLConfig(text_config=text, vision_config=vision, **token_ids)
    vision = {
        "depth": seeing["depth"],
        "hidden_size": seeing["embed_dim"],
        "intermediate_size": 2 * seeing["embed_dim"],
        "num_heads": seeing["num_heads"],
        "out_hidden_size": text["hidden_size"],
        "fullatt_block_indexes": [seeing["depth"] - 1],
    }
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **token_ids)


_MODEL_CLASSES = {
    "qwen2_vl": Qwen2VLForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
}


def build_tiny_model(
    output_dir: str | os.PathLike[str],
    family: Family = "qwen2_vl",
    seed: int = 0,
    min_pixels: int = 56 * 56,
    max_pixels: int = 112 * 112,
    size: Size = "test",
) -> Path:
    """Write a tiny ``family`` checkpoint (model, processor, tokenizer, chat template) to ``output_dir``.

    The directory appears complete or not at all: everything is saved into a temporary sibling
    that is then renamed. An existing earlier build at ``output_dir`` is replaced; any other
    non-empty directory there is refused. The same ``seed`` gives byte-identical weights.
    """
    if family not in _MODEL_CLASSES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(_MODEL_CLASSES)}")
    if size not in _SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(_SIZES)}")
    output = Path(output_dir).absolute()
    if output.exists() and any(output.iterdir()) and not (output / "config.json").is_file():
        raise FileExistsError(f"{output} exists and is not a model directory; refusing to replace it")

    tokenizer = _train_tokenizer()
    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    processor = IMAGE_ONLY_PROCESSORS[family](
        image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template()
    )
    config = _model_config(family, tokenizer, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _MODEL_CLASSES[family](config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.pad_token_id],
        pad_token_id=config.text_config.pad_token_id,
    )

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        # mkdtemp makes it private; the model directory gets what the umask allows (private in `vrft run`).
        umask = os.umask(0o022)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        model.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        if output.exists():
            retired = staging.with_name(staging.name + ".old")
            output.rename(retired)
            staging.rename(output)
            shutil.rmtree(retired)
        else:
            staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output
