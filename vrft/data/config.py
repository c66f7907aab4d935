"""Configuration of stage 1, the ``dataset:`` section of an experiment YAML.

>>> from vrft.config import from_dict
>>> cfg = from_dict(DatasetConfig, {"preset": "coco_8", "shots": 8,
...                                 "train": {"kind": "coco", "annotations": "a.json", "images": "img"}})
>>> cfg.train.kind, cfg.shots, cfg.eval is None
('coco', 8, True)
>>> from_dict(DatasetConfig, {"train": {"kind": "coco"}})
Traceback (most recent call last):
...
vrft.config.ConfigError: train: kind 'coco' needs 'annotations' (the instances JSON)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vrft.config import ConfigError
from vrft.data.classnames import AUTHORS_CLASS_FILES
from vrft.data.presets import PRESETS

SourceKind = Literal[
    "coco", "lvis", "lisa", "image_folder", "manifest", "hf", "shapes", "shapes_classification"
]

# Which fields each source kind needs; the error says what the field is for.
_REQUIRED: dict[str, dict[str, str]] = {
    "coco": {"annotations": "the instances JSON", "images": "the image directory"},
    "lvis": {"annotations": "the LVIS JSON", "images": "the COCO image root holding train2017/ and val2017/"},
    "lisa": {"path": "the directory of image + JSON pairs"},
    "image_folder": {"path": "the root holding one sub-directory per class"},
    "manifest": {"annotations": "the CSV or JSON manifest of (file, label)"},
    "hf": {"path": "a save_to_disk directory or a hub dataset name"},
    "shapes": {},
    "shapes_classification": {},
}


@dataclass
class SourceConfig:
    """Where one split's images and labels come from.

    ``kind`` selects the reader: ``coco`` (any COCO-format detection set, e.g. MG), ``lvis``,
    ``lisa`` (reasoning grounding), ``image_folder`` / ``manifest`` / ``hf`` (classification),
    and the synthetic ``shapes`` / ``shapes_classification``, which generate their files into
    ``path`` (or a cache directory) and are then read exactly like ``coco`` / ``image_folder``.

    Parameters:
        kind: The reader (above); it decides the task and which of the fields below are needed.
        annotations: coco/lvis: the instances JSON; manifest: the CSV (``.csv``, header row) or JSON
            (``.json``) list of (file, label).
        images: coco/lvis/manifest: the image root (LVIS: the COCO root holding ``train2017/`` and
            ``val2017/``; manifest default: the manifest's directory).
        path: lisa: the directory of image + JSON pairs; image_folder: the root holding one
            sub-directory per class; hf: a ``save_to_disk`` directory or a hub dataset name;
            shapes: where the generated files go (default: a cache directory).
        split: hf: which split of a ``DatasetDict``.
        file_column: manifest: the column with the image path.
        label_column: manifest/hf: the column with the class (a name or an integer index).
        image_column: hf: the column with the image.
        label_base: Integer labels: the number that means the first class (1 for the Flowers102
            ``.mat`` labels and the Pets ``list.txt`` ids).
        name: The value of the rows' ``source`` column; default: the kind.
        n_images: Synthetic sources: images to generate (shapes_classification: per class).
        image_size: Synthetic sources: ``[width, height]`` of the generated images.
        generator_seed: Synthetic sources: the seed of the generator (not of the few-shot sample).
        label: shapes_classification: whether the class is the shape's kind or its colour.
        shape_size: shapes_classification: ``[min, max]`` radius of the shape as a fraction of the
            image's shorter side.
    """

    kind: SourceKind = "shapes"
    annotations: str = ""
    images: str = ""
    path: str = ""
    split: str = ""
    file_column: str = "file"
    label_column: str = "label"
    image_column: str = "image"
    label_base: int = 0
    name: str = ""
    n_images: int = 96
    image_size: list[int] = field(default_factory=lambda: [128, 96])
    generator_seed: int = 0
    label: Literal["shape", "colour"] = "shape"
    shape_size: list[float] = field(default_factory=lambda: [0.08, 0.22])

    def check(self, where: str) -> None:
        """Raise ConfigError if a field the kind needs is missing; ``where`` is ``train``/``eval``."""
        for key, what in _REQUIRED[self.kind].items():
            if not getattr(self, key):
                raise ConfigError(f"{where}: kind {self.kind!r} needs {key!r} ({what})")
        if self.kind in ("shapes", "shapes_classification"):
            from vrft.data.shapes import MAX_IMAGES, MAX_SIDE, MIN_SIDE

            if not 1 <= self.n_images <= MAX_IMAGES:
                raise ConfigError(
                    f"{where}.n_images: must be between 1 and {MAX_IMAGES}, got {self.n_images}"
                )
            if len(self.image_size) != 2 or not all(MIN_SIDE <= v <= MAX_SIDE for v in self.image_size):
                raise ConfigError(
                    f"{where}.image_size: expected [width, height], each between {MIN_SIDE} and "
                    f"{MAX_SIDE}, got {self.image_size}"
                )
            if self.generator_seed < 0:
                raise ConfigError(f"{where}.generator_seed: must be >= 0, got {self.generator_seed}")
            if len(self.shape_size) != 2 or not 0 < self.shape_size[0] <= self.shape_size[1] <= 0.45:
                raise ConfigError(
                    f"{where}.shape_size: expected [min, max] radius fractions with "
                    f"0 < min <= max <= 0.45, got {self.shape_size}"
                )

    @property
    def display_name(self) -> str:
        return self.name or self.kind


TASK_OF_KIND = {
    "coco": "detection",
    "lvis": "detection",
    "shapes": "detection",
    "lisa": "grounding",
    "image_folder": "classification",
    "manifest": "classification",
    "hf": "classification",
    "shapes_classification": "classification",
}


@dataclass
class DatasetConfig:
    """One experiment's train and eval sets. The task follows from the source kind.

    Parameters:
        train: The source of the train split.
        eval: The source of the eval split; ``null``: eval images come from the train source,
            never overlapping the train images. Its kind must be of the train source's task.
        preset: A paper setting (``coco_8``, ``lvis_6_rare``, ``coco_ovd``, ``flowers102``, ...) that
            fills ``categories``, ``eval_categories``, ``mode`` and ``noun`` where they are left empty.
        categories: Categories (detection) or classes (classification) to sample; empty: the
            preset's, else every category of the source.
        eval_categories: Detection: the categories of the eval split (OVD: the novel ones); empty:
            the preset's, else ``categories``.
        mode: ``k_shot`` samples ``shots`` images per category; ``ovd`` samples ``ovd_annotations``
            annotations of ``categories``; ``null``: the preset's mode, else ``k_shot``.
        shots: k: images per category (detection) or per class (classification), or images in total
            (grounding); ``null`` takes every candidate.
        ovd_annotations: ``mode: ovd``: annotations sampled from the base categories.
        negative_ratio: Detection: "No Objects" samples per positive sample, per category.
        on_insufficient: Fewer candidates than requested: ``error``, or ``use_all`` of them.
        eval_max_per_category: Cap on eval images per category/class (grounding: in total), for quick
            runs; ``null``: no cap.
        lvis_frequencies: LVIS without ``categories``: take every category of these frequencies
            (``r``, ``c``, ``f``).
        lvis_exhaustive_only: LVIS: skip training positives whose category is not exhaustively
            annotated in their image.
        box_tolerance: Pixels a box may stick out of its image (it is clipped); more is an error.
        noun: The classification prompt's noun (``plant``, ``pet``, ...); default: the preset's.
        aliases: Extra accepted names per category/class, e.g. ``{sweet pea: [lathyrus]}``.
        class_names: Classification presets: ``vrft`` names the classes as ``vrft.data.classnames``
            does; ``authors`` uses the authors' class-name files (``paper:classnames/*.txt``; vrft's
            names become aliases), as paper runs do.
        lisa_box: LISA: which polygon gives the box. ``first_polygon``: the first one not labelled
            "ignore" (vrft); ``first_shape``: the first shape whatever its label (the authors');
            ``all_polygons``: the box around every polygon not labelled "ignore".
        seed: Every random choice of the few-shot sample derives from it.
        verify_images: Open every used image: it must be readable and the size the annotations say.
        load_images: Embed the image bytes in the dataset; ``false`` stores paths (benchmarks and dry
            runs only).
    """

    train: SourceConfig = field(default_factory=SourceConfig)
    eval: SourceConfig | None = None
    preset: str = ""
    categories: list[str] = field(default_factory=list)
    eval_categories: list[str] = field(default_factory=list)
    mode: Literal["k_shot", "ovd"] | None = None
    shots: int | None = 4
    ovd_annotations: int = 6000
    negative_ratio: float = 0.0
    on_insufficient: Literal["error", "use_all"] = "error"
    eval_max_per_category: int | None = None
    lvis_frequencies: list[Literal["r", "c", "f"]] = field(default_factory=list)
    lvis_exhaustive_only: bool = True
    box_tolerance: float = 1.0
    noun: str = ""
    aliases: dict[str, list[str]] = field(default_factory=dict)
    class_names: Literal["vrft", "authors"] = "vrft"
    lisa_box: Literal["first_polygon", "first_shape", "all_polygons"] = "first_polygon"
    seed: int = 0
    verify_images: bool = True
    load_images: bool = True

    def validate(self) -> None:
        self.train.check("train")
        if self.eval is not None:
            self.eval.check("eval")
        if self.preset and self.preset not in PRESETS:
            raise ConfigError(f"preset: unknown preset {self.preset!r} (known: {', '.join(sorted(PRESETS))})")
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"shots: must be a positive integer or null (all), got {self.shots}")
        if self.ovd_annotations < 1:
            raise ConfigError(f"ovd_annotations: must be positive, got {self.ovd_annotations}")
        if self.negative_ratio < 0:
            raise ConfigError(f"negative_ratio: must be >= 0, got {self.negative_ratio}")
        if self.eval_max_per_category is not None and self.eval_max_per_category < 1:
            raise ConfigError(
                f"eval_max_per_category: must be positive or null, got {self.eval_max_per_category}"
            )
        if self.box_tolerance < 0:
            raise ConfigError(f"box_tolerance: must be >= 0, got {self.box_tolerance}")
        if self.seed < 0:
            raise ConfigError(f"seed: must be >= 0, got {self.seed}")
        for key, names in (("categories", self.categories), ("eval_categories", self.eval_categories)):
            seen = set()
            for i, name in enumerate(names):
                if name in seen:
                    raise ConfigError(f"{key}[{i}]: {name!r} is listed twice")
                seen.add(name)
        train_task = TASK_OF_KIND[self.train.kind]
        if self.class_names == "authors" and (
            not self.preset or PRESETS[self.preset].class_list not in AUTHORS_CLASS_FILES
        ):
            raise ConfigError(
                "class_names: 'authors' needs one of the paper's classification presets "
                f"({', '.join(p.name for p in PRESETS.values() if p.class_list in AUTHORS_CLASS_FILES)})"
            )
        if self.eval is not None and TASK_OF_KIND[self.eval.kind] != train_task:
            raise ConfigError(
                f"eval.kind: {self.eval.kind!r} is a {TASK_OF_KIND[self.eval.kind]} source but "
                f"train.kind {self.train.kind!r} is {train_task}"
            )
        if self.preset and PRESETS[self.preset].task != train_task:
            raise ConfigError(
                f"preset: {self.preset!r} is a {PRESETS[self.preset].task} setting but "
                f"train.kind {self.train.kind!r} is a {train_task} source"
            )

    @property
    def task(self) -> str:
        return TASK_OF_KIND[self.train.kind]
