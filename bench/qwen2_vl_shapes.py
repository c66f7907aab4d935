"""Random-weight Qwen2-VL models of a given shape for the benchmarks, built offline from a config.

* ``2b``: Qwen2-VL-2B-Instruct's architecture and sizes (its published config.json: 28 text layers,
  hidden 1536, vocabulary 151,936; a 32-layer, 1280-wide vision tower): 2,208,985,600 parameters.
* ``mini``: the same architecture and code path with tiny widths, two layers each and a 4,096-token
  vocabulary (still above the tiny tokenizer's, so random ids beyond it are sampled and decoded as in
  the 2B case), so that a CPU runs the 2B benchmark's path end to end in a few minutes
  (bench/gpu/check.sh --dry-run). Full-vocabulary logits are what makes a CPU slow at 151,936.

The tokenizer and processor are the tiny offline checkpoint's (:mod:`vrft.models.tiny`): its special
token ids go into the config; ids it lacks decode to nothing, which changes no timing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, Qwen2VLConfig, Qwen2VLForConditionalGeneration

SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "2b": (
        {
            "vocab_size": 151936,
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "mrope_section": [16, 24, 24],
        },
        {"depth": 32, "embed_dim": 1280, "num_heads": 16},
    ),
    "mini": (
        {
            "vocab_size": 4096,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "mrope_section": [2, 3, 3],
        },
        {"depth": 2, "embed_dim": 64, "num_heads": 4},
    ),
}
TOKENS = (
    "<|endoftext|>",
    "<|im_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
)


def shaped_config(shape: str, tokenizer: Any) -> Qwen2VLConfig:
    """The ``shape``'s config with ``tokenizer``'s special token ids."""
    text, vision = SHAPES[shape]
    endoftext, im_end, image, video, vision_start, vision_end = (
        tokenizer.convert_tokens_to_ids(t) for t in TOKENS
    )
    mrope = text["mrope_section"]
    text_config = {
        **{k: v for k, v in text.items() if k != "mrope_section"},
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope},
        "bos_token_id": endoftext,
        "eos_token_id": im_end,
        "pad_token_id": endoftext,
    }
    vision_config = {
        **vision,
        "hidden_size": text["hidden_size"],
        "mlp_ratio": 4,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    config = Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=vision_start,
        vision_end_token_id=vision_end,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    return config


def parameter_count(shape: str, tokenizer: Any) -> int:
    with torch.device("meta"):
        return sum(
            p.numel() for p in Qwen2VLForConditionalGeneration(shaped_config(shape, tokenizer)).parameters()
        )


def build_model(shape: str, tokenizer: Any, device: str | torch.device, dtype: torch.dtype) -> Any:
    """A random model of ``shape`` on ``device`` (seeded), in eval mode; greedy stops at the end of turn."""
    config = shaped_config(shape, tokenizer)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype)
    text = config.text_config
    model.generation_config = GenerationConfig(
        eos_token_id=[text.eos_token_id, text.pad_token_id],
        pad_token_id=text.pad_token_id,
        bos_token_id=text.bos_token_id,
    )
    return model.eval()


def build_checkpoint(
    shape: str, tiny_dir: Path, output: Path, device: str | torch.device, dtype: torch.dtype
) -> Path:
    """A checkpoint directory: the tiny checkpoint's tokenizer and processor files with a random model of
    ``shape`` (built on ``device``, saved in ``dtype``), loadable like any Qwen2-VL checkpoint."""
    from vrft.models.loading import load_processor

    model = build_model(shape, load_processor(tiny_dir).tokenizer, device, dtype)
    output.mkdir(parents=True)
    for path in tiny_dir.iterdir():
        if path.is_file() and path.name not in ("model.safetensors", "config.json", "generation_config.json"):
            (output / path.name).write_bytes(path.read_bytes())
    model.save_pretrained(output)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return output
