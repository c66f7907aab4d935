"""Paper mode: one switch that makes an experiment follow the authors' protocol point by point.

vrft's defaults are stricter than the authors' code in several places (a reward that cannot be
gamed by an empty answer, its own class names, its own existence gate, ...). ``experiment.paper_mode:
true`` sets, in each stage's section, the value the authors' code used — see :data:`POINTS`, one
entry per point of docs/evaluation.md's table. A point named in ``experiment.keep_ours`` keeps
vrft's choice; the report then names it as a difference from the authors' protocol. A field set
explicitly to a third value under paper mode is an error, so a paper run never silently mixes.

Data the authors fixed (their classification test lists, their gate lists) is named in the paper
configs themselves (``paper:`` names, :mod:`vrft.paper_files`), not set here.

The report compares what each evaluation recorded (its ``protocol`` and the ``training`` tag) with
:func:`authors_protocol`, so it can say "same protocol as the paper's" or name the differences.

>>> from vrft.experiment import load_experiment
>>> cfg = load_experiment("configs/cls_cars196.yaml")
>>> cfg.experiment.paper_mode, cfg.grpo.reward, cfg.dataset.class_names, cfg.evaluate.max_pixels
(True, 'classification_containment', 'authors', 12845056)
>>> load_experiment("configs/cls_cars196.yaml", ["experiment.keep_ours=[training_reward]"]).grpo.reward
''
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vrft.config import ConfigError

#: The Qwen2-VL processor's default pixel budget (28 * 28 * 16384), which the authors' evaluation used.
AUTHORS_EVAL_MAX_PIXELS = 12845056
#: The training reward of the authors' code per task (grpo_classification.py, grpo.py, grpo_lisa.py).
AUTHORS_TRAINING_REWARD = {
    "classification": "classification_containment",
    "detection": "detection",
    "grounding": "grounding_giou",
}


@dataclass(frozen=True)
class Point:
    """One place where vrft's default and the authors' code differ.

    ``field`` is ``section.key``; ``authors(task)`` the authors' value for a task (``None``: the point
    does not apply to that task); ``ours`` vrft's default.
    """

    name: str
    field: str
    ours: Any
    authors: Callable[[str], Any]
    authors_file: str
    description: str


def _for(tasks: tuple[str, ...], value: Any) -> Callable[[str], Any]:
    return lambda task: value if task in tasks else None


POINTS: tuple[Point, ...] = (
    Point(
        "training_reward",
        "grpo.reward",
        "",
        lambda task: AUTHORS_TRAINING_REWARD[task] if task in ("classification", "grounding") else None,
        "src/virft/src/open_r1/grpo_classification.py, grpo_lisa.py",
        "Table 2 trained on two-way containment (an empty answer is right; vrft: exact match); "
        "LISA on GIoU + 1 (vrft: IoU)",
    ),
    Point(
        "class_names",
        "dataset.class_names",
        "vrft",
        _for(("classification",), "authors"),
        "classification/val_data/*.txt",
        "their class names (Cars: year first); vrft's names become aliases",
    ),
    Point(
        "gate",
        "evaluate.gate_source",
        "base_model",
        _for(("detection",), "authors_file"),
        "coco_evaluation/exist_map_coco_Qwen2_vl_2B_baseline.json, lvis_evaluation/exist_map_lvis_*.json",
        "the gate read from their per-image category list (evaluate.gate_file) instead of asked",
    ),
    Point(
        "lvis_ap",
        "evaluate.lvis_ap_average",
        "area_all",
        _for(("detection",), "area_ranges"),
        "lvis_evaluation/lvis_evaluation.ipynb (removed after commit 704188e)",
        "per-category AP averaged over the four area ranges too",
    ),
    Point(
        "eval_max_pixels",
        "evaluate.max_pixels",
        None,
        _for(("detection", "classification"), AUTHORS_EVAL_MAX_PIXELS),
        "coco_evaluation/Qwen2_VL_coco_infere.py (AutoProcessor defaults)",
        "evaluation at the processor default, 12.8 MP (training stays at model.max_pixels)",
    ),
    Point(
        "image_placeholder",
        "evaluate.image_placeholder",
        False,
        _for(("detection", "classification"), True),
        "coco_evaluation/Qwen2_VL_coco_infere.py, classification/Qwen2_VL_classification_infere.py",
        "the literal '<image>\\n' before the evaluation prompt",
    ),
    Point(
        "eval_system_prompt",
        "evaluate.system_prompt",
        "",
        _for(("grounding",), "r1"),
        "lisa_evaluation/Qwen2_VL_lisa_infere.py",
        "the R1 system turn in the LISA evaluation (not in training)",
    ),
    Point(
        "eval_max_new_tokens",
        "evaluate.max_new_tokens",
        1024,
        _for(("grounding",), 128),
        "lisa_evaluation/Qwen2_VL_lisa_infere.py",
        "128 new tokens in the LISA evaluation (1024 elsewhere, vrft's default)",
    ),
    Point(
        "lisa_box",
        "dataset.lisa_box",
        "first_polygon",
        _for(("grounding",), "first_shape"),
        "lisa_evaluation/gen_box_ann.py",
        "the box of the first shape, whatever its label (shapes[:1])",
    ),
    Point(
        "grounding_answer",
        "evaluate.grounding_answer",
        "answer_block",
        _for(("grounding",), "first_pair"),
        "lisa_evaluation/Qwen2_VL_lisa_infere.py",
        "the first integer (x1,y1),(x2,y2) anywhere in the completion",
    ),
    Point(
        "grounding_mask",
        "evaluate.grounding_mask",
        "polygons",
        _for(("grounding",), "first_polygon"),
        "lisa_evaluation/mask_iou.py",
        "gIoU against the first polygon, no ignore handling",
    ),
    Point(
        "training_prompts",
        "grpo.prompt_style",
        "vrft",
        _for(("grounding",), "authors"),
        "src/virft/src/open_r1/grpo_lisa.py",
        "LISA training prompt without the '.' after the instruction",
    ),
    Point(
        "sft_target",
        "sft.prompt_style",
        "vrft",
        _for(("grounding",), "authors"),
        "lisa_evaluation/gen_sft.py",
        "LISA SFT: prompt without the think instruction, a bare (x1,y1),(x2,y2) target",
    ),
)
POINT_NAMES = tuple(p.name for p in POINTS)


def _get(config: Any, field: str) -> Any:
    section, key = field.split(".")
    return getattr(getattr(config, section), key)


def _set(config: Any, field: str, value: Any) -> None:
    section, key = field.split(".")
    setattr(getattr(config, section), key, value)


def apply_paper_mode(config: Any) -> None:
    """Set every point of :data:`POINTS` that applies to the experiment's task to the authors' value,
    except those in ``experiment.keep_ours`` (an :class:`~vrft.experiment.ExperimentConfig`, changed in
    place). Idempotent. A field holding neither vrft's default nor the authors' value is an error."""
    info = config.experiment
    unknown = [name for name in info.keep_ours if name not in POINT_NAMES]
    if unknown:
        raise ConfigError(
            f"experiment.keep_ours: {unknown[0]!r} is not a paper-mode point ({', '.join(POINT_NAMES)})"
        )
    if not info.paper_mode:
        if info.keep_ours:
            raise ConfigError("experiment.keep_ours: only read with experiment.paper_mode: true")
        return
    task = config.dataset.task
    for point in POINTS:
        authors = point.authors(task)
        if authors is None or point.name in info.keep_ours:
            continue
        value = _get(config, point.field)
        if value == authors:
            continue
        if value != point.ours:
            raise ConfigError(
                f"{point.field}: {value!r} under experiment.paper_mode, whose value is {authors!r} (the "
                f"authors' {point.authors_file}); to keep another value, list {point.name!r} in "
                "experiment.keep_ours"
            )
        _set(config, point.field, authors)


def check_paper_data(config: Any) -> None:
    """What paper mode needs from a whole experiment config beyond values: the authors' gate list.

    Called on configs read from a file (:func:`vrft.experiment.load_experiment`), not on the stages'
    partial views, whose sections other than their own hold defaults. The evaluation checks again.
    """
    info, evaluate = config.experiment, config.evaluate
    if (
        info.paper_mode
        and config.dataset.task == "detection"
        and evaluate.detection_mode == "existence_gated"
        and evaluate.gate_source == "authors_file"
        and not evaluate.gate_file
    ):
        raise ConfigError(
            "evaluate.gate_file: paper mode gates detection with the authors' list "
            "(paper:gates/exist_map_coco_Qwen2_vl_2B_baseline.json.gz, or their LVIS file); name it, "
            "or list 'gate' in experiment.keep_ours (no list was published for this data)"
        )


def training_objective(config: Any, method: str) -> str:
    """What trained a row, as the ``training`` tag: ``reward:<name>[ options]`` for RFT,
    ``sft:<prompt style>`` for SFT, ``""`` for the base model.

    >>> from vrft.experiment import load_experiment
    >>> training_objective(load_experiment("configs/default.yaml"), "rft")
    'reward:classification'
    >>> training_objective(load_experiment("configs/default.yaml"), "sft")
    'sft:vrft'
    """
    if method == "rft":
        return _reward_objective(config.grpo.reward_name(config.dataset.task), config.grpo.reward_options)
    if method == "sft":
        return f"sft:{config.sft.prompt_style}"
    return ""


def _reward_objective(name: str, options: dict[str, Any]) -> str:
    listed = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"reward:{name}" + (f"[{listed}]" if listed else "")


def recorded_training(record: dict[str, Any]) -> str:
    """The ``training`` tag of a checkpoint from the ``config.json`` its training run wrote (the
    truth about what trained it, whatever config evaluates it); ``""`` when the record says nothing.

    >>> recorded_training({"method": "grpo", "task": "classification", "grpo": {"reward": ""}})
    'reward:classification'
    >>> recorded_training({"method": "sft", "sft": {"prompt_style": "authors"}})
    'sft:authors'
    """
    from vrft.tasks import reward_name

    method = record.get("method")
    section = record.get(method) if isinstance(method, str) else None
    if not isinstance(section, dict):
        return ""
    if method == "grpo":
        task = record.get("task", "")
        name = section.get("reward") or (reward_name(task) if task else "")
        return _reward_objective(name, section.get("reward_options") or {}) if name else ""
    if method == "sft":
        return f"sft:{section.get('prompt_style', 'vrft')}"
    return ""


def authors_protocol(task: str, metric: str = "", masks: bool = False) -> dict[str, str]:
    """The authors' value of each ``protocol`` entry an evaluation records (see
    :func:`vrft.evaluate.run.evaluation_protocol`), for a task; entries the authors left to the
    data (gate file hash, ground truth, test list content) are absent.

    >>> authors_protocol("grounding")["system_prompt"], authors_protocol("classification")["max_pixels"]
    ('r1', '12845056')
    """
    protocol = {
        "system_prompt": "r1" if task == "grounding" else "none",
        "max_new_tokens": "128" if task == "grounding" else "1024",
    }
    if task in ("detection", "classification"):
        protocol.update(max_pixels=str(AUTHORS_EVAL_MAX_PIXELS), image_placeholder="yes")
    if task == "detection":
        protocol["gate"] = "authors_file"
        if metric == "lvis":
            protocol["lvis_ap"] = "area_ranges"
    elif task == "classification":
        protocol["class_names"] = "authors"
    elif task == "grounding":
        protocol.update(lisa_box="first_shape", grounding_answer="first_pair")
        if masks:
            protocol["grounding_mask"] = "first_polygon"
    return protocol


def authors_training(task: str, method: str) -> str:
    """The authors' ``training`` tag value for a task's RFT or SFT rows ("" where unknown)."""
    if method == "rft":
        return f"reward:{AUTHORS_TRAINING_REWARD[task]}" if task in AUTHORS_TRAINING_REWARD else ""
    if method == "sft":
        return "sft:authors" if task == "grounding" else "sft:vrft"
    return ""
