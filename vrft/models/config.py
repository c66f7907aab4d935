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

    Parameters:
        name_or_path: The checkpoint: a hub id, a local directory or a ``tiny://`` name (above).
        family: ``qwen2_vl`` or ``qwen2_5_vl``; it decides the box convention. Empty: read from the
            checkpoint's ``config.json`` (its ``model_type``).
        min_pixels: The processor's lower bound on an image's pixels (it resizes images up to it).
        max_pixels: The processor's upper bound on an image's pixels; the authors trained at 401408
            (512 × 28 × 28).
        dtype: Weights' precision; ``auto``: bfloat16 on CUDA, float32 on CPU.
        attn_implementation: transformers' attention kernel (``sdpa``, ``eager``, ``flash_attention_2``).
        trust_remote_code: Let transformers run code shipped with the checkpoint (off: only the
            installed transformers' model classes load).
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
        family = self.name_or_path[len(TINY_SCHEME) :] or "qwen2_vl"
        if family in PRETRAINED_TINY:
            return replace(self, name_or_path=str(shipped_model_dir(family)))
        path = _tiny_cache_dir(family, cache_dir)
        if not (path / "config.json").exists():
            # Imported only to build: it loads transformers' model classes (about 3 s of CPU).
            from vrft.models.tiny import build_tiny_model

            build_tiny_model(path, family=family)
        return replace(self, name_or_path=str(path))

    def local_dir(self, cache_dir: str | Path | None = None) -> Path | None:
        """The local directory this model is read from, found without building anything: where a
        ``tiny://`` model lies (shipped, or in the cache), an existing local path, or ``None`` for a
        hub id. Outputs must lie apart from it (:mod:`vrft.inputs`)."""
        if self.name_or_path.startswith(TINY_SCHEME):
            family = self.name_or_path[len(TINY_SCHEME) :] or "qwen2_vl"
            if family in PRETRAINED_TINY:
                return (
                    Path(__file__).resolve().parent.parent / "resources" / "models" / PRETRAINED_TINY[family]
                )
            return _tiny_cache_dir(family, cache_dir)
        path = Path(self.name_or_path) if self.name_or_path else None
        return path if path is not None and path.exists() else None

    def check_family(self) -> None:
        """Refuse a ``family`` that contradicts the checkpoint's own ``model_type``.

        The family decides how boxes are read (Qwen2-VL: 0-1000 relative, Qwen2.5-VL: absolute
        pixels), so a Qwen2.5-VL checkpoint scored as Qwen2-VL misreads every box without any error.
        Left empty, the family is read from the checkpoint; set, it must agree with a checkpoint of
        a known family (an unknown architecture may name the convention it answers in).
        """
        if not self.family:
            return
        from vrft.models.loading import model_family

        path = self.local_dir()
        if path is None or not (path / "config.json").is_file():
            return
        own = model_family(path)
        if own in FAMILY_CONVENTIONS and own != self.family:
            raise ConfigError(
                f"model.family: {self.family!r}, but the checkpoint {path} is a {own!r} model "
                f"(model_type in {path / 'config.json'}); its boxes would be misread: leave "
                f"model.family empty to use the checkpoint's own, or set it to {own!r}"
            )

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


def _tiny_cache_dir(family: str, cache_dir: str | Path | None = None) -> Path:
    """Where the random tiny model of ``family`` is built (``$VRFT_CACHE_DIR``, ``~/.cache/vrft``)."""
    if family not in ("qwen2_vl", "qwen2_5_vl"):
        known = ", ".join(["qwen2_vl", "qwen2_5_vl", *PRETRAINED_TINY])
        raise ConfigError(f"model.name_or_path: tiny models are {known}; not {family!r}")
    root = Path(cache_dir or os.environ.get("VRFT_CACHE_DIR") or Path.home() / ".cache" / "vrft")
    return root / "models" / f"tiny-{family}"


def shipped_model_dir(name: str) -> Path:
    """The directory of the shipped pre-trained tiny model ``name`` (a key of :data:`PRETRAINED_TINY`)."""
    path = Path(__file__).resolve().parent.parent / "resources" / "models" / PRETRAINED_TINY[name]
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.name_or_path: tiny://{name} is not in this installation ({path} is missing); "
            f"rebuild it with `python tools/pretrain_tiny.py {path}` (in a checkout of vrft)"
        )
    return path
