"""Stage 1 entry point: :func:`build_dataset` turns a source into an experiment's train/eval sets.

Order of work: resolve the preset, read and validate the sources (nothing written yet), choose
the samples, then — inside :func:`vrft.io.atomic_directory` — read the images, save the
``DatasetDict`` and write ``manifest.json``. Any error leaves nothing at ``output_dir``.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from datasets.table import InMemoryTable

from vrft.config import ConfigError, to_dict
from vrft.data.classification import ClassificationSource, LabelMap
from vrft.data.classnames import CLASS_LISTS, ClassList, authors_class_list, normalize_label
from vrft.data.coco import Category, DetectionSource
from vrft.data.common import LoadedImage, Source, id_sort_key, progress
from vrft.data.config import DatasetConfig
from vrft.data.errors import EmptySourceError, InvalidValueError, UnknownCategoryError
from vrft.data.lisa import GroundingSource
from vrft.data.lvis import LvisSource
from vrft.data.presets import PRESETS
from vrft.data.remote import with_source_mirror
from vrft.data.sampling import (
    Selection,
    classification_split,
    detection_eval,
    detection_train,
    grounding_split,
)
from vrft.data.schema import COLUMNS, EVAL_GROUND_TRUTH, features
from vrft.data.sources import input_paths, open_source
from vrft.io import atomic_directory, check_output_apart, dumps_deterministic, write_manifest

MANIFEST_FORMAT = "vrft.dataset/1"


@dataclass
class DatasetBuildResult:
    output_dir: Path
    manifest: dict[str, Any]
    num_rows: dict[str, int]  # split -> rows


@dataclass
class Plan:
    """The config with its preset applied: what to build, independent of any source."""

    task: str
    mode: str
    categories: list[str]
    categories_from: str  # for error messages: "preset 'coco_8'" or "the config"
    eval_categories: list[str]
    eval_categories_from: str
    eval_categories_key: str  # "eval_categories", or "categories" when eval uses the train categories
    noun: str
    class_list: ClassList | None


def resolve_plan(config: DatasetConfig) -> Plan:
    """Apply the preset: it fills ``categories``, ``eval_categories``, ``mode`` and ``noun`` left empty."""
    preset = PRESETS.get(config.preset)
    origin = f"preset {config.preset!r}" if preset else "the config"
    categories, categories_from = list(config.categories), "the config"
    if not categories and preset:
        categories, categories_from = list(preset.categories), origin
    eval_categories, eval_from, eval_key = list(config.eval_categories), "the config", "eval_categories"
    if not eval_categories and preset and preset.eval_categories:
        eval_categories, eval_from = list(preset.eval_categories), origin
    if not eval_categories:
        eval_categories, eval_from, eval_key = list(categories), categories_from, "categories"
    mode = config.mode or (preset.mode if preset else "k_shot")
    task = config.task
    if task != "detection":
        detection_only = {
            "mode": mode == "ovd",
            "negative_ratio": config.negative_ratio > 0,
            "lvis_frequencies": bool(config.lvis_frequencies),
            "eval_categories": eval_categories != categories,
        }
        for key, used in detection_only.items():
            if used:
                raise ConfigError(f"{key}: only applies to detection sources, and this is a {task} source")
    if task == "grounding" and (categories or config.aliases):
        raise ConfigError("categories/aliases: grounding samples have no categories")
    noun = config.noun or (preset.noun if preset else "")
    if task == "classification" and not noun:
        raise ConfigError(
            "noun: classification needs the prompt noun (plant, pet, aircraft, car, ...) or a preset"
        )
    class_list = CLASS_LISTS[preset.class_list] if preset and preset.class_list else None
    if class_list is not None and config.class_names == "authors":
        # The authors' wording as names, vrft's as aliases: `categories` written either way still match.
        class_list = authors_class_list(preset.class_list)
    return Plan(
        task, mode, categories, categories_from, eval_categories, eval_from, eval_key, noun, class_list
    )


# -- choosing samples per task ----------------------------------------------------------------------


def _excluded(eval_src: Source, train_src: Source, train: Selection) -> set[Any]:
    """Ids of eval-source images that the train split uses (same file, possibly another source)."""
    if eval_src is train_src:
        return {s.image.id for s in train.samples}
    keys = train.image_keys()
    return {ref.id for ref in eval_src.refs() if eval_src.image_key(ref) in keys}


def _categories(src: DetectionSource, names: list[str], origin: str, key: str) -> list[Category]:
    out = []
    for i, name in enumerate(names):
        cat = src.category_named(name)
        if cat is None:
            close = difflib.get_close_matches(name, src.category_names(), n=3)
            hint = f" (close: {', '.join(map(repr, close))})" if close else ""
            raise UnknownCategoryError(
                src.file,
                f"{key}[{i}] of {origin}",
                "name",
                f"{name!r} matches no category name in this file{hint}",
            )
        out.append(cat)
    return out


def _all_categories(src: DetectionSource, config: DatasetConfig) -> list[str]:
    if config.lvis_frequencies:
        if not isinstance(src, LvisSource):
            raise ConfigError("lvis_frequencies: only an LVIS source has category frequencies")
        return src.names_with_frequency(list(config.lvis_frequencies))
    return src.category_names()


def _aliases(
    names: list[str], known: dict[str, tuple[str, ...]], config: DatasetConfig
) -> dict[str, tuple[str, ...]]:
    for key in config.aliases:
        if key not in names:
            raise ConfigError(f"aliases.{key}: not a category/class of this experiment")
    return {n: tuple(dict.fromkeys((*known.get(n, ()), *config.aliases.get(n, ())))) for n in names}


def _detection(
    config: DatasetConfig, plan: Plan, train_src: Source, eval_src: Source
) -> tuple[Selection, Selection]:
    assert isinstance(train_src, DetectionSource) and isinstance(eval_src, DetectionSource)
    names = plan.categories or _all_categories(train_src, config)
    cats = _categories(train_src, names, plan.categories_from, "categories")
    eval_names = plan.eval_categories or names
    eval_cats = _categories(eval_src, eval_names, plan.eval_categories_from, plan.eval_categories_key)
    known = {c.name: c.aliases for c in (*cats, *eval_cats)}
    aliases = _aliases(list(dict.fromkeys([*names, *eval_names])), known, config)
    train = detection_train(
        train_src,
        cats,
        mode=plan.mode,
        shots=config.shots,
        ovd_annotations=config.ovd_annotations,
        negative_ratio=config.negative_ratio,
        seed=config.seed,
        on_insufficient=config.on_insufficient,
        aliases=aliases,
    )
    excluded = _excluded(eval_src, train_src, train)
    evaluation = detection_eval(
        eval_src,
        eval_cats,
        cap=config.eval_max_per_category,
        seed=config.seed,
        excluded=excluded,
        aliases=aliases,
        all_images=eval_src is not train_src,
    )
    evaluation.notes["excluded_train_images"] = len(excluded)
    return train, evaluation


def _class_names(config: DatasetConfig, plan: Plan, sources: list[ClassificationSource]) -> list[str]:
    """The class list labels index into: the preset's, else ``categories`` (int labels), else the labels."""
    if plan.class_list is not None:
        return list(plan.class_list.classes)
    for src in sources:
        for entry in src.entries:
            if not isinstance(entry.label, str):
                if config.categories:
                    return list(config.categories)
                raise InvalidValueError(
                    src.file,
                    entry.image.record,
                    src.label_field,
                    f"integer label {entry.label!r} needs a class list: set a preset, or "
                    "`categories` in label order",
                )
    unique: dict[str, str] = {}
    for src in sources:
        for entry in src.entries:
            unique.setdefault(normalize_label(str(entry.label)), str(entry.label).strip())
    return sorted(unique.values(), key=lambda n: (normalize_label(n), n))


def _classification(
    config: DatasetConfig, plan: Plan, train_src: Source, eval_src: Source
) -> tuple[Selection, Selection]:
    assert isinstance(train_src, ClassificationSource) and isinstance(eval_src, ClassificationSource)
    sources = [train_src] if eval_src is train_src else [train_src, eval_src]
    classes = _class_names(config, plan, sources)
    known = dict(plan.class_list.aliases) if plan.class_list else {}
    aliases = _aliases(classes, known, config)
    maps = {}
    for src, src_cfg in ((train_src, config.train), (eval_src, config.eval or config.train)):
        label_map = LabelMap(classes, aliases, base=src_cfg.label_base)
        maps[id(src)] = [
            label_map.index(e.label, src.file, e.image.record, src.label_field) for e in src.entries
        ]
    lookup = LabelMap(classes, aliases, base=0)
    requested = []
    for i, name in enumerate(plan.categories):
        try:
            requested.append(
                lookup.index(name, train_src.file, f"categories[{i}] of {plan.categories_from}", "class")
            )
        except UnknownCategoryError:
            close = difflib.get_close_matches(name, classes, n=3)
            raise UnknownCategoryError(
                train_src.file,
                f"categories[{i}] of {plan.categories_from}",
                "class",
                f"{name!r} is not a class of this source"
                + (f" (close: {', '.join(map(repr, close))})" if close else ""),
            ) from None
    requested = requested or list(range(len(classes)))
    common = dict(seed=config.seed, noun=plan.noun, aliases=aliases)
    train = classification_split(
        train_src,
        maps[id(train_src)],
        classes,
        requested,
        shots=config.shots,
        split="train",
        on_insufficient=config.on_insufficient,
        excluded=set(),
        **common,
    )
    excluded = _excluded(eval_src, train_src, train)
    evaluation = classification_split(
        eval_src,
        maps[id(eval_src)],
        classes,
        requested,
        shots=config.eval_max_per_category,
        split="eval",
        on_insufficient="use_all",
        excluded=excluded,
        **common,
    )
    evaluation.notes["excluded_train_images"] = len(excluded)
    return train, evaluation


def _grounding(
    config: DatasetConfig, plan: Plan, train_src: Source, eval_src: Source
) -> tuple[Selection, Selection]:
    assert isinstance(train_src, GroundingSource) and isinstance(eval_src, GroundingSource)
    train = grounding_split(
        train_src,
        shots=config.shots,
        seed=config.seed,
        split="train",
        on_insufficient=config.on_insufficient,
        excluded=set(),
    )
    excluded = _excluded(eval_src, train_src, train)
    evaluation = grounding_split(
        eval_src,
        shots=config.eval_max_per_category,
        seed=config.seed,
        split="eval",
        on_insufficient="use_all",
        excluded=excluded,
    )
    evaluation.notes["excluded_train_images"] = len(excluded)
    return train, evaluation


# -- writing --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _datasets_progress(enabled: bool) -> Iterator[None]:
    """``datasets`` has its own global progress bars (save_to_disk); follow ``progress``."""
    was_enabled = datasets.is_progress_bar_enabled()
    if was_enabled and not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            datasets.enable_progress_bars()


def _to_dataset(
    sel: Selection, split: str, task: str, config: DatasetConfig, show_progress: bool, fingerprint_seed: str
) -> datasets.Dataset:
    feats = features(embed_images=config.load_images)
    rows: list[tuple[Any, ...]] = []  # in COLUMNS order
    loaded: dict[tuple[int, Any], LoadedImage] = {}  # an image used by several rows is read once
    desc = f"{'loading' if config.load_images else 'listing'} {split} images"
    for s in progress(sel.samples, show_progress, desc):
        key = (id(s.source), s.image.id)
        image = loaded.get(key)
        if image is None:
            image = s.source.load_image(s.image, load=config.load_images, verify=config.verify_images)
            loaded[key] = image
        image_id = str(s.image.id)
        rows.append(
            (
                image.value,
                image_id,
                s.image.file_name,
                image.width,
                image.height,
                task,
                s.category,
                s.category_id,
                s.gt_boxes,
                list(s.aliases),
                s.noun,
                s.instruction,
                s.source.name,
            )
        )
    columns = {name: list(values) for name, values in zip(COLUMNS, zip(*rows))}
    table = pa.Table.from_pydict(columns, schema=feats.arrow_schema)
    info = datasets.DatasetInfo(
        description=f"vrft {task} dataset ({split} split), built by vrft dataset build", features=feats
    )
    # datasets' fingerprint (cache identity) is random for in-memory tables; derive it from what
    # determines the content (config + source file hashes) so the saved state.json is reproducible.
    fingerprint = hashlib.sha256(f"{fingerprint_seed}\x00{split}".encode()).hexdigest()[:16]
    return datasets.Dataset(
        InMemoryTable(table), info=info, split=datasets.NamedSplit(split), fingerprint=fingerprint
    )


def _split_summary(sel: Selection) -> dict[str, Any]:
    ids = sorted({s.image.id for s in sel.samples}, key=id_sort_key)
    summary: dict[str, Any] = {
        "rows": len(sel.samples),
        "images": len(ids),
        "positives": sel.positives,
        "negatives": sel.negatives,
        "image_ids": [str(i) for i in ids],
    }
    if sel.shortfalls:
        summary["shortfalls"] = sel.shortfalls
    summary.update(sel.notes)
    return summary


@with_source_mirror
def build_dataset(
    config: DatasetConfig, output_dir: str | Path, *, progress: bool = True, overwrite: bool = False
) -> DatasetBuildResult:
    """Build ``output_dir`` (a ``DatasetDict`` with ``train`` and ``eval`` + ``manifest.json``).

    Deterministic: the same config (including ``seed``) and source files give byte-identical
    output. Raises :class:`~vrft.data.errors.DatasetError` subclasses for bad source data,
    :class:`~vrft.config.ConfigError` for inconsistent settings, ``FileExistsError`` if
    ``output_dir`` exists and ``overwrite`` is false, :class:`~vrft.io.OutputOverlapError` if
    ``output_dir`` is, contains or lies inside a source file or directory (``overwrite`` would
    delete the source); in every case nothing is written.
    """
    output_dir = Path(output_dir)
    inputs = input_paths(config.train, "train")
    if config.eval is not None:
        inputs.update(input_paths(config.eval, "eval"))
    check_output_apart(output_dir, inputs)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir}: already exists (remove it, or pass overwrite)")
    plan = resolve_plan(config)
    train_src = open_source(config.train, config, show_progress=progress)
    eval_src = open_source(config.eval, config, show_progress=progress) if config.eval else train_src
    choose_samples = {"detection": _detection, "classification": _classification, "grounding": _grounding}
    train, evaluation = choose_samples[plan.task](config, plan, train_src, eval_src)
    for split, sel, src in (("train", train, train_src), ("eval", evaluation, eval_src)):
        if not sel.samples:
            raise EmptySourceError(
                src.file,
                "",
                "",
                f"no {split} samples for the requested categories"
                + (" once the train images are removed" if split == "eval" else ""),
            )
    config_dict = to_dict(config)
    sources = {
        "train": train_src.source_hashes(),
        "eval": eval_src.source_hashes() if eval_src is not train_src else "train",
    }
    fingerprint_seed = dumps_deterministic({"config": config_dict, "sources": sources})
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        dataset = datasets.DatasetDict(
            {
                split: _to_dataset(sel, split, plan.task, config, progress, fingerprint_seed)
                for split, sel in (("train", train), ("eval", evaluation))
            }
        )
        with _datasets_progress(progress):
            dataset.save_to_disk(str(tmp))
        if (
            plan.task == "detection"
        ):  # evaluation scores against the source's own ground truth (crowd, LVIS lists)
            assert isinstance(eval_src, DetectionSource)
            eval_ids = {s.image.id for s in evaluation.samples}
            eval_cat_ids = {s.category_id for s in evaluation.samples}
            (tmp / EVAL_GROUND_TRUTH).write_text(
                json.dumps(eval_src.official_ground_truth(eval_ids, eval_cat_ids)), encoding="utf-8"
            )
        manifest = write_manifest(
            tmp,
            {
                "format": MANIFEST_FORMAT,
                "task": plan.task,
                "mode": plan.mode,
                "preset": config.preset,
                "seed": config.seed,
                "config": config_dict,
                "categories": {
                    "train": [*train.positives] if plan.task != "grounding" else [],
                    "eval": [*evaluation.positives] if plan.task != "grounding" else [],
                },
                "noun": plan.noun,
                "prompt_field": plan.class_list.field if plan.class_list else "",
                "sources": sources,
                "splits": {"train": _split_summary(train), "eval": _split_summary(evaluation)},
            },
        )
    return DatasetBuildResult(
        output_dir, manifest, {"train": len(train.samples), "eval": len(evaluation.samples)}
    )
