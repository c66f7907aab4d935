"""Load Qwen2-VL / Qwen2.5-VL processors and models the same way for hub ids and local directories.

Real checkpoints (``Qwen/Qwen2-VL-2B-Instruct``) and the tiny offline model of
:mod:`vrft.models.tiny` go through the same three functions, so a test on the tiny model
exercises the code path of a real run.

Why not just ``AutoProcessor``: in transformers 5 the stock ``Qwen2VLProcessor`` always builds a
video processor, and the only Qwen2-VL video processor needs torchvision, which has no usable CPU
build on some machines. Where the stock processor cannot be built, :func:`load_processor` falls
back to an image-only subclass (:class:`Qwen2VLImageOnlyProcessor` /
:class:`Qwen2_5_VLImageOnlyProcessor`) that behaves identically for images and text. Its
``processor_config.json`` names the stock class and carries a video processor entry, so saved
directories stay loadable by plain ``AutoProcessor`` wherever torchvision is installed.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLProcessor,
    Qwen2VLProcessor,
)
from transformers.image_utils import SizeDict

Dtype = Literal["auto", "bfloat16", "float32"]

logger = logging.getLogger(__name__)


class _ImageOnlyMixin:
    """A Qwen-VL processor without the video processor (so without torchvision).

    It keeps the stock class's behaviour for text and images, and saves a ``processor_config.json``
    the stock class can load (its name, and a default video processor entry).
    """

    stock_class: type[ProcessorMixin]

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ):
        # The stock __init__ passes (image_processor, tokenizer, video_processor) positionally;
        # ProcessorMixin pairs them with this class's attributes (image_processor, tokenizer), so
        # the missing video processor is simply not an attribute here.
        self.stock_class.__init__(
            self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs
        )

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()  # type: ignore[misc]
        output["processor_class"] = self.stock_class.__name__
        # The stock class loads its video processor from this entry; its defaults suit Qwen-VL.
        output["video_processor"] = {"video_processor_type": "Qwen2VLVideoProcessor"}
        return output


class Qwen2VLImageOnlyProcessor(_ImageOnlyMixin, Qwen2VLProcessor):
    """Qwen2-VL processor for images and text only; see :class:`_ImageOnlyMixin`."""

    stock_class = Qwen2VLProcessor


class Qwen2_5_VLImageOnlyProcessor(_ImageOnlyMixin, Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor for images and text only; see :class:`_ImageOnlyMixin`."""

    stock_class = Qwen2_5_VLProcessor


IMAGE_ONLY_PROCESSORS: dict[str, type[ProcessorMixin]] = {
    "qwen2_vl": Qwen2VLImageOnlyProcessor,
    "qwen2_5_vl": Qwen2_5_VLImageOnlyProcessor,
}


def model_family(config_or_path: PreTrainedConfig | str | os.PathLike[str]) -> str:
    """The checkpoint's ``model_type``: ``"qwen2_vl"``, ``"qwen2_5_vl"``, or another architecture's.

    Box conventions depend on it (Qwen2-VL: 0-1000 relative, Qwen2.5-VL: absolute pixels), so it is
    read from the checkpoint's config rather than guessed from its name.
    """
    if isinstance(config_or_path, PreTrainedConfig):
        return config_or_path.model_type
    config_dict, _ = PreTrainedConfig.get_config_dict(config_or_path)
    if "model_type" not in config_dict:
        raise ValueError(f"{config_or_path} has no model config with a model_type")
    return config_dict["model_type"]


def load_processor(
    name_or_path: str | os.PathLike[str],
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    *,
    trust_remote_code: bool = False,
) -> ProcessorMixin:
    """The checkpoint's processor, with the image resolution bounds overridden where given.

    The stock processor is used wherever it can be built; for a Qwen-VL checkpoint on a machine
    without torchvision the image-only subclass takes its place. Never returns a bare tokenizer.
    The bounds are set on the image processor itself rather than passed to ``from_pretrained``:
    transformers 5.23 would otherwise keep them in the tokenizer's init kwargs and pass them to
    every image processor call, which is deprecated.
    """
    processor = _stock_or_image_only(name_or_path, trust_remote_code)
    if min_pixels is not None or max_pixels is not None:
        size = dict(processor.image_processor.size)
        size["shortest_edge"] = min_pixels if min_pixels is not None else size["shortest_edge"]
        size["longest_edge"] = max_pixels if max_pixels is not None else size["longest_edge"]
        if size["shortest_edge"] > size["longest_edge"]:
            raise ValueError(f"min_pixels {size['shortest_edge']} exceeds max_pixels {size['longest_edge']}")
        processor.image_processor.size = SizeDict(**size)
    return processor


def _stock_or_image_only(name_or_path: str | os.PathLike[str], trust_remote_code: bool) -> ProcessorMixin:
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        if isinstance(processor, ProcessorMixin):
            return processor
        failure = f"AutoProcessor gave a bare {type(processor).__name__}"
    except (ImportError, OSError, ValueError) as error:
        failure = f"{type(error).__name__}: {error}"
    try:
        image_only = IMAGE_ONLY_PROCESSORS.get(model_family(name_or_path))
    except (OSError, ValueError):
        image_only = None
    if image_only is None:
        raise ValueError(f"cannot build a multimodal processor for {name_or_path}: {failure}")
    logger.info(
        "stock processor for %s unavailable (%s); using %s", name_or_path, failure, image_only.__name__
    )
    return image_only.from_pretrained(name_or_path)


def resolve_dtype(dtype: Dtype | torch.dtype, device: str | torch.device | None = None) -> torch.dtype:
    """``"auto"`` is bfloat16 where the model will run on CUDA and float32 on CPU (bf16 is slow there)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        return torch.bfloat16 if on_cuda else torch.float32
    if dtype in ("bfloat16", "float32"):
        return getattr(torch, dtype)
    raise ValueError(f"unknown dtype {dtype!r}; expected 'auto', 'bfloat16' or 'float32'")


def load_model(
    name_or_path: str | os.PathLike[str],
    dtype: Dtype | torch.dtype = "auto",
    device: str | torch.device | None = None,
    attn_implementation: str = "sdpa",
    *,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """The checkpoint's image-text-to-text model, loaded straight onto ``device`` if one is given.

    ``device=None`` leaves the model on the CPU for a trainer (accelerate) to place; ``"auto"``
    dtype then still picks bfloat16 when CUDA is available, since that is where it will run.
    """
    return AutoModelForImageTextToText.from_pretrained(
        name_or_path,
        dtype=resolve_dtype(dtype, device),
        device_map=str(device) if device is not None else None,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
    )
