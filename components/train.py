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
    from vrft.tracking import STAGE_TRAIN, report_method
    from vrft.train import train_grpo, train_sft
    from vrft.train.callbacks import Tracking

    train = {"grpo": train_grpo, "sft": train_sft}[method]
    params = lambda c: {"model": c.model, method: getattr(c, method)}  # noqa: E731
    with open_stage(method, config_json, run_id, stage=STAGE_TRAIN, params=params,
                    method=report_method(method)) as stage:
        if stage.config.pipeline.train_nodes > 1:
            return _train_multi_node(stage, method, dataset, checkpoint)
        data_dir = stage.fetch(dataset, "dataset")
        tracking = None
        if stage.mlflow_run_id:
            tracking = Tracking(uri=stage.tracker.tracking_uri, run_id=stage.mlflow_run_id)
        result = train(getattr(stage.config, method), data_dir, stage.local_dir(method),
                       model=stage.config.model.materialized(), tracking=tracking)
        # The resumable checkpoint-N states (optimizer included) stay on the stage's disk; the
        # published artifact is the final Hugging Face model plus the run's logs.
        return stage.publish(result.output_dir, checkpoint, method, exclude=("checkpoint-*",))


def _train_multi_node(stage, method: str, dataset, checkpoint) -> str:
    """Launch the training as a PyTorchJob across ``pipeline.train_nodes`` nodes, wait for it, and
    publish what it wrote to the shared volume (this pod only orchestrates; it needs no GPU)."""
    from pathlib import Path

    from vrft.io import atomic_write_text
    from vrft.pipelines.kfp_client import image_refs
    from vrft.pipelines.pytorchjob import MultiNodeTraining, pytorchjob_manifest, run_pytorchjob

    p = stage.config.pipeline
    shared = Path(p.shared_mount) / "runs" / stage.run_id / method
    shared.mkdir(parents=True, exist_ok=True)
    config_path = shared / "experiment.json"  # JSON is YAML: `vrft train` reads it as the experiment
    atomic_write_text(config_path, stage.config.to_json())
    job = MultiNodeTraining(
        name=f"vrft-{method}-{stage.run_id}"[:40].rstrip("-").lower(), method=method, config=str(config_path),
        image=image_refs(p.image_registry, p.image_tag)[method], nodes=p.train_nodes,
        gpus_per_node=p.train_resources.gpus, dataset=dataset.metadata["uri"], shared_pvc=p.shared_pvc,
        output_dir=str(shared / "output"), shared_mount=p.shared_mount, cpu=p.train_resources.cpu,
        memory=p.train_resources.memory)
    run_pytorchjob(pytorchjob_manifest(job))
    return stage.publish(shared / "output", checkpoint, method, exclude=("checkpoint-*",))


def grpo_component(image: str):
    return dsl.component(grpo_stage, base_image=image, install_kfp_package=False)


def sft_component(image: str):
    return dsl.component(sft_stage, base_image=image, install_kfp_package=False)
