"""Stage 4: evaluate a base, SFT or RFT checkpoint on a dataset's eval split (see docs/evaluation.md).

``evaluate_checkpoint(EvaluateConfig, dataset_dir, output_dir, model=ModelConfig, label="rft")`` runs
batched inference (HF generate, or vLLM where installed) and scores it: COCO mAP / LVIS AP for
detection (the paper's two-step protocol, three named modes), accuracy for classification, box mIoU
(and SAM mask gIoU) for reasoning grounding.
"""

from vrft._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DETECTION_MODES": "vrft.evaluate.config",
        "DetectionMetrics": "vrft.evaluate.detection",
        "EvalResult": "vrft.evaluate.run",
        "EvaluateConfig": "vrft.evaluate.config",
        "Gate": "vrft.evaluate.gate",
        "HFGenerator": "vrft.evaluate.inference",
        "Request": "vrft.evaluate.inference",
        "answer_boxes": "vrft.evaluate.detection",
        "coco_metrics": "vrft.evaluate.detection",
        "evaluate_checkpoint": "vrft.evaluate.run",
        "load_result": "vrft.evaluate.run",
        "load_gate": "vrft.evaluate.gate",
        "lvis_metrics": "vrft.evaluate.detection",
        "make_generator": "vrft.evaluate.inference",
    },
)

__all__ = __dir__()
