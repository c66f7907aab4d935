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

import json
import logging
import os
import struct
from pathlib import Path
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

#: What a checkpoint directory must hold, each as one of these files (sharded weights come with an
#: index): without them loading fails with a message that names no file.
_NEEDED_FILES = {
    "weights": ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"),
    "tokenizer": ("tokenizer.json", "vocab.json"),
    "image processor settings": ("processor_config.json", "preprocessor_config.json"),
}
#: Text files of a checkpoint that tokenizers and processors decode as UTF-8.
_TEXT_SUFFIXES = (".jinja", ".txt")
#: A safetensors header larger than this is not a header (safetensors itself refuses above 100 MB).
_MAX_SAFETENSORS_HEADER = 100_000_000


class CheckpointError(ValueError):
    """A checkpoint directory is unusable; the message names the file and what is wrong with it."""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _check_json(path: Path) -> None:
    try:
        json.loads(_read(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); the checkpoint is damaged") from None
    except RecursionError:
        raise CheckpointError(
            f"{path}: not valid JSON (nested too deeply); the checkpoint is damaged"
        ) from None


def _check_safetensors(path: Path) -> None:
    """The header parses and its tensors cover the file exactly (what a save cut short breaks)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            (header_len,) = struct.unpack("<Q", prefix) if len(prefix) == 8 else (-1,)
            if not 0 < header_len <= min(_MAX_SAFETENSORS_HEADER, size - 8):
                raise CheckpointError(
                    f"{path}: not a complete safetensors file ({size} bytes, header length "
                    f"{header_len if header_len >= 0 else 'missing'}); the checkpoint is damaged "
                    "(a save cut short?)"
                )
            header = json.loads(f.read(header_len).decode("utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(
            f"{path}: the safetensors header is not valid JSON; the checkpoint is damaged"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a mapping; the checkpoint is damaged")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise CheckpointError(f"{path}: tensor {name!r} has no data_offsets; the checkpoint is damaged")
        end = max(end, offsets[1])
    data = size - 8 - header_len
    if end != data:
        raise CheckpointError(
            f"{path}: truncated or padded: its tensors need {end} bytes of data, the file holds {data}; "
            "the checkpoint is damaged (a save cut short?)"
        )


def _check_shards(index: Path) -> None:
    """Every shard a ``*.index.json`` names is there."""
    weight_map = json.loads(_read(index).decode("utf-8")).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: no weight_map; the checkpoint is damaged")
    for shard in sorted(set(map(str, weight_map.values()))):
        if "/" in shard or shard.startswith(".") or not (index.parent / shard).is_file():
            raise CheckpointError(f"{index}: names the shard {shard!r}, which is not in {index.parent}")


def check_checkpoint(name_or_path: str | os.PathLike[str]) -> None:
    """Refuse a damaged local checkpoint directory with one line naming the file, before loading it.

    A hub id (not a local path) is left to ``from_pretrained``. A directory written by vrft's
    training carries a ``manifest.json``: every file is checked against it (size and SHA-256).
    Any checkpoint directory must hold a readable ``config.json``, weights, a tokenizer, the image
    processor's settings and a chat template; its JSON files must parse, its text files decode, and
    each safetensors file's header must parse and cover the file exactly — which is what a save cut
    short (or a copy interrupted) breaks, and what transformers otherwise reports as a long
    traceback without the file's name.
    """
    from vrft.io import MANIFEST_NAME, verify_manifest

    path = Path(name_or_path)
    if not path.exists():
        return
    if not path.is_dir():
        raise CheckpointError(f"{path}: a checkpoint is a directory (config.json and weights), not a file")
    if (path / MANIFEST_NAME).is_file():
        verify_manifest(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{path / 'config.json'}: missing; a checkpoint directory holds config.json and weights"
        )
    for needed, names in _NEEDED_FILES.items():
        if not any((path / name).is_file() for name in names):
            raise CheckpointError(
                f"{path / names[0]} (or {', '.join(names[1:])}): missing; a checkpoint needs its {needed}"
            )
    for file in sorted(path.iterdir()):
        if not file.is_file():
            continue
        if file.suffix == ".json":
            _check_json(file)
            if file.name.endswith(".index.json"):
                _check_shards(file)
        elif file.suffix == ".safetensors":
            _check_safetensors(file)
        elif file.suffix in _TEXT_SUFFIXES:
            try:
                _read(file).decode("utf-8")
            except UnicodeDecodeError:
                raise CheckpointError(f"{file}: not UTF-8 text; the checkpoint is damaged") from None
    if not _has_chat_template(path):
        raise CheckpointError(
            f"{path / 'chat_template.jinja'}: missing; a checkpoint needs its chat template (every prompt "
            "is rendered with it): chat_template.jinja, chat_template.json or a chat_template entry in "
            "tokenizer_config.json"
        )


def _has_chat_template(path: Path) -> bool:
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    for name in ("tokenizer_config.json", "processor_config.json", "preprocessor_config.json"):
        if (path / name).is_file():
            data = json.loads(_read(path / name).decode("utf-8"))
            if isinstance(data, dict) and data.get("chat_template"):
                return True
    return False


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
    _check_chat_template(processor, name_or_path)
    if min_pixels is not None or max_pixels is not None:
        size = dict(processor.image_processor.size)
        size["shortest_edge"] = min_pixels if min_pixels is not None else size["shortest_edge"]
        size["longest_edge"] = max_pixels if max_pixels is not None else size["longest_edge"]
        if size["shortest_edge"] > size["longest_edge"]:
            raise ValueError(f"min_pixels {size['shortest_edge']} exceeds max_pixels {size['longest_edge']}")
        processor.image_processor.size = SizeDict(**size)
    return processor


def _check_chat_template(processor: ProcessorMixin, name_or_path: str | os.PathLike[str]) -> None:
    """Render one prompt now: a damaged or empty template fails here, naming its file, rather than
    inside a trainer or the first evaluation batch."""
    probe = [{"role": "user", "content": [{"type": "text", "text": "?"}]}]
    try:
        processor.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # noqa: BLE001 - jinja2's errors, or ValueError for no template at all
        path = Path(name_or_path)
        names = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")
        where = next((path / n for n in names if (path / n).is_file()), f"{name_or_path} (its chat template)")
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{where}: the chat template does not render a prompt ({type(exc).__name__}: {first}); "
            "the checkpoint is damaged"
        ) from None


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
