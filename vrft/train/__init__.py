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

from vrft._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "GRPOStageConfig": "vrft.train.config",
        "LoraSettings": "vrft.train.config",
        "SFTStageConfig": "vrft.train.config",
        "MlflowTarget": "vrft.train.callbacks",
        "TrainResult": "vrft.train.runtime",
        "latest_checkpoint": "vrft.train.checkpoints",
        "train_grpo": "vrft.train.grpo",
        "train_sft": "vrft.train.sft",
    },
)

__all__ = __dir__()
