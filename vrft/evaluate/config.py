"""The ``evaluate:`` section of an experiment YAML (stage 4).

>>> from vrft.config import from_dict
>>> cfg = from_dict(EvaluateConfig, {"batch_size": 16, "detection_mode": "gt_present"})
>>> cfg.greedy, cfg.max_new_tokens
(True, 1024)
>>> from_dict(EvaluateConfig, {"detection_mode": "gated"})
Traceback (most recent call last):
...
vrft.config.ConfigError: detection_mode: 'gated' is not one of 'existence_gated', 'all_categories', 'gt_present'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vrft.config import ConfigError

DetectionMode = Literal["existence_gated", "all_categories", "gt_present"]
DETECTION_MODES: tuple[str, ...] = ("existence_gated", "all_categories", "gt_present")


@dataclass
class EvaluateConfig:
    """How a checkpoint is evaluated on a dataset's ``eval`` split.

    Detection modes (named in every output, because they change the numbers):

    * ``existence_gated`` — the paper's protocol: one fixed gate per evaluation set decides which
      (image, category) pairs are asked for boxes, the same list for base, SFT and RFT. The gate
      comes from ``gate_source``: ``base_model`` (the base model's answer to "is there a
      {category}?", computed by the base evaluation and handed to the others as ``gate.json``) or
      ``ground_truth`` (open exactly where the category is annotated);
    * ``all_categories`` — ask for boxes for every (image, category) pair (no gate, so recall is not
      capped by the existence answer);
    * ``gt_present`` — ask for boxes only for the categories present in the ground truth (an upper
      bound that isolates localisation from recognition).

    Parameters:
        batch_size: Requests per ``generate`` call.
        max_new_tokens: Tokens a model may generate per answer (1024: the authors' evaluation setting).
        temperature: 0: greedy decoding; > 0 samples (with ``top_p`` and ``seed``).
        top_p: Nucleus sampling's probability mass when sampling.
        seed: The sampling seed when ``temperature`` > 0.
        repetition_penalty: transformers' repetition penalty; ``null`` keeps the checkpoint's
            ``generation_config`` value.
        detection_mode: Which (image, category) pairs are asked for boxes (above).
        max_eval_images: Only the first N distinct images of the eval split (with all their rows);
            ``null``: all.
        backend: ``hf`` (transformers' ``generate``), ``vllm``, or ``auto``: vLLM when importable.
        device: Where the model runs; ``auto``: cuda when available, else cpu.
        metric: Detection AP: ``coco``, ``lvis`` (the LVIS API), or ``auto``: lvis when the dataset's
            eval source is LVIS.
        lvis_max_detections: Detections kept per image for LVIS AP (300: the LVIS API's limit).
        category_groups: Extra ``mAP/<group>`` metrics over these categories, e.g. OVD's
            ``{novel: [...], base: [...]}``.
        ground_truth: Detection: ``official`` scores against the dataset's ``eval_ground_truth.json``
            (the source file cut to the eval images and categories, crowd regions and LVIS
            not-exhaustive lists kept) where the build wrote one; ``rebuilt`` against a ground truth
            rebuilt from the rows (no crowd regions; a documented deviation).
        gate_source: ``existence_gated``: who fills the gate (above); ``authors_file``: the authors'
            per-image category lists (``gate_file``), as their COCO/LVIS evaluation read them.
        gate_file: ``gate_source: authors_file``: their ``exist_map_*.json`` (``{image id: [category
            names]}``), a path or a shipped ``paper:`` name
            (``paper:gates/exist_map_coco_Qwen2_vl_2B_baseline.json.gz``).
        max_pixels: The processor's pixel budget while evaluating; ``null``: the model section's
            ``max_pixels`` (the training resolution). The authors evaluated at the processor default,
            12845056 (12.8 MP).
        image_placeholder: Put the literal text ``"<image>\\n"`` before detection and classification
            prompts, as the authors' evaluation scripts do (the image is still passed as the chat
            template's image).
        lvis_ap_average: LVIS per-category AP: ``area_all`` averages precision over IoU and recall at
            area "all" (COCO's and the lvis API's AP); ``area_ranges`` also over the four area ranges
            (all, small, medium, large), as the authors' LVIS notebook does.
        grounding_answer: LISA: ``answer_block`` reads the box from the last ``<answer>`` block (or the
            whole completion without one); ``first_pair`` takes the first integer ``(x1,y1),(x2,y2)``
            anywhere in the completion (the authors').
        grounding_mask: LISA gIoU: ``polygons`` = the union of the polygons, pixels of "ignore"
            polygons left out; ``first_polygon`` = the first shape's polygon only, no ignore handling
            (the authors').
        system_prompt: ``r1``: the R1 system turn the authors' LISA evaluation uses; empty: none.
        require_answer_tags: A completion without ``<answer>…</answer>`` counts as no answer.
        grounding_instructions: LISA: score the ``first`` instruction per image (the authors), or
            ``all`` of them.
        iou_threshold: Grounding: a box with IoU >= this counts as correct (Acc@IoU).
        sam_checkpoint: Grounding: SAM weights; when set, masks from the predicted box give gIoU.
        sam_model_type: The SAM architecture of ``sam_checkpoint`` (``vit_h``, ``vit_l``, ``vit_b``).
        masks_dir: Grounding with SAM: the LISA directory whose JSON polygons give the true masks.
        vllm_gpu_memory_utilization: vLLM: the fraction of GPU memory it may take.
        sort_by_size: Batch similar-sized requests together (less padding); outputs keep row order.
        progress: Show progress bars.
    """

    batch_size: int = 8
    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    repetition_penalty: float | None = None
    detection_mode: DetectionMode = "existence_gated"
    max_eval_images: int | None = None
    backend: Literal["auto", "hf", "vllm"] = "hf"
    device: str = "auto"
    metric: Literal["auto", "coco", "lvis"] = "auto"
    lvis_max_detections: int = 300
    category_groups: dict[str, list[str]] = field(default_factory=dict)
    ground_truth: Literal["official", "rebuilt"] = "official"
    gate_source: Literal["base_model", "ground_truth", "authors_file"] = "base_model"
    gate_file: str = ""
    max_pixels: int | None = None
    image_placeholder: bool = False
    lvis_ap_average: Literal["area_all", "area_ranges"] = "area_all"
    grounding_answer: Literal["answer_block", "first_pair"] = "answer_block"
    grounding_mask: Literal["polygons", "first_polygon"] = "polygons"
    system_prompt: Literal["", "r1"] = ""
    require_answer_tags: bool = False
    grounding_instructions: Literal["first", "all"] = "first"
    iou_threshold: float = 0.5
    sam_checkpoint: str = ""
    sam_model_type: str = "vit_h"
    masks_dir: str = ""
    vllm_gpu_memory_utilization: float = 0.85
    sort_by_size: bool = True
    progress: bool = True

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature: must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.max_eval_images is not None and self.max_eval_images < 1:
            raise ConfigError(f"max_eval_images: must be positive or null (all), got {self.max_eval_images}")
        if self.lvis_max_detections < 1:
            raise ConfigError(f"lvis_max_detections: must be positive, got {self.lvis_max_detections}")
        if not 0 < self.iou_threshold <= 1:
            raise ConfigError(f"iou_threshold: must be in (0, 1], got {self.iou_threshold}")
        if self.sam_checkpoint and not self.masks_dir:
            raise ConfigError(
                "masks_dir: gIoU with sam_checkpoint needs the LISA directory holding the "
                "ground-truth polygons (the dataset rows only keep boxes)"
            )
        if (
            self.gate_source == "authors_file"
            and not self.gate_file
            and self.detection_mode == "existence_gated"
        ):
            raise ConfigError(
                "gate_file: gate_source authors_file needs the authors' gate list (their exist_map_*.json; "
                "paper:gates/exist_map_coco_Qwen2_vl_2B_baseline.json.gz ships with vrft)"
            )
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ConfigError(f"max_pixels: must be positive or null (the model's), got {self.max_pixels}")
        for name, members in self.category_groups.items():
            if not members:
                raise ConfigError(f"category_groups.{name}: empty group")
