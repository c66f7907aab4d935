"""Open the source a :class:`~vrft.data.config.SourceConfig` describes.

The synthetic kinds are resolved here and only here: ``shapes`` generates a COCO-format dataset
(``shapes_classification`` an image folder) into ``path`` — or, when ``path`` is empty, into
``$VRFT_CACHE_DIR`` (default ``~/.cache/vrft``) under a name derived from the generator
parameters — and then opens it with the ordinary COCO / image-folder reader. A ``shapes.json``
stamp records the parameters; the files are reused while they match and regenerated (atomically)
when they do not. A non-empty directory without the stamp is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from vrft.data.classification import load_hf, load_image_folder, load_manifest
from vrft.data.coco import load_coco
from vrft.data.common import Source
from vrft.data.config import DatasetConfig, SourceConfig
from vrft.data.errors import InvalidFileError
from vrft.data.lisa import load_lisa
from vrft.data.lvis import load_lvis
from vrft.data.remote import current_mirror, is_remote, remote_fields
from vrft.data.shapes import generate_shapes_classification, generate_shapes_coco
from vrft.io import atomic_directory, atomic_write_text, dumps_deterministic
from vrft.paper_files import resolve_path

STAMP = "shapes.json"
GENERATOR_VERSION = 1  # bump when the generator's output changes, so caches are regenerated


def cache_root() -> Path:
    return Path(os.environ.get("VRFT_CACHE_DIR") or Path.home() / ".cache" / "vrft")


def _shapes_params(cfg: SourceConfig) -> dict[str, Any]:
    params = {
        "kind": cfg.kind,
        "n_images": cfg.n_images,
        "image_size": list(cfg.image_size),
        "seed": cfg.generator_seed,
        "version": GENERATOR_VERSION,
    }
    if cfg.kind == "shapes_classification":
        params.update(label=cfg.label, shape_size=[float(v) for v in cfg.shape_size])
    return params


def _shapes_directory(cfg: SourceConfig) -> Path:
    if cfg.path:
        return Path(cfg.path)
    digest = hashlib.sha256(dumps_deterministic(_shapes_params(cfg)).encode()).hexdigest()[:12]
    return cache_root() / f"{cfg.kind}-{digest}"


def input_paths(cfg: SourceConfig, where: str) -> dict[str, Path]:
    """The files and directories a source reads, named by their config key (``train.images``).

    An output must lie apart from all of them: see :func:`vrft.io.check_output_apart`.
    """
    if cfg.kind in ("shapes", "shapes_classification"):
        return {f"{where}.path (generated {cfg.kind} files)": _shapes_directory(cfg)}
    paths = {
        f"{where}.{key}": resolve_path(getattr(cfg, key))
        for key in ("annotations", "images", "path")
        if getattr(cfg, key) and not is_remote(getattr(cfg, key))  # s3:// is never a local output
    }
    if cfg.kind == "manifest" and not cfg.images and not is_remote(cfg.annotations):
        paths[f"{where}.images (default: the manifest's directory)"] = resolve_path(cfg.annotations).parent
    if cfg.kind == "hf" and not Path(cfg.path).exists():
        paths.pop(f"{where}.path", None)  # a hub name, not a local path
    return paths


def materialize_shapes(cfg: SourceConfig) -> Path:
    """Generate (or reuse) the synthetic files for ``cfg``; return their directory."""
    params = _shapes_params(cfg)
    directory = _shapes_directory(cfg)
    stamp = directory / STAMP
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text(encoding="utf-8")) == params:
                return directory
        except (OSError, json.JSONDecodeError):
            pass
    elif directory.exists() and any(directory.iterdir()):
        raise InvalidFileError(
            directory,
            "",
            "",
            f"exists and is not a generated shapes dataset (no {STAMP}); choose an empty or new `path`",
        )
    with atomic_directory(directory, overwrite=True) as tmp:
        if cfg.kind == "shapes":
            generate_shapes_coco(tmp, cfg.n_images, cfg.generator_seed, cfg.image_size)
        else:
            generate_shapes_classification(
                tmp,
                cfg.n_images,
                cfg.generator_seed,
                cfg.image_size,
                label=cfg.label,
                shape_size=cfg.shape_size,
            )
        atomic_write_text(tmp / STAMP, dumps_deterministic(params))
    return directory


def open_source(cfg: SourceConfig, dataset: DatasetConfig, *, show_progress: bool) -> Source:
    """Read and validate one source; every problem is a DatasetError naming file, record and field.

    ``s3://`` fields are read through the mirror of the build in progress (:mod:`vrft.data.remote`).
    """
    remote = remote_fields(cfg)
    if not remote:
        return _open_local(cfg, dataset, show_progress=show_progress)
    mirror = current_mirror()
    if mirror is None:
        raise ValueError("s3:// sources are read inside a dataset build (vrft.data.build_dataset)")
    source = _open_local(mirror.stage(cfg, show_progress=show_progress), dataset, show_progress=show_progress)
    source.fetch = mirror.ensure
    if cfg.kind == "hf":  # what the manifest and errors name: the S3 prefix, not the mirror
        source.path = cfg.path  # type: ignore[attr-defined]
    return source


def _open_local(cfg: SourceConfig, dataset: DatasetConfig, *, show_progress: bool) -> Source:
    name = cfg.display_name
    tol = dataset.box_tolerance
    if cfg.kind == "shapes":
        directory = materialize_shapes(cfg)
        return load_coco(
            directory / "annotations.json",
            directory / "images",
            name=name,
            tolerance=tol,
            show_progress=show_progress,
            kind="shapes",
        )
    if cfg.kind == "shapes_classification":
        return load_image_folder(materialize_shapes(cfg), name=name, kind="shapes_classification")
    if cfg.kind == "coco":
        return load_coco(
            Path(cfg.annotations), Path(cfg.images), name=name, tolerance=tol, show_progress=show_progress
        )
    if cfg.kind == "lvis":
        return load_lvis(
            Path(cfg.annotations),
            Path(cfg.images),
            name=name,
            tolerance=tol,
            show_progress=show_progress,
            exhaustive_only=dataset.lvis_exhaustive_only,
        )
    if cfg.kind == "lisa":
        return load_lisa(
            Path(cfg.path), name=name, tolerance=tol, show_progress=show_progress, box_from=dataset.lisa_box
        )
    if cfg.kind == "image_folder":
        return load_image_folder(Path(cfg.path), name=name)
    if cfg.kind == "manifest":
        return load_manifest(
            resolve_path(cfg.annotations),
            Path(cfg.images) if cfg.images else None,
            name=name,
            file_column=cfg.file_column,
            label_column=cfg.label_column,
        )
    if cfg.kind == "hf":
        return load_hf(
            cfg.path, cfg.split, name=name, image_column=cfg.image_column, label_column=cfg.label_column
        )
    raise AssertionError(f"unhandled source kind {cfg.kind!r}")  # SourceConfig.kind is a checked Literal
