"""The ``model:`` section shared by the training and evaluation stages."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from vrft.config import ConfigError
from vrft.models.coords import FAMILY_CONVENTIONS, BoxConvention, processor_resize_params

TINY_SCHEME = "tiny://"
#: Pre-trained tiny models shipped in ``vrft/resources/models/`` (made by tools/pretrain_tiny.py):
#: ``tiny://<name>`` loads the shipped directory; the random ``tiny://qwen2_vl`` / ``qwen2_5_vl`` are built.
PRETRAINED_TINY = {"qwen2_vl-colours": "tiny-qwen2_vl-colours"}
# The authors' training resolution (Visual-RFT scripts): 401408 = 512 * 28 * 28 pixels.
PAPER_MAX_PIXELS = 401408


@dataclass
class ModelConfig:
    """Which checkpoint, at which resolution and precision.

    ``name_or_path`` is anything ``from_pretrained`` accepts: a hub id (``Qwen/Qwen2-VL-2B-Instruct``)
    or a local directory (a real checkpoint, or one built by ``vrft tiny-model``).
    ``tiny://qwen2_vl`` or ``tiny://qwen2_5_vl`` names the tiny random model that vrft builds offline
    (tests); :meth:`materialized` builds it into a cache directory. ``tiny://qwen2_vl-colours`` is
    the small pre-trained base of the default run, shipped with the package.
    ``family`` is read from the checkpoint's config when left empty; it decides the box convention.
    """

    name_or_path: str = ""
    family: str = ""
    min_pixels: int = 3136
    max_pixels: int = PAPER_MAX_PIXELS
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False

    def validate(self) -> None:
        if self.family and self.family not in FAMILY_CONVENTIONS:
            raise ConfigError(
                f"model.family: {self.family!r} has no known box convention (known: {', '.join(sorted(FAMILY_CONVENTIONS))})"
            )
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ConfigError(
                f"model.min_pixels/max_pixels: need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}"
            )

    def materialized(self, cache_dir: str | Path | None = None) -> ModelConfig:
        """This config with a ``tiny://`` model built (deterministically, < 1 s) and its path filled in.

        The cache directory defaults to ``$VRFT_CACHE_DIR`` or ``~/.cache/vrft``. A shipped
        pre-trained tiny model is used where it lies in the package.
        """
        if not self.name_or_path.startswith(TINY_SCHEME):
            return self
        from vrft.models.tiny import build_tiny_model

        family = self.name_or_path[len(TINY_SCHEME) :] or "qwen2_vl"
        if family in PRETRAINED_TINY:
            return replace(self, name_or_path=str(shipped_model_dir(family)))
        if family not in ("qwen2_vl", "qwen2_5_vl"):
            known = ", ".join(["qwen2_vl", "qwen2_5_vl", *PRETRAINED_TINY])
            raise ConfigError(f"model.name_or_path: tiny models are {known}; not {family!r}")
        root = Path(cache_dir or os.environ.get("VRFT_CACHE_DIR") or Path.home() / ".cache" / "vrft")
        path = root / "models" / f"tiny-{family}"
        if not (path / "config.json").exists():
            build_tiny_model(path, family=family)
        return replace(self, name_or_path=str(path))

    def resolved_family(self) -> str:
        """``family``, or the checkpoint's ``model_type`` when not set."""
        if self.family:
            return self.family
        from vrft.models.loading import model_family

        return model_family(self.name_or_path)

    def convention(self, processor: Any = None) -> BoxConvention:
        """The box convention of this model, sized like ``processor`` (or this config's pixel bounds)."""
        params: dict[str, Any] = {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels}
        if processor is not None:
            params = processor_resize_params(processor)
        return BoxConvention.for_family(self.resolved_family(), **params)

    def load_processor(self) -> Any:
        from vrft.models.loading import load_processor

        return load_processor(
            self.name_or_path, self.min_pixels, self.max_pixels, trust_remote_code=self.trust_remote_code
        )

    def load_model(self, device: Any = None) -> Any:
        from vrft.models.loading import load_model

        return load_model(
            self.name_or_path,
            self.dtype,
            device,
            self.attn_implementation,
            trust_remote_code=self.trust_remote_code,
        )


def shipped_model_dir(name: str) -> Path:
    """The directory of the shipped pre-trained tiny model ``name`` (a key of :data:`PRETRAINED_TINY`)."""
    path = Path(__file__).resolve().parent.parent / "resources" / "models" / PRETRAINED_TINY[name]
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.name_or_path: tiny://{name} is not in this installation ({path} is missing); "
            f"rebuild it with `python tools/pretrain_tiny.py {path}` (in a checkout of vrft)"
        )
    return path
