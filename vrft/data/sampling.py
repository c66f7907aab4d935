"""Which images become samples: k-shot, OVD, negatives and the eval split.

Rules (docs/dataset.md has the long form):

- k-shot detection: per category, k images that contain it; the sample's ground truth is EVERY
  instance of that category in the image. One sample = (image, category); an image may serve
  several categories.
- OVD: N annotations drawn from all usable instances of the base categories; each distinct
  (image, category) they fall in is one sample, again with every instance of the category.
- negatives: per category, round(negative_ratio × its positive samples) images where the
  category is known to be absent (LVIS: listed in ``neg_category_ids``), with empty ground truth.
- classification: k images per class. Grounding: k images, one sample per instruction.
- eval: every eval-source image of the eval categories (at most ``eval_max_per_category`` per
  category), never an image used for training.

Every random choice uses :func:`~vrft.data.common.rng_for` keyed by the seed, the split and the
category, over candidates sorted by id, so results do not depend on dict, set or directory order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vrft.data.classification import ClassificationSource
from vrft.data.coco import Category, DetectionSource
from vrft.data.common import ImageRef, Source, choose, id_sort_key, rng_for
from vrft.data.errors import InsufficientSamplesError
from vrft.data.lisa import GroundingSource


@dataclass(slots=True)
class Sample:
    """One future row, without the image bytes."""

    source: Source
    image: ImageRef
    category: str = ""
    category_id: int = -1
    gt_boxes: list[list[float]] = field(default_factory=list)
    aliases: tuple[str, ...] = ()
    noun: str = ""
    instruction: str = ""


@dataclass
class Selection:
    """Samples of one split plus what the manifest reports about how they were chosen."""

    samples: list[Sample] = field(default_factory=list)
    positives: dict[str, int] = field(default_factory=dict)  # category/class -> samples with ground truth
    negatives: dict[str, int] = field(default_factory=dict)  # category -> "No Objects" samples
    shortfalls: dict[str, dict[str, int]] = field(default_factory=dict)  # use_all: requested vs available
    notes: dict[str, Any] = field(default_factory=dict)

    def image_keys(self) -> set[str]:
        return {s.source.image_key(s.image) for s in self.samples}


def take(
    candidates: list[Any],
    n: int,
    seed: int,
    keys: tuple[str, ...],
    *,
    on_insufficient: str,
    error: Callable[[int], InsufficientSamplesError],
    selection: Selection,
    label: str,
) -> list[Any]:
    """``n`` seeded picks from sorted ``candidates``; too few is an error or, with use_all, all of them."""
    if n > len(candidates):
        if on_insufficient == "error":
            raise error(len(candidates))
        selection.shortfalls[label] = {"requested": n, "available": len(candidates)}
    return choose(rng_for(seed, *keys), candidates, n)


# -- detection ----------------------------------------------------------------------------------


def _insufficient(
    src: Source, cat: Category, field_name: str, wanted: str, hint: str
) -> Callable[[int], Any]:
    def make(available: int) -> InsufficientSamplesError:
        return InsufficientSamplesError(
            src.file,
            f"category {cat.name!r} (id {cat.id!r})",
            field_name,
            f"{wanted}, only {available} available{hint}; set on_insufficient: use_all to take what there is",
        )

    return make


def detection_train(
    src: DetectionSource,
    cats: list[Category],
    *,
    mode: str,
    shots: int | None,
    ovd_annotations: int,
    negative_ratio: float,
    seed: int,
    on_insufficient: str,
    aliases: dict[str, tuple[str, ...]],
) -> Selection:
    sel = Selection()
    positives: dict[Any, list[Any]] = {}  # category id -> chosen image ids
    if mode == "k_shot":
        hint = " (exhaustively annotated)" if src.exhaustive_only else ""
        for cat in cats:
            candidates = src.positives(cat.id, for_training=True)
            k = len(candidates) if shots is None else shots
            positives[cat.id] = take(
                candidates,
                k,
                seed,
                ("train", cat.name),
                on_insufficient=on_insufficient,
                error=_insufficient(src, cat, "shots", f"asked for {k} images containing it", hint),
                selection=sel,
                label=cat.name,
            )
    else:
        pairs = src.annotation_pairs({c.id for c in cats})
        picked = take(
            pairs,
            ovd_annotations,
            seed,
            ("train", "ovd"),
            on_insufficient=on_insufficient,
            error=lambda available: InsufficientSamplesError(
                src.file,
                f"{len(cats)} base categories",
                "ovd_annotations",
                f"asked for {ovd_annotations} annotations, only {available} usable; set "
                "on_insufficient: use_all to take them all",
            ),
            selection=sel,
            label="ovd_annotations",
        )
        for _, image_id, cat_id in picked:
            positives.setdefault(cat_id, []).append(image_id)
        sel.notes["ovd"] = {"annotations_requested": ovd_annotations, "annotations_sampled": len(picked)}
    for cat in cats:
        chosen = src.sort_ids(set(positives.get(cat.id, ())))
        sel.positives[cat.name] = len(chosen)
        sel.samples += [
            Sample(src, src.images[i], cat.name, cat.id, src.instances(i)[cat.id], aliases[cat.name])
            for i in chosen
        ]
    if mode == "ovd":
        sel.notes["ovd"]["samples"] = len(sel.samples)
    if negative_ratio > 0:
        for cat in cats:
            n = int(negative_ratio * sel.positives[cat.name] + 0.5)
            if n == 0:
                continue
            where = "neg_category_ids" if src.federated else "images without it"
            chosen = take(
                src.negatives(cat.id),
                n,
                seed,
                ("negatives", cat.name),
                on_insufficient=on_insufficient,
                error=_insufficient(src, cat, "negative_ratio", f"asked for {n} negatives", f" ({where})"),
                selection=sel,
                label=f"{cat.name} (negatives)",
            )
            sel.negatives[cat.name] = len(chosen)
            sel.samples += [
                Sample(src, src.images[i], cat.name, cat.id, [], aliases[cat.name]) for i in chosen
            ]
    return sel


def detection_eval(
    src: DetectionSource,
    cats: list[Category],
    *,
    cap: int | None,
    seed: int,
    excluded: set[Any],
    aliases: dict[str, tuple[str, ...]],
    all_images: bool = False,
) -> Selection:
    """Eval rows: every chosen image gets one row per eval category present in it.

    Keeping all present categories of a chosen image keeps each image's ground truth complete for
    COCO-style evaluation. With ``all_images`` (a separate, uncapped COCO eval source: a val set)
    every other image is kept too (one negative row each), as the authors' evaluation runs on all
    val images. LVIS also gets rows for capped samples of verified-absent pairs
    (``neg_category_ids``): federated evaluation only scores a category where presence is known.
    """
    sel = Selection(positives={c.name: 0 for c in cats})
    chosen: set[Any] = set()
    for cat in cats:
        candidates = [i for i in src.positives(cat.id, for_training=False) if i not in excluded]
        chosen.update(choose(rng_for(seed, "eval", cat.name), candidates, cap or len(candidates)))
    by_id = {c.id: c for c in cats}
    order = {c.id: n for n, c in enumerate(cats)}
    for image_id in src.sort_ids(chosen):
        instances = src.instances(image_id)
        for cat_id in sorted(instances.keys() & by_id.keys(), key=order.__getitem__):
            cat = by_id[cat_id]
            sel.samples.append(
                Sample(src, src.images[image_id], cat.name, cat.id, instances[cat_id], aliases[cat.name])
            )
            sel.positives[cat.name] += 1
    if all_images and not src.federated and cap is None and cats:
        # The authors score COCO on every val image: false positives on images without any
        # evaluated category must count. Such images get one "No Objects" row (the evaluation asks
        # every category of every image; the official ground truth file carries crowd regions).
        covered = chosen
        for image_id in src.sort_ids(i for i in src.images if i not in covered and i not in excluded):
            cat = cats[0]
            sel.samples.append(Sample(src, src.images[image_id], cat.name, cat.id, [], aliases[cat.name]))
            sel.negatives[cat.name] = sel.negatives.get(cat.name, 0) + 1
    if src.federated:
        for cat in cats:
            candidates = [i for i in src.negatives(cat.id) if i not in excluded]
            picked = choose(rng_for(seed, "eval-negatives", cat.name), candidates, cap or len(candidates))
            sel.negatives[cat.name] = len(picked)
            sel.samples += [
                Sample(src, src.images[i], cat.name, cat.id, [], aliases[cat.name]) for i in picked
            ]
    return sel


# -- classification -------------------------------------------------------------------------------


def classification_split(
    src: ClassificationSource,
    labels: list[int],
    classes: list[str],
    requested: list[int],
    *,
    shots: int | None,
    seed: int,
    split: str,
    on_insufficient: str,
    excluded: set[Any],
    noun: str,
    aliases: dict[str, tuple[str, ...]],
) -> Selection:
    """k (train) or at most ``shots`` (eval, a cap) images per requested class.

    ``labels[i]`` is the class index of ``src.entries[i]``.
    """
    sel = Selection()
    by_class: dict[int, list[ImageRef]] = {i: [] for i in requested}
    for entry, label in zip(src.entries, labels):
        if label in by_class and entry.image.id not in excluded:
            by_class[label].append(entry.image)
    for index in requested:
        name = classes[index]
        candidates = sorted(by_class[index], key=lambda ref: id_sort_key(ref.id))
        n = len(candidates) if shots is None else shots
        if split == "train":
            picked = take(
                candidates,
                n,
                seed,
                (split, name),
                on_insufficient=on_insufficient,
                error=lambda available, name=name, n=n: InsufficientSamplesError(
                    src.file,
                    f"class {name!r}",
                    "shots",
                    f"asked for {n} images, only {available} "
                    "available; set on_insufficient: use_all to take what there is",
                ),
                selection=sel,
                label=name,
            )
        else:
            picked = choose(rng_for(seed, split, name), candidates, n)
        sel.positives[name] = len(picked)
        sel.samples += [Sample(src, ref, name, index, [], aliases.get(name, ()), noun) for ref in picked]
    return sel


# -- grounding --------------------------------------------------------------------------------------


def grounding_split(
    src: GroundingSource,
    *,
    shots: int | None,
    seed: int,
    split: str,
    on_insufficient: str,
    excluded: set[Any],
) -> Selection:
    """k images (train) or at most ``shots`` images (eval); every instruction of an image is a sample."""
    sel = Selection()
    items = [item for item in src.items if item.image.id not in excluded]
    n = len(items) if shots is None else shots
    if split == "train":
        picked = take(
            items,
            n,
            seed,
            (split, "grounding"),
            on_insufficient=on_insufficient,
            error=lambda available: InsufficientSamplesError(
                src.file,
                "",
                "shots",
                f"asked for {n} images, only {available} available; set "
                "on_insufficient: use_all to take what there is",
            ),
            selection=sel,
            label="images",
        )
    else:
        picked = choose(rng_for(seed, split, "grounding"), items, n)
    for item in picked:
        sel.samples += [
            Sample(src, item.image, gt_boxes=[item.box], instruction=text) for text in item.instructions
        ]
    sel.positives["instructions"] = len(sel.samples)
    return sel
