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
    """

    batch_size: int = 8
    max_new_tokens: int = 1024  # the authors' evaluation setting
    temperature: float = 0.0  # 0 = greedy decoding; > 0 samples (with top_p and seed)
    top_p: float = 1.0
    seed: int = 0
    repetition_penalty: float | None = None  # None keeps the checkpoint's generation_config value
    detection_mode: DetectionMode = "existence_gated"
    max_eval_images: int | None = None  # the first N distinct images of the eval split; None = all
    backend: Literal["auto", "hf", "vllm"] = "hf"  # auto: vLLM when importable, else HF generate
    device: str = "auto"  # auto: cuda when available, else cpu
    metric: Literal["auto", "coco", "lvis"] = "auto"  # auto: lvis when the dataset's eval source is LVIS
    lvis_max_detections: int = 300  # per image, the LVIS API's official limit
    category_groups: dict[str, list[str]] = field(
        default_factory=dict
    )  # extra mAP/<group>, e.g. OVD novel/base
    # detection: "official" scores against the dataset's eval_ground_truth.json (the source file cut to the
    # eval images and categories: crowd regions, LVIS not-exhaustive lists kept) where the build wrote one;
    # "rebuilt" against a ground truth rebuilt from the rows (no crowd regions; a documented deviation).
    ground_truth: Literal["official", "rebuilt"] = "official"
    # existence_gated: who fills the gate. base_model: the base model's yes/no answers (gate.json, shared);
    # ground_truth: open exactly on annotated pairs; authors_file: the authors' per-image category lists
    # (gate_file), as their COCO/LVIS evaluation read them.
    gate_source: Literal["base_model", "ground_truth", "authors_file"] = "base_model"
    # gate_source authors_file: their exist_map_*.json ({image id: [category names]}), a path or a shipped
    # paper: name (paper:gates/exist_map_coco_Qwen2_vl_2B_baseline.json.gz).
    gate_file: str = ""
    # The processor's pixel budget while evaluating; null: the model section's max_pixels (the training
    # resolution). The authors evaluated at the processor default, 12845056 (12.8 MP).
    max_pixels: int | None = None
    # Put the literal text "<image>\n" before detection and classification prompts, as the authors' evaluation
    # scripts do (the image itself is still passed as the chat template's image).
    image_placeholder: bool = False
    # LVIS per-category AP: area_all averages precision over IoU and recall at area "all" (COCO's and the lvis
    # API's AP); area_ranges also over the four area ranges (all, small, medium, large), as the authors'
    # LVIS notebook does; mAP is then the mean of those per-category APs.
    lvis_ap_average: Literal["area_all", "area_ranges"] = "area_all"
    # LISA: answer_block reads the box from the last <answer> block (or the whole completion without one);
    # first_pair takes the first integer "(x1,y1),(x2,y2)" anywhere in the completion (the authors').
    grounding_answer: Literal["answer_block", "first_pair"] = "answer_block"
    # LISA gIoU: polygons = the union of the polygons, pixels of "ignore" polygons left out; first_polygon
    # = the first shape's polygon only, no ignore handling (the authors' mask_iou.py).
    grounding_mask: Literal["polygons", "first_polygon"] = "polygons"
    system_prompt: Literal["", "r1"] = ""  # "r1": the R1 system turn the authors' LISA evaluation uses
    require_answer_tags: bool = False  # True: a completion without <answer>…</answer> counts as no answer
    grounding_instructions: Literal["first", "all"] = (
        "first"  # LISA: the authors score the first instruction per image
    )
    iou_threshold: float = 0.5  # grounding: a box with IoU >= this counts as correct (Acc@IoU)
    sam_checkpoint: str = ""  # grounding: SAM weights; when set, masks from the predicted box give gIoU
    sam_model_type: str = "vit_h"
    masks_dir: str = ""  # grounding with SAM: the LISA directory whose JSON polygons give the true masks
    vllm_gpu_memory_utilization: float = 0.85
    sort_by_size: bool = True  # batch similar-sized requests together (less padding); outputs keep row order
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
