"""Verifiable visual rewards (Visual-RFT §3.2), as plain callables in trl's form.

Each reward is called as ``reward(completions, **dataset_columns) -> list[float]``, exactly how
trl's ``GRPOTrainer`` calls ``reward_funcs``: ``completions`` are strings or trl's conversational
``[{"role": "assistant", "content": ...}]`` lists, and the dataset's columns arrive as keyword
arguments, one value per completion. Each reward also gives its typed breakdown
(:class:`RewardBreakdown`: overall / format / accuracy / iou / conf) via ``.breakdown(...)`` and
exposes each part as a callable of its own via ``.part(name)``, so that trl logs the parts as
separate series (``rewards/detection_iou/mean``, ...) while their sum is the reward.

Columns read (the training stage writes them in the model's coordinate convention):

==============================  ==========================================================
reward                          columns
==============================  ==========================================================
``format``                      none
``detection``                   ``solution_boxes``: list of ``[x1, y1, x2, y2]`` (may be empty)
``classification``              ``class_name``; optional ``aliases`` (list of strings)
``classification_containment``  ``class_name``
``grounding_iou`` / ``_giou``   ``solution_box``: ``[x1, y1, x2, y2]``
==============================  ==========================================================

>>> good = '<think>x</think><answer>[{"Position": [100, 100, 200, 200], "Confidence": 0.9}]</answer>'
>>> detection([good], solution_boxes=[[[100, 100, 200, 200]]])
[2.9]
>>> detection.breakdown([good], solution_boxes=[[[100, 100, 200, 200]]])[0].as_dict()
{'overall': 2.9, 'format': 1.0, 'iou': 1.0, 'conf': 0.9}
>>> resolve_reward("classification")(["<think>.</think><answer> boeing_737 </answer>"], class_name=["Boeing 737"])
[2.0]
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from vrft.answers import (
    MAX_ANSWER_CHARS,
    DetectionAnswer,
    authors_well_formed,
    completion_text,
    contains_either_way,
    extract_answer,
    first_line_answer,
    is_well_formed,
    labels_match,
    parse_detections,
    parse_single_box,
)
from vrft.models.coords import box_giou, box_iou

RewardFunc = Callable[..., list[float]]


@dataclass(frozen=True)
class RewardBreakdown:
    """The parts of one completion's reward; ``overall`` is their sum. Unused parts are ``None``."""

    overall: float
    format: float
    accuracy: float | None = None
    iou: float | None = None
    conf: float | None = None

    def as_dict(self) -> dict[str, float]:
        """The parts that apply, for logging."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _finite(value: float) -> float:
    """Rewards must be finite whatever the input; a NaN would poison the group advantage."""
    return value if math.isfinite(value) else 0.0


def _column(columns: dict[str, Any], name: str, n: int, reward: str, default: Any = ...) -> list[Any]:
    """One value per completion from a dataset column (trl repeats columns per completion)."""
    if name not in columns or columns[name] is None:
        if default is not ...:
            return [default] * n
        raise KeyError(
            f"reward {reward!r} needs the dataset column {name!r} (got columns: {sorted(columns)})"
        )
    values = columns[name]
    if len(values) != n:
        raise ValueError(f"reward {reward!r}: column {name!r} has {len(values)} values for {n} completions")
    return list(values)


class Reward(ABC):
    """Base class: subclasses implement :meth:`breakdown`; calling returns the overall rewards."""

    name: str = "reward"
    parts: tuple[str, ...] = ("format",)
    #: Inclusive bounds of ``overall`` (documented and property-tested).
    range: tuple[float, float] = (0.0, 1.0)

    def __init__(self) -> None:
        # trl names logged series after ``reward_func.__name__``.
        self.__name__ = self.name

    @abstractmethod
    def breakdown(self, completions: Sequence[Any], **columns: Any) -> list[RewardBreakdown]:
        """One :class:`RewardBreakdown` per completion."""

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        return [b.overall for b in self.breakdown(completions, **columns)]

    def part(self, name: str) -> RewardFunc:
        """A trl reward function returning only part ``name`` (e.g. ``"iou"``) of this reward."""
        if name not in self.parts:
            raise ValueError(f"reward {self.name!r} has parts {self.parts}, not {name!r}")

        def part_reward(completions: Sequence[Any], **columns: Any) -> list[float]:
            return [float(getattr(b, name)) for b in self.breakdown(completions, **columns)]

        part_reward.__name__ = f"{self.name}_{name}"
        part_reward.__doc__ = f"The {name!r} part of the {self.name!r} reward."
        return part_reward

    def part_functions(self) -> list[RewardFunc]:
        """One trl reward function per part; their sum equals this reward."""
        return [self.part(p) for p in self.parts]

    def monitors(self) -> list[RewardFunc]:
        """Per-completion signals to log next to the reward but never train on (trl weight 0)."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FormatReward(Reward):
    """1 iff the completion is exactly one ``<think>`` block then one ``<answer>`` block.

    ``think_prefilled=True`` is for chat templates that already end the prompt with ``<think>``:
    the completion then starts inside the think block, so the tag is put back before checking.

    >>> format_reward(["<think>x</think><answer>y</answer>", "<answer>y</answer>"])
    [1.0, 0.0]
    >>> FormatReward(think_prefilled=True)(["x</think><answer>y</answer>"])
    [1.0]
    """

    name = "format"
    parts = ("format",)
    range = (0.0, 1.0)

    def __init__(self, think_prefilled: bool = False) -> None:
        super().__init__()
        self.think_prefilled = think_prefilled

    def text(self, completion: Any) -> str:
        text = completion_text(completion)
        if self.think_prefilled and not text.lstrip().startswith("<think>"):
            text = "<think>" + text
        return text

    def score(self, completion: Any) -> float:
        return 1.0 if is_well_formed(self.text(completion)) else 0.0

    def breakdown(self, completions: Sequence[Any], **columns: Any) -> list[RewardBreakdown]:
        return [RewardBreakdown(overall=s, format=s) for s in map(self.score, completions)]


@dataclass(frozen=True)
class DetectionScore:
    iou: float
    conf: float


def _greedy_match(predictions: Sequence[Any], gt: list[list[float]], *, min_iou: float) -> list[float]:
    """Per prediction (in the given order), the IoU with the ground-truth box it takes: the unmatched
    one of highest IoU, taken only if that IoU > ``min_iou``; 0.0 for a prediction that takes none
    (invalid box, nothing left, or too little overlap)."""
    taken: set[int] = set()
    ious = []
    for pred in predictions:
        best_iou, best_index = 0.0, -1
        if pred.valid and pred.box is not None:
            for index, gt_box in enumerate(gt):
                if index not in taken and (iou := box_iou(pred.box, gt_box)) > best_iou:
                    best_iou, best_index = iou, index
        if best_index >= 0 and best_iou > min_iou:
            taken.add(best_index)
            ious.append(best_iou)
        else:
            ious.append(0.0)
    return ious


def score_detection(
    answer: DetectionAnswer,
    solution_boxes: Sequence[Sequence[float]],
    *,
    tau: float = 0.5,
    iou_normalization: Literal["max", "predictions"] = "max",
) -> DetectionScore:
    """R_IoU and R_conf of one parsed answer against the ground-truth boxes (same convention).

    Predictions are matched greedily in descending confidence; each takes the unmatched
    ground-truth box of highest IoU and counts as matched only if that IoU > ``tau``.
    ``iou_normalization="max"`` divides the summed IoU by max(#predictions, #ground truth)
    (the authors' code: also punishes missed objects); ``"predictions"`` by #predictions (the
    paper's eq. 6). R_conf is the mean over predictions of ``c`` if matched else ``1 - c``.

    >>> gt = [[100, 100, 200, 200]]
    >>> score_detection(parse_detections("[{'Position': [100, 100, 200, 200], 'Confidence': 0.9},"
    ...                                  " {'Position': [500, 500, 600, 600], 'Confidence': 0.6}]"), gt)
    DetectionScore(iou=0.5, conf=0.65)
    >>> score_detection(parse_detections("No Objects"), []), score_detection(parse_detections("No Objects"), gt)
    (DetectionScore(iou=1.0, conf=1.0), DetectionScore(iou=0.0, conf=0.0))
    """
    if not answer.parsed:
        return DetectionScore(0.0, 0.0)
    gt = [list(map(float, b)) for b in solution_boxes]
    if answer.no_objects:
        return DetectionScore(1.0, 1.0) if not gt else DetectionScore(0.0, 0.0)
    predictions = sorted(answer.boxes, key=lambda b: -b.confidence)  # stable: ties keep answer order
    ious = _greedy_match(predictions, gt, min_iou=tau)
    iou_sum = sum(ious)
    conf_sum = sum(p.confidence if iou > tau else 1.0 - p.confidence for p, iou in zip(predictions, ious))
    n_pred = len(predictions)
    denominator = max(n_pred, len(gt)) if iou_normalization == "max" else n_pred
    iou_reward = min(1.0, iou_sum / denominator) if denominator else 0.0
    conf_reward = conf_sum / n_pred if n_pred else 0.0
    return DetectionScore(_finite(iou_reward), _finite(conf_reward))


def is_degenerate_detection(
    answer: DetectionAnswer, solution_boxes: Sequence[Sequence[float]], *, tau: float = 0.5
) -> bool:
    """An answer that lists boxes, finds none of the objects, yet earns more than half of the paper's
    R_conf by disowning its boxes (mean confidence below 0.5): the shape of the constant answer
    ``[{'Position': [0, 0, 1, 1], 'Confidence': 0}]``, which earns 2.0 of 3.0 on every image.

    >>> gt = [[100, 100, 200, 200]]
    >>> is_degenerate_detection(parse_detections("[{'Position': [0, 0, 1, 1], 'Confidence': 0}]"), gt)
    True
    >>> is_degenerate_detection(parse_detections("[{'Position': [0, 0, 1, 1], 'Confidence': 0.9}]"), gt)
    False
    """
    if not answer.parsed or answer.no_objects or not answer.boxes:
        return False
    score = score_detection(answer, solution_boxes, tau=tau)
    return score.iou == 0.0 and score.conf > 0.5


def score_detection_hardened(
    answer: DetectionAnswer, solution_boxes: Sequence[Sequence[float]], *, tau: float = 0.5
) -> DetectionScore:
    """R_IoU and R_conf of the hardened detection reward (see :class:`HardenedDetectionReward`).

    Same greedy matching as :func:`score_detection` (descending confidence, best remaining
    ground-truth box), with two changes: (1) every assigned pair adds its IoU to R_IoU, without
    the τ threshold (still divided by max(#predictions, #ground truth)); (2) R_conf — per
    prediction ``c`` if its IoU > τ else ``1 - c``, averaged — is multiplied by R_IoU.

    >>> gt = [[100, 100, 200, 200]]
    >>> score_detection_hardened(parse_detections("[{'Position': [0, 0, 1, 1], 'Confidence': 0}]"), gt)
    DetectionScore(iou=0.0, conf=0.0)
    >>> score_detection_hardened(parse_detections("[{'Position': [100, 100, 200, 200], 'Confidence': 0.9}]"), gt)
    DetectionScore(iou=1.0, conf=0.9)
    """
    if not answer.parsed:
        return DetectionScore(0.0, 0.0)
    gt = [list(map(float, b)) for b in solution_boxes]
    if answer.no_objects:
        return DetectionScore(1.0, 1.0) if not gt else DetectionScore(0.0, 0.0)
    predictions = sorted(answer.boxes, key=lambda b: -b.confidence)
    ious = _greedy_match(predictions, gt, min_iou=0.0)  # every assigned pair counts, without τ
    iou_sum = sum(ious)
    conf_sum = sum(p.confidence if iou > tau else 1.0 - p.confidence for p, iou in zip(predictions, ious))
    n_pred = len(predictions)
    denominator = max(n_pred, len(gt))
    iou_reward = min(1.0, iou_sum / denominator) if denominator else 0.0
    conf_reward = (conf_sum / n_pred) * iou_reward if n_pred else 0.0
    return DetectionScore(_finite(iou_reward), _finite(conf_reward))


class DetectionReward(Reward):
    """R_d = R_IoU + R_conf + R_format (Visual-RFT eq. 5–8), in [0, 3].

    >>> gt = [[[100, 100, 200, 200]]]
    >>> half = "<think>x</think><answer>[{'Position': [100, 100, 200, 300], 'Confidence': 0.8}]</answer>"
    >>> [round(v, 6) for v in detection([half], solution_boxes=gt)]  # IoU exactly 0.5 is not > tau
    [1.2]
    >>> DetectionReward(tau=0.4)([half], solution_boxes=gt)
    [2.3]
    """

    name = "detection"
    parts = ("iou", "conf", "format")
    range = (0.0, 3.0)

    def __init__(
        self,
        tau: float = 0.5,
        iou_normalization: Literal["max", "predictions"] = "max",
        think_prefilled: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"tau must be in [0, 1), got {tau}")
        if iou_normalization not in ("max", "predictions"):
            raise ValueError(f"iou_normalization must be 'max' or 'predictions', got {iou_normalization!r}")
        self.tau = tau
        self.iou_normalization = iou_normalization
        self.format = FormatReward(think_prefilled=think_prefilled)

    def score(self, answer: DetectionAnswer, solution_boxes: Sequence[Sequence[float]]) -> DetectionScore:
        """R_IoU and R_conf of one parsed answer."""
        return score_detection(answer, solution_boxes, tau=self.tau, iou_normalization=self.iou_normalization)

    def degenerate(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        """1.0 per completion that is a degenerate answer (:func:`is_degenerate_detection`), else 0.0."""
        solutions = _column(columns, "solution_boxes", len(completions), self.name)
        return [
            1.0
            if is_degenerate_detection(
                parse_detections(extract_answer(completion_text(c))), gt or [], tau=self.tau
            )
            else 0.0
            for c, gt in zip(completions, solutions)
        ]

    def monitors(self) -> list[RewardFunc]:
        """``<name>_degenerate``: its batch mean, logged by trl as ``rewards/<name>_degenerate/mean``,
        is the share of completions that are degenerate answers, so a collapse onto the constant
        answer shows in MLflow and in the report's reward plot."""

        def degenerate(completions: Sequence[Any], **columns: Any) -> list[float]:
            return self.degenerate(completions, **columns)

        degenerate.__name__ = f"{self.name}_degenerate"
        degenerate.__doc__ = self.degenerate.__doc__
        return [degenerate]

    def breakdown(self, completions: Sequence[Any], **columns: Any) -> list[RewardBreakdown]:
        solutions = _column(columns, "solution_boxes", len(completions), self.name)
        results = []
        for completion, gt in zip(completions, solutions):
            text = self.format.text(completion)
            fmt = 1.0 if is_well_formed(text) else 0.0
            score = self.score(parse_detections(extract_answer(text)), gt or [])
            results.append(
                RewardBreakdown(
                    overall=score.iou + score.conf + fmt, format=fmt, iou=score.iou, conf=score.conf
                )
            )
        return results


class HardenedDetectionReward(DetectionReward):
    """``detection_hardened``: the detection reward without the constant-answer exploit, in [0, 3].

    The paper's R_conf pays ``1 - c`` for a prediction that matches nothing, so the constant
    answer ``[{'Position': [0, 0, 1, 1], 'Confidence': 0}]`` earns R_conf = 1 and 2.0 of 3.0 on
    every image — more than honest boxes that miss τ at confidence 0.9 (1.1). A policy can
    collapse onto it. Here (see :func:`score_detection_hardened`) R_conf is scaled by R_IoU, so
    calibration only pays as much as localisation does and an answer that finds nothing earns
    the format reward alone; and R_IoU credits every assigned box its IoU, not only those above
    τ, so an imprecise but honest box earns something to improve on. A correct answer still
    earns 3.0 and "No Objects" on an image without the category still earns 3.0.

    >>> gt = [[[100, 100, 200, 200]]]
    >>> const = "<think>.</think><answer>[{'Position': [0, 0, 1, 1], 'Confidence': 0}]</answer>"
    >>> detection([const], solution_boxes=gt), detection_hardened([const], solution_boxes=gt)
    ([2.0], [1.0])
    """

    name = "detection_hardened"

    def __init__(self, tau: float = 0.5, think_prefilled: bool = False) -> None:
        super().__init__(tau=tau, think_prefilled=think_prefilled)

    def score(self, answer: DetectionAnswer, solution_boxes: Sequence[Sequence[float]]) -> DetectionScore:
        return score_detection_hardened(answer, solution_boxes, tau=self.tau)


class ClassificationReward(Reward):
    """R_cls = R_acc + R_format (eq. 9), in [0, 2]. Accuracy is an exact normalised match with the
    class name or an alias: never a substring test, so empty answers and lists score 0.

    >>> r = ClassificationReward()
    >>> r(["<think>.</think><answer></answer>", "<think>.</think><answer>Boeing 737 or Airbus A320</answer>"],
    ...   class_name=["Boeing 737", "Boeing 737"])
    [1.0, 1.0]
    """

    name = "classification"
    parts = ("accuracy", "format")
    range = (0.0, 2.0)

    def __init__(self, think_prefilled: bool = False) -> None:
        super().__init__()
        self.format = FormatReward(think_prefilled=think_prefilled)

    def breakdown(self, completions: Sequence[Any], **columns: Any) -> list[RewardBreakdown]:
        n = len(completions)
        names = _column(columns, "class_name", n, self.name)
        aliases = _column(columns, "aliases", n, self.name, default=None)
        results = []
        for completion, class_name, alias in zip(completions, names, aliases):
            text = self.format.text(completion)
            fmt = 1.0 if is_well_formed(text) else 0.0
            acc = 1.0 if labels_match(extract_answer(text), str(class_name), alias) else 0.0
            results.append(RewardBreakdown(overall=acc + fmt, format=fmt, accuracy=acc))
        return results


class ClassificationContainmentReward(Reward):
    """``classification_containment``: the authors' Table 2 training reward (``grpo_classification.py``),
    in [0, 2] — for paper runs only.

    Accuracy: the first ``<answer>…</answer>`` block on one line, else the whole completion, stripped;
    it and the class name lose spaces and underscores and are lower-cased; right when either contains
    the other. So an empty answer, a list of every class, or "BMW" for a BMW model is right: a policy
    can learn to game it, which is why vrft's ``classification`` (exact match) is the default. Format:
    the authors' check (:func:`vrft.answers.authors_well_formed`), laxer than vrft's. Aliases are not
    consulted (the authors had one name per class). Not reproduced: before the containment test the
    authors' code tries ``math_verify`` (symbolic equality of the numbers in answer and class name).

    >>> r = ClassificationContainmentReward()
    >>> r(["<think>.</think><answer></answer>", "<think>.</think><answer>BMW</answer>", "Audi"],
    ...   class_name=["2012 BMW M3 coupe"] * 3)
    [2.0, 2.0, 0.0]
    """

    name = "classification_containment"
    parts = ("accuracy", "format")
    range = (0.0, 2.0)

    def __init__(self, think_prefilled: bool = False) -> None:
        super().__init__()
        self.format = FormatReward(think_prefilled=think_prefilled)

    def breakdown(self, completions: Sequence[Any], **columns: Any) -> list[RewardBreakdown]:
        names = _column(columns, "class_name", len(completions), self.name)
        results = []
        for completion, class_name in zip(completions, names):
            text = self.format.text(completion)
            fmt = 1.0 if authors_well_formed(text) else 0.0
            answer = first_line_answer(text)
            said = (answer if answer is not None else text).strip()
            # Past MAX_ANSWER_CHARS a completion is unparsable, as for every other reward.
            correct = len(text) <= MAX_ANSWER_CHARS and contains_either_way(said, str(class_name).strip())
            acc = 1.0 if correct else 0.0
            results.append(RewardBreakdown(overall=acc + fmt, format=fmt, accuracy=acc))
        return results


class GroundingReward(Reward):
    """Reasoning grounding (LISA): one box per answer, plus the format reward.

    ``metric="iou"``: IoU in [0, 1] (matches the mIoU metric), overall in [0, 2].
    ``metric="giou"``: GIoU + 1 in [0, 2] (the authors' training reward), overall in [0, 3].
    A missing or invalid box scores 0 for the box part.

    >>> GroundingReward("giou")(["<think>.</think><answer>(0,0),(10,10)</answer>"], solution_box=[[0, 0, 10, 10]])
    [3.0]
    """

    parts = ("iou", "format")

    def __init__(self, metric: Literal["iou", "giou"] = "iou", think_prefilled: bool = False) -> None:
        if metric not in ("iou", "giou"):
            raise ValueError(f"grounding metric must be 'iou' or 'giou', got {metric!r}")
        self.metric = metric
        self.name = f"grounding_{metric}"
        self.range = (0.0, 2.0) if metric == "iou" else (0.0, 3.0)
        super().__init__()
        self.format = FormatReward(think_prefilled=think_prefilled)

    def breakdown(self, completions: Sequence[Any], **columns: Any) -> list[RewardBreakdown]:
        solutions = _column(columns, "solution_box", len(completions), self.name)
        results = []
        for completion, gt in zip(completions, solutions):
            text = self.format.text(completion)
            fmt = 1.0 if is_well_formed(text) else 0.0
            box = parse_single_box(extract_answer(text))
            if box is None or gt is None:
                value = 0.0
            elif self.metric == "iou":
                value = box_iou(box, gt)
            else:
                value = box_giou(box, gt) + 1.0
            value = _finite(value)
            results.append(RewardBreakdown(overall=value + fmt, format=fmt, iou=value))
        return results


format_reward = FormatReward()
detection = DetectionReward()
detection_hardened = HardenedDetectionReward()
classification = ClassificationReward()
classification_containment = ClassificationContainmentReward()
grounding_iou = GroundingReward("iou")
grounding_giou = GroundingReward("giou")

_REGISTRY: dict[str, Callable[..., Reward]] = {
    "format": FormatReward,
    "detection": DetectionReward,
    "detection_hardened": HardenedDetectionReward,
    "classification": ClassificationReward,
    "classification_containment": ClassificationContainmentReward,
    "grounding_iou": lambda **kw: GroundingReward("iou", **kw),
    "grounding_giou": lambda **kw: GroundingReward("giou", **kw),
}


def reward_names() -> list[str]:
    """The registered reward names."""
    return sorted(_REGISTRY)


def resolve_reward(spec: str | Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """A reward by registered name (with options), by dotted path ``package.module:function``, or a
    callable passed through. A dotted path may name a function (used as is; options not allowed)
    or a class/factory (called with the options).

    >>> resolve_reward("detection", tau=0.3).tau
    0.3
    >>> resolve_reward("vrft.rewards:format_reward").name
    'format'
    >>> resolve_reward("nope")
    Traceback (most recent call last):
    ...
    ValueError: unknown reward 'nope': use one of classification, classification_containment, detection, detection_hardened, format, grounding_giou, grounding_iou, or 'package.module:function'
    """
    if callable(spec):
        return spec
    if spec in _REGISTRY:
        return _REGISTRY[spec](**options)
    if ":" not in spec:
        known = ", ".join(reward_names())
        raise ValueError(f"unknown reward {spec!r}: use one of {known}, or 'package.module:function'")
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"reward {spec!r}: cannot import module {module_name!r} ({exc})") from None
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"reward {spec!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if isinstance(target, type):
        return target(**options)
    if not callable(target):
        raise ValueError(f"reward {spec!r} is not callable")
    if options:
        # A plain function takes dataset columns, not construction options; say so instead of guessing.
        raise ValueError(f"reward {spec!r} is a function; options {sorted(options)} only apply to classes")
    return target


def reward_functions_for_trainer(spec: str | Callable[..., Any], **options: Any) -> list[Callable[..., Any]]:
    """The ``reward_funcs`` list for trl: one function per part for vrft rewards (so every part is
    logged as its own series and the sum is the reward), the callable itself otherwise."""
    reward = resolve_reward(spec, **options)
    if isinstance(reward, Reward):
        return reward.part_functions()
    return [reward]


def monitor_functions_for_trainer(spec: str | Callable[..., Any], **options: Any) -> list[Callable[..., Any]]:
    """Functions to pass to trl after :func:`reward_functions_for_trainer`, with reward weight 0:
    logged every step (``rewards/<name>/mean``), never part of the reward. Empty for plugins."""
    reward = resolve_reward(spec, **options)
    return reward.monitors() if isinstance(reward, Reward) else []
