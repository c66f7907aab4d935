"""Stages 2 and 3: GRPO with verifiable visual rewards, and the SFT baseline on the same data.

Each stage is one plain function, called alike by the CLI, tests and the Kubeflow component::

    from vrft.config import load_config
    from vrft.models.config import ModelConfig
    from vrft.train import GRPOStageConfig, train_grpo

    config = load_config(GRPOStageConfig, "exp.yaml", ["grpo.max_steps=25"], section="grpo")
    model = load_config(ModelConfig, "exp.yaml", [], section="model")
    result = train_grpo(config, "out/dataset", "out/grpo", model=model)
    result.final_dir  # Hugging Face model + processor, loadable with from_pretrained

See docs/training.md for defaults, memory advice, multi-GPU launches and resume semantics.
"""

from vrft.train.callbacks import Tracking
from vrft.train.checkpoints import latest_checkpoint
from vrft.train.config import GRPOStageConfig, LoraSettings, SFTStageConfig
from vrft.train.grpo import train_grpo
from vrft.train.runtime import TrainResult
from vrft.train.sft import train_sft

__all__ = [
    "GRPOStageConfig",
    "LoraSettings",
    "SFTStageConfig",
    "TrainResult",
    "Tracking",
    "latest_checkpoint",
    "train_grpo",
    "train_sft",
]
