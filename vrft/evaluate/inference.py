"""Batched generation for evaluation: one image + one user prompt per request.

The authors evaluated with batch size 1 (their issue #175: slow). Here requests are grouped into
left-padded batches (optionally ordered by image size so a batch needs little padding), run through
``model.generate`` once per batch, and returned in request order, so the batch size changes speed
but not, under greedy decoding, the answers. Images go through the model's own processor (its
resize rule and pixel bounds) and prompts through its chat template with
``add_generation_prompt=True``, exactly as at training time.

A vLLM backend is used when asked for and importable; it is never a dependency.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image
from tqdm.auto import tqdm

from vrft.config import ConfigError
from vrft.evaluate.config import EvaluateConfig
from vrft.models.config import ModelConfig
from vrft.prompts import SYSTEM_PROMPTS

logger = logging.getLogger(__name__)

ImageLoader = Callable[[int], Image.Image]


@dataclass(frozen=True)
class Request:
    """One generation: the image of eval row ``row`` and a user prompt.

    ``pixels`` (original width × height) orders requests into similar-sized batches without
    decoding any image.
    """

    key: str
    row: int
    prompt: str
    pixels: int = 0


class Generator(Protocol):
    def generate(self, requests: Sequence[Request], load_image: ImageLoader, desc: str = "") -> list[str]:
        """Completions (assistant text only) in the order of ``requests``."""
        ...


def chat_prompt(processor: Any, text: str, system: str = "") -> str:
    """The chat-templated prompt for one image followed by ``text`` (the layout trl trains with),
    after a system turn when ``system`` is given (the authors' LISA evaluation uses the R1 one)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    if system:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def batch_order(requests: Sequence[Request], sort_by_size: bool) -> list[int]:
    """Indices of ``requests`` in the order they are batched: largest images first when sorting
    (an early out-of-memory error beats a late one), request order otherwise.

    >>> batch_order([Request("a", 0, "x", 10), Request("b", 1, "x", 30), Request("c", 2, "x", 20)], True)
    [1, 2, 0]
    """
    order = list(range(len(requests)))
    if sort_by_size:
        order.sort(key=lambda i: (-requests[i].pixels, -len(requests[i].prompt), i))
    return order


class HFGenerator:
    """``model.generate`` over left-padded batches."""

    def __init__(self, model: Any, processor: Any, config: EvaluateConfig) -> None:
        self.model = model.eval()
        self.processor = processor
        self.config = config
        # Decoder-only batching needs the padding on the left, whatever the checkpoint's default.
        processor.tokenizer.padding_side = "left"
        self.generation_kwargs: dict[str, Any] = {"max_new_tokens": config.max_new_tokens}
        if config.greedy:
            # Explicit: Qwen2-VL-Instruct's generation_config samples (top_k=1) by default.
            self.generation_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            self.generation_kwargs.update(
                do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=None
            )
        if config.repetition_penalty is not None:
            self.generation_kwargs["repetition_penalty"] = config.repetition_penalty

    @torch.inference_mode()
    def _generate_batch(self, images: list[Image.Image], prompts: list[str]) -> list[str]:
        system = SYSTEM_PROMPTS[self.config.system_prompt]
        inputs = self.processor(
            text=[chat_prompt(self.processor, p, system) for p in prompts],
            images=images,
            padding=True,
            return_tensors="pt",
        ).to(self.model.device)
        output = self.model.generate(**inputs, **self.generation_kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)

    def generate(self, requests: Sequence[Request], load_image: ImageLoader, desc: str = "") -> list[str]:
        if not self.config.greedy:
            torch.manual_seed(self.config.seed)
        order = batch_order(requests, self.config.sort_by_size)
        size = self.config.batch_size
        results: list[str] = [""] * len(requests)
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        for batch in tqdm(batches, desc=desc or "generating", unit="batch", disable=not self.config.progress):
            images = [load_image(requests[i].row).convert("RGB") for i in batch]
            texts = self._generate_batch(images, [requests[i].prompt for i in batch])
            for i, text in zip(batch, texts, strict=True):
                results[i] = text
        return results


class VLLMGenerator:
    """vLLM offline inference (continuous batching). Used only where vllm is installed."""

    CHUNK = 512  # requests handed to vLLM at once: bounds the decoded images held in memory

    def __init__(self, model_config: ModelConfig, processor: Any, config: EvaluateConfig) -> None:
        from vllm import LLM, SamplingParams

        self.processor = processor
        self.config = config
        self.llm = LLM(
            model=model_config.name_or_path,
            dtype=model_config.dtype,
            seed=config.seed,
            limit_mm_per_prompt={"image": 1},
            mm_processor_kwargs={
                "min_pixels": model_config.min_pixels,
                "max_pixels": model_config.max_pixels,
            },
            gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            trust_remote_code=model_config.trust_remote_code,
        )
        self.params = SamplingParams(
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_new_tokens,
            seed=config.seed,
            repetition_penalty=config.repetition_penalty if config.repetition_penalty is not None else 1.0,
        )

    def generate(self, requests: Sequence[Request], load_image: ImageLoader, desc: str = "") -> list[str]:
        results: list[str] = []
        chunks = [requests[i : i + self.CHUNK] for i in range(0, len(requests), self.CHUNK)]
        for chunk in tqdm(
            chunks, desc=desc or "generating (vLLM)", unit="chunk", disable=not self.config.progress
        ):
            system = SYSTEM_PROMPTS[self.config.system_prompt]
            inputs = [
                {
                    "prompt": chat_prompt(self.processor, r.prompt, system),
                    "multi_modal_data": {"image": load_image(r.row).convert("RGB")},
                }
                for r in chunk
            ]
            outputs = self.llm.generate(inputs, self.params, use_tqdm=False)
            results.extend(o.outputs[0].text for o in outputs)
        return results


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``vllm`` where importable, else ``hf``; an explicit ``vllm`` without vllm is an error."""
    if backend == "auto":
        return "vllm" if vllm_available() else "hf"
    if backend == "vllm" and not vllm_available():
        raise ConfigError(
            "evaluate.backend: 'vllm' needs the vllm package, which is not installed "
            "(install it on the GPU machine, or use backend: hf / auto)"
        )
    return backend


def make_generator(
    config: EvaluateConfig, model_config: ModelConfig, processor: Any
) -> tuple[Generator, str]:
    """The generator for ``config.backend`` and the backend's resolved name."""
    backend = resolve_backend(config.backend)
    if backend == "vllm":
        return VLLMGenerator(model_config, processor, config), backend
    model = model_config.load_model(resolve_device(config.device))
    return HFGenerator(model, processor, config), backend
