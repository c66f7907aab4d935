"""Stages 2 and 3 components: GRPO (Visual-RFT) and the SFT baseline on the same dataset.

Where the training runs follows ``pipeline.train_resources.gpus`` and ``pipeline.train_nodes``:
one GPU trains in the component's own process; ``gpus > 1`` on one node launches one process per
GPU with ``torchrun`` (:mod:`vrft.train.launch`); more than one node runs a PyTorchJob
(:mod:`vrft.components.pytorchjob`). Each publishes the final model and the logs the same way.
"""

import contextlib

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output


def grpo_stage(config_json: str, iteration: str, dataset: Input[Dataset], checkpoint: Output[Model]):
    """GRPO with verifiable visual rewards; publishes the final checkpoint and the training logs."""
    from vrft.components.train import run

    run("grpo", config_json, "", dataset, checkpoint, iteration=iteration)


def sft_stage(config_json: str, iteration: str, dataset: Input[Dataset], checkpoint: Output[Model]):
    """The SFT baseline on the identical data and step budget."""
    from vrft.components.train import run

    run("sft", config_json, "", dataset, checkpoint, iteration=iteration)


def run(method: str, config_json: str, run_id: str, dataset, checkpoint, *, iteration: str = "") -> str:
    from vrft.components.runtime import open_stage
    from vrft.tracking import STAGE_TRAIN, report_method
    from vrft.train import train_grpo, train_sft
    from vrft.train.callbacks import MlflowTarget
    from vrft.train.launch import needs_launcher

    train = {"grpo": train_grpo, "sft": train_sft}[method]
    params = lambda c: {"model": c.model, method: getattr(c, method)}  # noqa: E731
    with open_stage(
        method,
        config_json,
        run_id,
        iteration=iteration,
        stage=STAGE_TRAIN,
        params=params,
        method=report_method(method),
    ) as stage:
        if stage.config.pipeline.train_nodes > 1:
            return _train_multi_node(stage, method, dataset, checkpoint)
        data_dir = stage.fetch(dataset, "dataset")
        output_dir = stage.local_dir(method)
        mirror = _restore_checkpoint(stage, method, output_dir)
        processes = stage.config.pipeline.training_processes()
        with _checkpoint_uri(mirror):
            if needs_launcher(getattr(stage.config, method), processes):
                _train_on_all_gpus(stage, method, data_dir, output_dir, processes)
            else:
                tracking = None
                if stage.mlflow_run_id:
                    tracking = MlflowTarget(uri=stage.tracker.tracking_uri, run_id=stage.mlflow_run_id)
                train(
                    getattr(stage.config, method),
                    data_dir,
                    output_dir,
                    model=stage.config.model.materialized(),
                    tracking=tracking,
                )
        # The resumable checkpoint-N states (optimizer included) are not part of the published
        # artifact: it is the final Hugging Face model plus the run's logs.
        uri = stage.publish(output_dir, checkpoint, method, exclude=("checkpoint-*",))
        if mirror:  # they served a restart of this stage only
            from vrft.train.remote_checkpoints import delete_all

            delete_all(mirror)
        return uri


UPLOAD_CHECKPOINTS_ENV = "VRFT_UPLOAD_CHECKPOINTS"
"""Set to 1 by the DAG on a cluster's training tasks: mirror checkpoints to the run's store prefix."""


def checkpoint_prefix(stage) -> str:
    """Where the stage mirrors its checkpoints, under its iteration's prefix (empty when it does not)."""
    import os

    return stage.prefix("checkpoints") if os.environ.get(UPLOAD_CHECKPOINTS_ENV) == "1" else ""


def _restore_checkpoint(stage, method: str, output_dir) -> str:
    """With checkpoint mirroring on: put the newest complete mirrored checkpoint of an earlier attempt
    of this stage into ``output_dir`` (so ``resume: auto`` continues it) and copy that attempt's
    per-step metrics into this attempt's MLflow run. Returns the mirror prefix ("" when off)."""
    from vrft.train.callbacks import TRAIN_LOG, read_jsonl
    from vrft.train.remote_checkpoints import restore_latest

    mirror = checkpoint_prefix(stage)
    if not mirror:
        return ""
    restored = restore_latest(mirror, output_dir)
    for line in restored.skipped:
        print(f"{method}: {line}", flush=True)
    if restored.checkpoint is None:
        return mirror
    step = int(restored.checkpoint.name.rsplit("-", 1)[1])
    print(f"{method}: resuming from {mirror}{restored.checkpoint.name}/ (step {step})", flush=True)
    if stage.mlflow_run_id:
        for record in read_jsonl(output_dir / TRAIN_LOG):
            metrics = {
                k: v
                for k, v in record.items()
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            if metrics and 0 < record.get("step", 0) <= step:
                stage.tracker.log_metrics(metrics, step=record["step"], run_id=stage.mlflow_run_id)
    return mirror


@contextlib.contextmanager
def _checkpoint_uri(uri: str):
    """``$VRFT_CHECKPOINT_URI`` for the training in this process and the processes it launches."""
    import os

    from vrft.train.checkpoints import CHECKPOINT_URI_ENV

    previous = os.environ.get(CHECKPOINT_URI_ENV)
    if uri:
        os.environ[CHECKPOINT_URI_ENV] = uri
    else:
        os.environ.pop(CHECKPOINT_URI_ENV, None)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CHECKPOINT_URI_ENV, None)
        else:
            os.environ[CHECKPOINT_URI_ENV] = previous


def _train_on_all_gpus(stage, method: str, data_dir, output_dir, processes: int):
    """One process per GPU of this node (torchrun), logging into this stage's MLflow run."""
    from dataclasses import replace

    from vrft.io import atomic_write_text
    from vrft.train.launch import run_distributed

    # The model is materialized once here, not by every rank at once into one cache directory.
    config = replace(stage.config, model=stage.config.model.materialized())
    config_path = stage.work_dir / "experiment.json"  # JSON is YAML: `vrft train` reads it as the experiment
    atomic_write_text(config_path, config.to_json())
    env = {"MLFLOW_TRACKING_URI": stage.tracker.tracking_uri} if stage.mlflow_run_id else {}
    return run_distributed(
        method,
        config_path,
        data_dir,
        output_dir,
        processes,
        tracking_run_id=stage.mlflow_run_id or "",
        env=env,
    )


def _train_multi_node(stage, method: str, dataset, checkpoint) -> str:
    """Launch the training as a PyTorchJob across ``pipeline.train_nodes`` nodes, wait for it, and
    publish what it wrote to the shared volume (this pod only orchestrates; it needs no GPU).

    The job's name and shared directory are unique per run, sweep iteration and method, so the
    iterations of a shot sweep never collide; the job is owned by this pod (deleted with it),
    waited for at most ``pipeline.timeouts.train``, deleted when this stage is stopped, and adopted
    or replaced by a retry of this task. Its ranks log into this stage's MLflow run (rank 0 writes)
    and, with mirroring on, rank 0 uploads each checkpoint to this stage's prefix.
    """
    from pathlib import Path

    from vrft.components.cluster import image_refs
    from vrft.components.pytorchjob import (
        MultiNodeTraining,
        job_name,
        owner_from_env,
        pytorchjob_manifest,
        run_pytorchjob,
    )
    from vrft.io import atomic_write_text

    p = stage.config.pipeline
    shared = Path(p.shared_mount) / "runs" / stage.run_id / stage.iteration / method
    shared.mkdir(parents=True, exist_ok=True)
    config_path = shared / "experiment.json"  # JSON is YAML: `vrft train` reads it as the experiment
    atomic_write_text(config_path, stage.config.to_json())
    # The shared volume keeps checkpoints across attempts; the store's copy covers a lost volume.
    mirror = _restore_checkpoint(stage, method, shared / "output")
    job = MultiNodeTraining(
        name=job_name(method, stage.run_id, stage.iteration),
        method=method,
        config=str(config_path),
        image=image_refs(p.image_registry, p.image_tag, p.image_digests)[method],
        nodes=p.train_nodes,
        gpus_per_node=p.train_resources.gpus,
        dataset=dataset.metadata["uri"],
        shared_pvc=p.shared_pvc,
        output_dir=str(shared / "output"),
        shared_mount=p.shared_mount,
        cpu=p.train_resources.cpu,
        memory=p.train_resources.memory,
        dataset_manifest_sha256=dataset.metadata.get("manifest_sha256", ""),
        active_deadline_s=p.timeout_s("train"),
        owner_pod=owner_from_env(),
        tracking_run_id=stage.mlflow_run_id or "",
        tracking_uri=stage.tracker.tracking_uri if stage.mlflow_run_id else "",
        checkpoint_uri=mirror,
    )
    run_pytorchjob(pytorchjob_manifest(job), timeout_s=p.timeout_s("train"))
    uri = stage.publish(shared / "output", checkpoint, method, exclude=("checkpoint-*",))
    if mirror:
        from vrft.train.remote_checkpoints import delete_all

        delete_all(mirror)
    return uri


def grpo_component(image: str):
    return dsl.component(grpo_stage, base_image=image, install_kfp_package=False)


def sft_component(image: str):
    return dsl.component(sft_stage, base_image=image, install_kfp_package=False)
