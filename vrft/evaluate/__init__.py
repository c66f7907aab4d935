"""Stage 4: evaluate a base, SFT or RFT checkpoint on a dataset's eval split (see docs/evaluation.md).

``evaluate_checkpoint(EvaluateConfig, dataset_dir, output_dir, model=ModelConfig, label="rft")`` runs
batched inference (HF generate, or vLLM where installed) and scores it: COCO mAP / LVIS AP for
detection (the paper's two-step protocol, three named modes), accuracy for classification, box mIoU
(and SAM mask gIoU) for reasoning grounding.
"""

from vrft.evaluate.config import DETECTION_MODES, EvaluateConfig
from vrft.evaluate.detection import DetectionMetrics, answer_boxes, coco_metrics, lvis_metrics
from vrft.evaluate.inference import HFGenerator, Request, make_generator
from vrft.evaluate.run import EvalResult, evaluate_checkpoint, load_result

__all__ = [
    "DETECTION_MODES", "DetectionMetrics", "EvalResult", "EvaluateConfig", "HFGenerator", "Request", "answer_boxes",
    "coco_metrics", "evaluate_checkpoint", "load_result", "lvis_metrics", "make_generator",
]
