"""Stages 2 and 3 components: GRPO (Visual-RFT) and the SFT baseline on the same dataset."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output


def grpo_stage(config_json: str, run_id: str, dataset: Input[Dataset], checkpoint: Output[Model]):
    """GRPO with verifiable visual rewards; publishes the final checkpoint and the training logs."""
    from vrft.components.train import run

    run("grpo", config_json, run_id, dataset, checkpoint)


def sft_stage(config_json: str, run_id: str, dataset: Input[Dataset], checkpoint: Output[Model]):
    """The SFT baseline on the identical data and step budget."""
    from vrft.components.train import run

    run("sft", config_json, run_id, dataset, checkpoint)


def run(method: str, config_json: str, run_id: str, dataset, checkpoint) -> str:
    from vrft.components.runtime import open_stage
    from vrft.train import train_grpo, train_sft
    from vrft.train.callbacks import Tracking

    train = {"grpo": train_grpo, "sft": train_sft}[method]
    report_method = {"grpo": "rft", "sft": "sft"}[method]
    params = lambda c: {"model": c.model, method: getattr(c, method)}  # noqa: E731
    with open_stage(method, config_json, run_id, stage="train", params=params, method=report_method) as stage:
        data_dir = stage.fetch(dataset, "dataset")
        tracking = None
        if stage.mlflow_run_id:
            tracking = Tracking(uri=stage.tracker.tracking_uri, run_id=stage.mlflow_run_id)
        result = train(getattr(stage.config, method), data_dir, stage.local_dir(method),
                       model=stage.config.model.materialized(), tracking=tracking)
        # The resumable checkpoint-N states (optimizer included) stay on the stage's disk; the
        # published artifact is the final Hugging Face model plus the run's logs.
        return stage.publish(result.output_dir, checkpoint, method, exclude=("checkpoint-*",))


def grpo_component(image: str):
    return dsl.component(grpo_stage, base_image=image, install_kfp_package=False)


def sft_component(image: str):
    return dsl.component(sft_stage, base_image=image, install_kfp_package=False)
