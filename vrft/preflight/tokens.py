"""Image tokens and prompt lengths, from the model's files alone (no weights).

Image tokens come from the checkpoint's own image processor (transformers'
``Qwen2VLImageProcessorPil``, the class Qwen2-VL and Qwen2.5-VL share): its
``get_number_of_image_patches`` applies ``smart_resize`` (patch 14, merge 2: 28-pixel cells, the area
clamped to ``[min_pixels, max_pixels]``) and the model merges ``merge_size²`` patches into one token,
so the count is the one the processor's ``image_grid_thw`` gives at training time, not a
re-implementation.

Prompt lengths are the chat-templated prompt (the checkpoint's template, else trl's bundled Qwen-VL
template, which is the one Qwen2-VL ships) with its one ``<|image_pad|>`` expanded to the image's
tokens, counted by the checkpoint's tokenizer. A directory without a tokenizer (a config-only
directory such as ``configs/models/qwen2-vl-2b-instruct``) gets an upper bound instead: with
byte-level BPE no token is shorter than one byte, so a text has at most as many tokens as UTF-8
bytes (special tokens count one each); such counts are printed with ``≤``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrft.models.config import ModelConfig
from vrft.models.coords import smart_resize

_SPECIAL = re.compile(r"<\|[a-z_]+\|>")
IMAGE_PAD = "<|image_pad|>"


class ModelFilesUnavailable(Exception):
    """The model's config or processor files cannot be read here (offline hub id, missing files)."""


@dataclass(frozen=True)
class TokenCount:
    """A number of tokens, exact (counted by the tokenizer) or an upper bound."""

    value: int
    exact: bool = True

    def __add__(self, other: TokenCount | int) -> TokenCount:
        if isinstance(other, int):
            return TokenCount(self.value + other, self.exact)
        return TokenCount(self.value + other.value, self.exact and other.exact)

    def __str__(self) -> str:
        return f"{self.value:,}" if self.exact else f"≤ {self.value:,}"


class ModelFiles:
    """A checkpoint's image processor, tokenizer and chat template, read without its weights."""

    def __init__(self, model: ModelConfig) -> None:
        from transformers import AutoTokenizer, PreTrainedConfig, Qwen2VLImageProcessorPil
        from transformers.image_utils import SizeDict

        self.model = model
        path = model.name_or_path
        try:
            self.config, _ = PreTrainedConfig.get_config_dict(path)
            self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise ModelFilesUnavailable(f"{path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
        size = dict(self.image_processor.size)
        size.update(shortest_edge=model.min_pixels, longest_edge=model.max_pixels)
        self.image_processor.size = SizeDict(**size)
        self.patch_size = int(self.image_processor.patch_size)
        self.merge_size = int(self.image_processor.merge_size)
        self.tokenizer: Any = None
        local = Path(path)
        has_tokenizer = not local.is_dir() or any(
            (local / name).is_file() for name in ("tokenizer.json", "vocab.json", "tokenizer.model")
        )
        if has_tokenizer:
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(
                    path, trust_remote_code=model.trust_remote_code
                )
            except (OSError, ValueError):
                self.tokenizer = None
        self.chat_template = self._chat_template(local)

    def _chat_template(self, local: Path) -> str:
        template = getattr(self.tokenizer, "chat_template", None)
        if isinstance(template, str) and template:
            return template
        if (local / "chat_template.jinja").is_file():
            return (local / "chat_template.jinja").read_text(encoding="utf-8")
        from vrft.models.tiny import chat_template

        return chat_template()  # trl's bundled Qwen2.5-VL template: Qwen2-VL's, byte for byte

    @property
    def cell(self) -> int:
        """Pixels per side of one image token's cell (patch × merge)."""
        return self.patch_size * self.merge_size

    def image_tokens(self, width: int, height: int) -> int:
        """The image's tokens as the processor makes them (``image_grid_thw`` product / merge²).

        Raises ``ValueError`` where the processor refuses the image (aspect ratio above 200).
        """
        patches = self.image_processor.get_number_of_image_patches(height, width, {})
        return int(patches) // self.merge_size**2

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` after the processor's resize."""
        height_r, width_r = smart_resize(
            height, width, self.cell, self.model.min_pixels, self.model.max_pixels
        )
        return width_r, height_r

    @property
    def max_image_tokens(self) -> int:
        """The most tokens any image can have under ``max_pixels`` (the resize never exceeds it)."""
        return max(1, self.model.max_pixels // self.cell**2)

    def count_text(self, text: str) -> TokenCount:
        """Tokens of ``text``: the tokenizer's count, or the byte bound (see the module docstring)."""
        if self.tokenizer is not None:
            return TokenCount(len(self.tokenizer(text, add_special_tokens=False)["input_ids"]))
        specials = _SPECIAL.findall(text)
        rest = _SPECIAL.sub("", text)
        return TokenCount(len(specials) + len(rest.encode("utf-8")), exact=False)

    def render(self, user_text: str, system: str = "", completion: str | None = None) -> str:
        """The chat-templated prompt of one image + ``user_text`` (trl's layout, and evaluation's),
        with the assistant's ``completion`` appended when given."""
        from transformers.utils.chat_template_utils import render_jinja_template

        messages: list[dict[str, Any]] = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text}]}
        ]
        if system:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        if completion is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": completion}]})
        rendered, _ = render_jinja_template(
            [messages], chat_template=self.chat_template, add_generation_prompt=completion is None
        )
        return rendered[0]

    def prompt_tokens(self, user_text: str, image_tokens: int, system: str = "") -> TokenCount:
        """Tokens of the whole prompt with the image's tokens in place of its one placeholder."""
        rendered = self.render(user_text, system)
        return self.count_text(rendered) + (image_tokens - rendered.count(IMAGE_PAD))

    def completion_tokens(self, user_text: str, completion: str, system: str = "") -> TokenCount:
        """Tokens the assistant turn adds to the prompt (the SFT target and its end-of-turn)."""
        prompt = self.render(user_text, system)
        whole = self.render(user_text, system, completion)
        if whole.startswith(prompt):
            return self.count_text(whole[len(prompt) :])
        return self.count_text(completion) + 2  # <|im_end|> and the newline after it
