"""Stage 2: GRPO with vrft's verifiable visual rewards, on trl's GRPOTrainer.

>>> from vrft.config import from_dict
>>> cfg = from_dict(GRPOStageConfig, {"max_steps": 25, "lora": {"enabled": True, "r": 16}})
>>> cfg.lora.r, cfg.vision_tower_frozen
(16, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import RepeatSampler

from vrft.config import ConfigError
from vrft.models.config import ModelConfig
from vrft.rewards import monitor_functions_for_trainer
from vrft.train.callbacks import MlflowTarget, RolloutRecorder
from vrft.train.checkpoints import CheckpointWeightsMixin
from vrft.train.config import (
    REWARD_TASKS,
    GRPOStageConfig,
    check_batch_divisibility,
    check_prompts_per_step,
    world_size,
)
from vrft.train.data import grpo_dataset
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


class EpochSeededRepeatSampler(RepeatSampler):
    """trl's sampler with each epoch's order a function of (seed, epoch).

    trl's RepeatSampler draws every epoch's permutation from one generator seeded once, so a run
    resumed in epoch e > 0 starts again from epoch 0's order: it skips the wrong batches and sees
    some rows twice and others never. The Trainer calls ``set_epoch`` in fresh and resumed runs
    alike, so seeding per epoch gives both the same order.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            # Spread the seeds so that (seed s, epoch e + 1) never repeats (seed s + 1, epoch e).
            self.generator.manual_seed((self.seed or 0) * 1_000_003 + self.epoch)
        return super().__iter__()


class VrftGRPOTrainer(CheckpointWeightsMixin, GRPOTrainer):
    """trl's GRPOTrainer with a data order and weights that survive resuming (see
    :class:`EpochSeededRepeatSampler` and :class:`~vrft.train.checkpoints.CheckpointWeightsMixin`)."""

    def _get_train_sampler(self, dataset: Any = None) -> RepeatSampler:
        base = super()._get_train_sampler(dataset)
        return EpochSeededRepeatSampler(
            base.data_source,
            mini_repeat_count=base.mini_repeat_count,
            batch_size=base.batch_size,
            repeat_count=base.repeat_count,
            shuffle=base.shuffle,
            seed=base.seed,
        )


def train_grpo(
    config: GRPOStageConfig,
    dataset_dir: str | Path,
    output_dir: str | Path,
    *,
    model: ModelConfig,
    tracking: MlflowTarget | None = None,
) -> TrainResult:
    """Train ``model`` with GRPO on the ``train`` split of ``dataset_dir``; write ``output_dir``.

    ``output_dir`` receives ``checkpoint-N`` (resumable), ``final`` (the model), ``config.json``,
    ``train_log.jsonl``, ``samples.jsonl`` and ``completions.jsonl``. With ``resume: auto`` (the
    default) a run finding checkpoints there continues from the newest complete one.
    """
    check_batch_divisibility(config, world_size())
    plan = preflight(config, dataset_dir, output_dir, model)
    check_prompts_per_step(config, world_size(), len(plan.train))
    reward = config.reward_name(plan.task)
    if plan.task not in REWARD_TASKS.get(reward, (plan.task,)):
        raise ConfigError(
            f"grpo.reward: {reward!r} scores {'/'.join(REWARD_TASKS[reward])} answers but "
            f"{dataset_dir} is a {plan.task} dataset; leave grpo.reward empty for the task's reward"
        )
    reward_functions = config.reward_functions(plan.task)
    # Logged every step at reward weight 0 (e.g. the share of degenerate detection answers), never trained on.
    monitors = monitor_functions_for_trainer(reward, **config.reward_options)
    processor = model.load_processor()
    dataset = grpo_dataset(plan.train, model.convention(processor), config.prompt_style)
    record = run_record("grpo", config, model, dataset_dir, plan)
    start_logs(plan, record)

    # The trainer arguments come first: with ZeRO-3 they make from_pretrained load the weights sharded.
    args = GRPOConfig(
        **trainer_arguments(config, plan, model),
        num_generations=config.num_generations,
        beta=config.beta,
        temperature=config.temperature,
        max_completion_length=config.max_completion_length,
        loss_type=config.loss_type,
        reward_weights=[1.0] * len(reward_functions) + [0.0] * len(monitors),
        top_k=config.top_k,
        use_bias_correction_kl=config.use_bias_correction_kl,
        log_completions=False,  # completions.jsonl instead (trl's needs rich/pandas/wandb)
    )
    policy, peft_config = load_policy(config, model, plan.deepspeed)
    recorder = RolloutRecorder(plan.output_dir, config.completions_per_step, plan.is_main_process)
    trainer = VrftGRPOTrainer(
        model=policy,
        reward_funcs=recorder.wrap(reward_functions) + monitors,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=callbacks(plan, tracking, record),
    )
    return train_and_save(trainer, "grpo", config, model, plan)
