"""The paper's experiment settings as named presets (category lists come from the paper, §4).

A preset fills the config fields left empty (``categories``, ``eval_categories``, ``mode``,
``noun``); anything set explicitly in the config wins. Every name is checked against the
source at build time, and a name the source does not have is an
:class:`~vrft.data.errors.UnknownCategoryError` — presets never silently shrink.

>>> len(COCO_OVD_BASE65), len(COCO_OVD_NOVEL15), sorted(PRESETS)[:3]
(65, 15, ['aircraft100', 'cars196', 'coco_8'])
"""

from __future__ import annotations

from dataclasses import dataclass

from vrft.data.classnames import CLASS_LISTS

# The 80 COCO detection categories, in category-id order.
COCO80 = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

# Table 3: few-shot detection on 8 COCO categories.
COCO_FEWSHOT8 = ("bus", "train", "fire hydrant", "stop sign", "cat", "dog", "bed", "toilet")

# Table 4: few-shot detection on 6 LVIS rare categories (LVIS names).
LVIS_RARE6 = ("horse_buggy", "die", "kitchen_table", "omelet", "papaya", "stepladder")

# Table 7: the 65 seen / 15 unseen COCO split for open-vocabulary detection.
COCO_OVD_NOVEL15 = (
    "airplane",
    "train",
    "parking meter",
    "cat",
    "bear",
    "suitcase",
    "frisbee",
    "snowboard",
    "fork",
    "sandwich",
    "hot dog",
    "toilet",
    "mouse",
    "toaster",
    "hair drier",
)
COCO_OVD_BASE65 = tuple(name for name in COCO80 if name not in COCO_OVD_NOVEL15)

# Table 8: open-vocabulary evaluation on 13 LVIS rare categories (LVIS names).
LVIS_RARE13 = (
    "casserole",
    "die",
    "egg_roll",
    "futon",
    "garbage",
    "handsaw",
    "hippopotamus",
    "kitchen_table",
    "mallet",
    "omelet",
    "shot_glass",
    "stepladder",
    "sugar_bowl",
)


@dataclass(frozen=True)
class Preset:
    """One paper setting. ``eval_categories`` empty means "the same as ``categories``"."""

    name: str
    task: str
    description: str
    categories: tuple[str, ...] = ()
    eval_categories: tuple[str, ...] = ()
    mode: str = "k_shot"
    noun: str = ""
    class_list: str = ""  # key of vrft.data.classnames.CLASS_LISTS for classification presets


def _classification(name: str, key: str, table: str) -> Preset:
    cl = CLASS_LISTS[key]
    return Preset(
        name,
        "classification",
        f"{table}: {len(cl.classes)}-class few-shot classification",
        categories=cl.classes,
        noun=cl.noun,
        class_list=key,
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "coco_8",
            "detection",
            "Table 3: k-shot detection on 8 COCO categories (eval: COCO val)",
            categories=COCO_FEWSHOT8,
        ),
        Preset(
            "lvis_6_rare",
            "detection",
            "Table 4: 10-shot detection on 6 LVIS rare categories",
            categories=LVIS_RARE6,
        ),
        Preset(
            "coco_ovd",
            "detection",
            "Table 7: N annotations from the 65 COCO base categories; eval on the 15 novel ones",
            categories=COCO_OVD_BASE65,
            eval_categories=COCO_OVD_NOVEL15,
            mode="ovd",
        ),
        Preset(
            "coco_ovd_all",
            "detection",
            "Table 7 base/all columns: as coco_ovd, eval on all 80 categories",
            categories=COCO_OVD_BASE65,
            eval_categories=COCO_OVD_NOVEL15 + COCO_OVD_BASE65,
            mode="ovd",
        ),
        Preset(
            "lvis_ovd",
            "detection",
            "Table 8: train on COCO base annotations (a COCO source); eval on 13 LVIS "
            "rare categories (an LVIS eval source)",
            categories=COCO_OVD_BASE65,
            eval_categories=LVIS_RARE13,
            mode="ovd",
        ),
        _classification("flowers102", "flowers102", "Table 2"),
        _classification("pets37", "pets37", "Table 2"),
        _classification("aircraft100", "fgvc_aircraft", "Table 2"),
        _classification("cars196", "cars196", "Table 2"),
        Preset("lisa", "grounding", "Table 6: LISA reasoning grounding, one sample per instruction"),
    )
}
