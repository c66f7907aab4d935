"""One stage's inputs to the preflight: its images' tokens, its longest prompt, its memory estimate.

Everything here reads one experiment config and the model's files; nothing knows about the pipeline
(:mod:`vrft.pipelines.preflight` runs it for every stage of every sweep iteration and adds the
GPUs the DAG asks for). ``bench/bench_memory.py`` uses it to predict the peaks it then measures.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Any

from vrft.experiment import ExperimentConfig
from vrft.models.config import ModelConfig
from vrft.preflight.images import ImageSize, SourceScan, SourceText, scan_dataset
from vrft.preflight.memory import (
    ZERO3_OFFLOAD,
    Estimate,
    EvaluationSetup,
    ModelShape,
    Sequences,
    TrainingSetup,
    evaluation_estimate,
    training_estimate,
)
from vrft.preflight.tokens import ModelFiles, TokenCount


@dataclass
class ImageTokens:
    """One split's image tokens: the spread, and the image with the most (what every check uses)."""

    split: str
    scan: SourceScan
    counts: list[int] = field(default_factory=list)
    worst: ImageSize | None = None
    worst_tokens: int = 0
    refused: list[str] = field(default_factory=list)  # images the processor refuses

    def describe(self, files: ModelFiles) -> str:
        if self.worst is None:
            return (
                f"{self.split}: {self.scan.describe()}; assuming the largest image max_pixels allows: "
                f"{self.worst_tokens:,} image tokens"
            )
        w, h = files.resized(self.worst.width, self.worst.height)
        spread = (
            f"image tokens {min(self.counts):,} min, {int(statistics.median(self.counts)):,} median, "
            f"{self.worst_tokens:,} max"
        )
        if self.scan.generated:
            return f"{self.split}: {self.scan.describe()}; {self.worst_tokens:,} image tokens each (resized to {w}×{h})"
        return (
            f"{self.split}: {self.scan.describe()}; {spread} ({self.worst.name}, "
            f"{self.worst.width}×{self.worst.height} → {w}×{h})"
        )


def image_tokens(scan: SourceScan, files: ModelFiles) -> ImageTokens:
    stats = ImageTokens(scan.split, scan)
    cache: dict[tuple[int, int], int | None] = {}
    for image in scan.sizes:
        key = (image.width, image.height)
        if key not in cache:
            try:
                cache[key] = files.image_tokens(image.width, image.height)
            except ValueError as exc:  # smart_resize: aspect ratio above 200
                cache[key] = None
                stats.refused.append(
                    f"{scan.split} image {image.name} ({image.width}×{image.height}): the processor refuses it "
                    f"({exc}); remove it from the source"
                )
        tokens = cache[key]
        if tokens is None:
            continue
        stats.counts.append(tokens)
        if tokens > stats.worst_tokens:
            stats.worst, stats.worst_tokens = image, tokens
    if stats.worst is None:
        stats.worst_tokens = files.max_image_tokens
    return stats


@dataclass(frozen=True)
class Prompt:
    label: str  # e.g. "detection, category 'fire hydrant'"
    text: str
    system: str = ""
    target: str = ""  # the SFT target answer (train prompts)


def _row(task: str, image: ImageSize | None, **values: Any) -> dict[str, Any]:
    width, height = (image.width, image.height) if image else (640, 480)
    row = {
        "task": task,
        "category": "",
        "noun": "",
        "instruction": "",
        "width": width,
        "height": height,
        "gt_boxes": [],
        "aliases": [],
    }
    row.update(values)
    return row


def stage_prompts(
    config: ExperimentConfig, text: SourceText, model: ModelConfig, worst: dict[str, ImageSize | None]
) -> tuple[list[Prompt], list[Prompt], list[str]]:
    """The train prompts (GRPO and SFT, with SFT targets) and the evaluation prompts, and notes."""
    from vrft.data.build import resolve_plan
    from vrft.prompts import SYSTEM_PROMPTS
    from vrft.tasks import prompt_text, target_answer

    plan = resolve_plan(config.dataset)
    convention = model.convention()
    notes: list[str] = []
    train: list[Prompt] = []
    evaluate: list[Prompt] = []
    task = plan.task
    if task == "detection":
        train_categories = plan.categories or text.categories
        eval_categories = plan.eval_categories or train_categories
        if not train_categories:
            notes.append(
                "category names unknown here (no preset or list, source not readable): prompts without one"
            )
            train_categories = eval_categories = [""]
        for name in train_categories:
            row = _row(task, worst["train"], category=name)
            # One box: the shortest target answer (rows with more boxes have longer ones).
            row["gt_boxes"] = [[0.0, 0.0, row["width"] / 2, row["height"] / 2]]
            train.append(
                Prompt(
                    f"detection, category {name!r}",
                    prompt_text(row, convention),
                    target=target_answer(row, convention),
                )
            )
        existence = config.evaluate.detection_mode == "existence_gated"
        for name in eval_categories:
            row = _row(task, worst["eval"], category=name)
            evaluate.append(Prompt(f"detection, category {name!r}", prompt_text(row, convention)))
            if existence:
                evaluate.append(
                    Prompt(f"existence, category {name!r}", prompt_text(row, convention, prompt="existence"))
                )
    elif task == "classification":
        classes = list(plan.class_list.classes) if plan.class_list else text.categories
        longest = max(classes, key=len) if classes else ""
        row = _row(task, worst["train"], noun=plan.noun, category=longest)
        train.append(
            Prompt(
                f"classification, noun {plan.noun!r}",
                prompt_text(row, convention),
                target=target_answer(row, convention),
            )
        )
        evaluate.append(
            Prompt(
                f"classification, noun {plan.noun!r}",
                prompt_text(_row(task, worst["eval"], noun=plan.noun), convention),
            )
        )
    else:  # grounding
        instructions = sorted(set(text.instructions), key=len, reverse=True)[:50] or [""]
        if instructions == [""]:
            notes.append("grounding instructions unknown here (source not readable): prompts without one")
        system = SYSTEM_PROMPTS[config.evaluate.system_prompt]
        for instruction in instructions:
            for split, prompts in (("train", train), ("eval", evaluate)):
                row = _row(task, worst[split], instruction=instruction)
                row["gt_boxes"] = [[0.0, 0.0, row["width"] / 2, row["height"] / 2]]
                label = f"grounding, instruction of {len(instruction)} characters"
                if split == "train":
                    prompts.append(
                        Prompt(label, prompt_text(row, convention), target=target_answer(row, convention))
                    )
                else:
                    prompts.append(Prompt(label, prompt_text(row, convention), system=system))
    return train, evaluate, notes


@dataclass(frozen=True)
class Longest:
    prompt: Prompt
    tokens: TokenCount  # the whole prompt, image tokens included
    image_tokens: int
    image_end: int  # tokens up to and including the image's last token
    target: TokenCount  # the SFT target turn (train prompts)


def longest_prompt(prompts: list[Prompt], image_tokens_: int, files: ModelFiles) -> Longest:
    best: Longest | None = None
    for prompt in prompts:
        tokens = files.prompt_tokens(prompt.text, image_tokens_, prompt.system)
        if best is None or tokens.value > best.tokens.value:
            rendered = files.render(prompt.text, prompt.system)
            before = rendered.split("<|image_pad|>", 1)[0]
            target = (
                files.completion_tokens(prompt.text, prompt.target, prompt.system)
                if prompt.target
                else TokenCount(0)
            )
            best = Longest(
                prompt, tokens, image_tokens_, files.count_text(before).value + image_tokens_, target
            )
    assert best is not None  # stage_prompts always returns at least one prompt
    return best


@dataclass(frozen=True)
class StageInputs:
    """What the image and prompt part of the preflight settles, for the memory part to use."""

    stats: dict[str, ImageTokens]  # by split
    train: Longest
    evaluation: Longest
    notes: list[str]

    def sequences(self, config: ExperimentConfig) -> tuple[dict[str, Sequences], Sequences]:
        """The longest sequence of GRPO and SFT, and of evaluation, under ``config``'s settings."""
        train = {
            "grpo": Sequences(
                self.train.tokens.value, self.train.image_tokens, config.grpo.max_completion_length
            ),
            "sft": Sequences(self.train.tokens.value, self.train.image_tokens, self.train.target.value),
        }
        evaluation = Sequences(
            self.evaluation.tokens.value, self.evaluation.image_tokens, config.evaluate.max_new_tokens
        )
        return train, evaluation


def stage_inputs(config: ExperimentConfig, files: ModelFiles) -> StageInputs:
    """Scan the dataset's sources, count every image's tokens and find each stage's longest prompt."""
    scans, text = scan_dataset(config.dataset)
    stats = {scan.split: image_tokens(scan, files) for scan in scans}
    train_prompts, eval_prompts, notes = stage_prompts(
        config, text, files.model, {split: stats[split].worst for split in stats}
    )
    train = longest_prompt(train_prompts, stats["train"].worst_tokens, files)
    evaluation = longest_prompt(eval_prompts, stats["eval"].worst_tokens, files)
    return StageInputs(stats, train, evaluation, notes)


def stage_estimate(
    stage: str,
    config: ExperimentConfig,
    shape: ModelShape,
    train_seq: dict[str, Sequences],
    eval_seq: Sequences,
    gpu_memory: float,
    *,
    setup_override: dict[str, Any] | None = None,
) -> Estimate | None:
    """``stage``'s estimate under ``config``, or None where the stage gets no GPU."""
    p = config.pipeline
    if stage == "evaluate":
        if not p.evaluate_resources.gpus:
            return None
        e = config.evaluate
        weights = 4 if config.model.dtype == "float32" else 2
        vllm = e.vllm_gpu_memory_utilization if e.backend == "vllm" else None
        sequences = dataclasses.replace(eval_seq, completion_tokens=e.max_new_tokens)
        return evaluation_estimate(shape, EvaluationSetup(e.batch_size, sequences, weights, vllm), gpu_memory)
    if not p.train_resources.gpus:
        return None
    stage_config = getattr(config, stage)
    sequences = train_seq[stage]
    if stage == "grpo":
        sequences = dataclasses.replace(sequences, completion_tokens=stage_config.max_completion_length)
    setup = TrainingSetup.of(stage, stage_config, config.model, shape, p.training_processes(), sequences)
    if setup_override:
        setup = dataclasses.replace(setup, **setup_override)
    return training_estimate(shape, setup)


def _with(config: ExperimentConfig, **sections: dict[str, Any]) -> ExperimentConfig:
    changed = config
    for section, values in sections.items():
        changed = dataclasses.replace(
            changed, **{section: dataclasses.replace(getattr(changed, section), **values)}
        )
    return changed


def knobs(
    stage: str,
    config: ExperimentConfig,
    shape: ModelShape,
    train_seq: dict[str, Sequences],
    eval_seq: Sequences,
    files: ModelFiles,
    stats: dict[str, ImageTokens],
    gpu_memory: float,
) -> list[tuple[str, Estimate]]:
    """Single changes that lower ``stage``'s peak, each with its predicted peak (smallest first)."""
    options: list[
        tuple[str, ExperimentConfig, dict[str, Any] | None, dict[str, Sequences] | None, Sequences | None]
    ] = []
    if stage == "evaluate":
        e = config.evaluate
        if e.batch_size > 1:
            options.append(
                (
                    f"evaluate.batch_size={e.batch_size // 2}",
                    _with(config, evaluate={"batch_size": e.batch_size // 2}),
                    None,
                    None,
                    None,
                )
            )
        if e.max_new_tokens > 256:
            options.append(
                (
                    "evaluate.max_new_tokens=256",
                    _with(config, evaluate={"max_new_tokens": 256}),
                    None,
                    None,
                    None,
                )
            )
    else:
        s = getattr(config, stage)
        batch, accumulation = s.per_device_train_batch_size, s.gradient_accumulation_steps
        if stage == "grpo" and s.num_generations >= 4 and batch == s.num_generations:
            half = s.num_generations // 2
            options.append(
                (
                    f"grpo.num_generations={half} grpo.per_device_train_batch_size={half}",
                    _with(config, grpo={"num_generations": half, "per_device_train_batch_size": half}),
                    None,
                    None,
                    None,
                )
            )
        if batch >= 2 and batch % 2 == 0:
            options.append(
                (
                    f"{stage}.per_device_train_batch_size={batch // 2} {stage}.gradient_accumulation_steps={accumulation * 2}",
                    _with(
                        config,
                        **{
                            stage: {
                                "per_device_train_batch_size": batch // 2,
                                "gradient_accumulation_steps": accumulation * 2,
                            }
                        },
                    ),
                    None,
                    None,
                    None,
                )
            )
        if not s.gradient_checkpointing:
            options.append(
                (
                    f"{stage}.gradient_checkpointing=true",
                    _with(config, **{stage: {"gradient_checkpointing": True}}),
                    None,
                    None,
                    None,
                )
            )
        if config.pipeline.training_processes() > 1 and s.deepspeed != "zero3":
            options.append(
                (
                    f"{stage}.deepspeed=zero3",
                    _with(config, **{stage: {"deepspeed": "zero3"}}),
                    None,
                    None,
                    None,
                )
            )
        options.append(
            (
                f"ZeRO-3 with optimizer and parameters offloaded to CPU ({stage}.deepspeed=a JSON with "
                "zero_optimization.offload_optimizer/offload_param device cpu)",
                config,
                {"deepspeed": ZERO3_OFFLOAD, "weights": "bf16"},
                None,
                None,
            )
        )
        if not s.lora.enabled:
            lora = dataclasses.replace(s.lora, enabled=True)
            options.append(
                (f"{stage}.lora.enabled=true", _with(config, **{stage: {"lora": lora}}), None, None, None)
            )
    # Fewer image tokens: half the pixel budget, the same worst image.
    worst = stats["train" if stage != "evaluate" else "eval"].worst
    half_pixels = max(config.model.min_pixels, config.model.max_pixels // 2)
    if worst is not None and half_pixels < config.model.max_pixels:
        tokens = (
            files.image_processor.get_number_of_image_patches(
                worst.height, worst.width, {"max_pixels": half_pixels}
            )
            // files.merge_size**2
        )
        cut = (stats["train"].worst_tokens if stage != "evaluate" else stats["eval"].worst_tokens) - tokens
        fewer = {
            k: dataclasses.replace(v, prompt_tokens=v.prompt_tokens - cut, image_tokens=tokens)
            for k, v in train_seq.items()
        }
        eval_fewer = dataclasses.replace(
            eval_seq, prompt_tokens=eval_seq.prompt_tokens - cut, image_tokens=tokens
        )
        options.append((f"model.max_pixels={half_pixels}", config, None, fewer, eval_fewer))
    results = []
    for label, changed, override, seq, eval_s in options:
        estimate = stage_estimate(
            stage, changed, shape, seq or train_seq, eval_s or eval_seq, gpu_memory, setup_override=override
        )
        if estimate is not None:
            results.append((label, estimate))
    return sorted(results, key=lambda item: item[1].peak)
