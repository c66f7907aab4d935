"""Stage 3: the SFT baseline on the same rows as GRPO, on trl's SFTTrainer.

The target is :func:`vrft.tasks.target_answer`: a short think block and the correct answer in
exactly the format the prompt asks for, boxes in the model's convention. The loss covers only that
completion (``completion_only_loss``), not the prompt or the image tokens.
"""

from __future__ import annotations

from pathlib import Path

from trl import SFTConfig, SFTTrainer

from vrft.models.config import ModelConfig
from vrft.train.callbacks import MlflowTarget
from vrft.train.checkpoints import CheckpointWeightsMixin
from vrft.train.config import SFTStageConfig
from vrft.train.data import sft_dataset
from vrft.train.runtime import (
    TrainResult,
    callbacks,
    load_policy,
    preflight,
    run_record,
    start_logs,
    train_and_save,
    trainer_arguments,
)


class VrftSFTTrainer(CheckpointWeightsMixin, SFTTrainer):
    """trl's SFTTrainer whose resume restores every weight (see :class:`CheckpointWeightsMixin`)."""


def train_sft(
    config: SFTStageConfig,
    dataset_dir: str | Path,
    output_dir: str | Path,
    *,
    model: ModelConfig,
    tracking: MlflowTarget | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on the target answers of ``dataset_dir``'s ``train`` split; write ``output_dir``
    (same layout as :func:`vrft.train.grpo.train_grpo`, without the rollout logs)."""
    plan = preflight(config, dataset_dir, output_dir, model)
    processor = model.load_processor()
    dataset = sft_dataset(plan.train, model.convention(processor), config.prompt_style)
    record = run_record("sft", config, model, dataset_dir, plan)
    start_logs(plan, record)

    # The trainer arguments come first: with ZeRO-3 they make from_pretrained load the weights sharded.
    args = SFTConfig(
        **trainer_arguments(config, plan, model),
        max_length=config.max_length,
        completion_only_loss=True,
        packing=False,
    )
    policy, peft_config = load_policy(config, model, plan.deepspeed)
    trainer = VrftSFTTrainer(
        model=policy,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=callbacks(plan, tracking, record),
    )
    return train_and_save(trainer, "sft", config, model, plan)
