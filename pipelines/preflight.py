"""``vrft preflight``: what a run will need, checked before a GPU hour is spent.

For every training and evaluation stage of every sweep iteration, from the model's files (no
weights), the dataset's sources and the stage settings, :func:`run_preflight` reports

1. the image tokens of the train and eval images under ``model.min_pixels``/``max_pixels``
   (the checkpoint's own image processor, :mod:`vrft.preflight.tokens`), the longest prompt, and
   whether prompt + completion fits: ``sft.max_length`` (trl truncates there, and a cut through the
   image's tokens is the "Image features and image tokens do not match" error) and the model's
   positions (``max_position_embeddings``; a hard limit for vLLM);
2. an estimate of the peak GPU memory per rank (:mod:`vrft.preflight.memory`) against
   ``pipeline.gpu_memory``, with the settings that would make a stage fit when it does not;
3. the GPUs the compiled pipeline can ask for at once (:func:`peak_gpus`).

Problems are refusals (:class:`PreflightError`, one line); what the preflight cannot know here (a
model or source only the cluster can read) is said in the report and never refused. ``vrft run``,
``vrft submit`` and ``vrft schedule`` call :func:`check_preflight` before anything starts;
``--ignore-preflight`` skips it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vrft.config import ConfigError
from vrft.experiment import ExperimentConfig
from vrft.preflight.memory import GIB, Estimate, ModelShape, human_bytes, model_shape
from vrft.preflight.stages import ImageTokens, Longest, knobs, stage_estimate, stage_inputs
from vrft.preflight.tokens import ModelFiles, ModelFilesUnavailable, TokenCount

IGNORE_HINT = "--ignore-preflight runs anyway"


class PreflightError(ConfigError):
    """The preflight found a problem that would fail the run; the message is one line."""


# -- the report ----------------------------------------------------------------------------------------


@dataclass
class PreflightReport:
    """What :func:`run_preflight` found: the printable report and the problems that refuse a run."""

    name: str
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    estimates: dict[str, Estimate] = field(default_factory=dict)  # the worst iteration's, per stage
    peak: PeakGpus | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        verdict = ["", "Result: " + ("ok" if self.ok else "refused")]
        verdict += [f"  problem: {p}" for p in self.problems]
        verdict += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(self.lines + verdict)

    def refusal(self) -> str:
        return f"preflight: {'; '.join(self.problems)} ({IGNORE_HINT})"

    def summary(self) -> str:
        parts = [f"{stage} {human_bytes(e.peak)}" for stage, e in self.estimates.items()]
        gpus = f"; {self.peak.total} GPUs at once on a cluster" if self.peak else ""
        memory = f" (per GPU: {', '.join(parts)})" if parts else ""
        return f"preflight: ok{memory}{gpus}"


def _iteration_label(config: ExperimentConfig, several_seeds: bool) -> str:
    label = f"shots {config.dataset.shots}" if config.dataset.shots is not None else "all shots"
    return label + (f", seed {config.grpo.seed}" if several_seeds else "")


def run_preflight(config: ExperimentConfig, *, source: str = "") -> PreflightReport:
    """The whole preflight of ``config`` (see the module docstring); never raises for problems."""
    from vrft.pipelines.plan import sweep_configs

    report = PreflightReport(config.experiment.name)
    model = config.model.materialized()
    files: ModelFiles | None = None
    shape: ModelShape | None = None
    try:
        files = ModelFiles(model)
        shape = model_shape(model)
    except (ModelFilesUnavailable, OSError, ValueError) as exc:
        unreadable = str(exc).splitlines()[0]
    header = f"vrft preflight: {config.experiment.name}" + (f" ({source})" if source else "")
    if shape is not None:
        header += f"; model {config.model.name_or_path} ({shape.family}, {shape.parameters:,} parameters)"
    report.lines.append(header)
    if files is None or shape is None:
        report.lines.append(
            f"model files not readable here ({unreadable}): image tokens and memory not checked"
        )
        report.warnings.append(
            f"model {config.model.name_or_path}: config not readable here, tokens and memory unchecked"
        )
        report.peak = peak_gpus(config)
        report.lines += ["", "3. GPUs the pipeline asks for", "   " + report.peak.describe()]
        return report

    # 1. Image tokens and prompts.
    inputs = stage_inputs(config, files)
    stats, train, evaluation = inputs.stats, inputs.train, inputs.evaluation
    report.lines += [
        "",
        f"1. Image tokens and prompts (model.min_pixels {model.min_pixels:,}, max_pixels {model.max_pixels:,}; "
        f"{files.cell}-pixel cells: patch {files.patch_size} × merge {files.merge_size})",
    ]
    for split in ("train", "eval"):
        report.lines.append("   " + stats[split].describe(files))
        report.problems += stats[split].refused
        if not stats[split].scan.known:
            report.warnings.append(f"{split} images: {stats[split].scan.note}")
    report.warnings += inputs.notes
    worst_train = stats["train"].worst.name if stats["train"].worst else "any train image"
    if not files.tokenizer:
        report.lines.append(
            "   (no tokenizer in the model directory: text tokens are upper bounds, ≤, one per UTF-8 byte)"
        )

    def prompt_line(stage: str, longest: Longest, completion: TokenCount, what: str, limit: int) -> str:
        total = longest.tokens + completion
        text_tokens = longest.tokens + (-longest.image_tokens)
        return (
            f"   {stage}: longest prompt {longest.tokens} tokens ({longest.image_tokens:,} image + {text_tokens} text; "
            f"{longest.prompt.label}) + {completion} {what} = {total} of the model's {limit:,} positions"
        )

    grpo_completion = TokenCount(config.grpo.max_completion_length)
    report.lines.append(prompt_line("grpo", train, grpo_completion, "completion", shape.max_positions))
    sft_total = train.tokens + train.target
    sft_limit = config.sft.max_length
    report.lines.append(
        prompt_line("sft", train, train.target, "target", shape.max_positions)
        + (f"; sft.max_length {sft_limit:,}" if sft_limit else "; sft.max_length null: never truncated")
    )
    eval_completion = TokenCount(config.evaluate.max_new_tokens)
    report.lines.append(
        prompt_line("evaluate", evaluation, eval_completion, "new tokens", shape.max_positions)
    )
    _token_problems(report, config, train, evaluation, sft_total, worst_train, stats, shape)

    # 2. Memory per GPU.
    gpu_memory = config.pipeline.gpu_memory * GIB
    report.lines += [
        "",
        f"2. Peak GPU memory per rank (estimate, docs/training.md; pipeline.gpu_memory {config.pipeline.gpu_memory:g} GiB)",
    ]
    train_seq, eval_seq = inputs.sequences(config)
    iterations = sweep_configs(config)
    several_seeds = len(config.experiment.seeds) > 1
    for stage in ("grpo", "sft", "evaluate"):
        worst: tuple[Estimate, ExperimentConfig] | None = None
        peaks = set()
        for per in iterations:
            estimate = stage_estimate(stage, per, shape, train_seq, eval_seq, gpu_memory)
            if estimate is not None:
                peaks.add(round(estimate.peak))
            if estimate is not None and (worst is None or estimate.peak > worst[0].peak):
                worst = (estimate, per)
        if worst is None:
            report.lines.append(f"   {stage}: no GPU requested (pipeline resources): not checked")
            continue
        estimate, per = worst
        report.estimates[stage] = estimate
        where = f" ({_iteration_label(per, several_seeds)}, the largest)" if len(peaks) > 1 else ""
        fits = estimate.peak <= gpu_memory
        other = (
            f"; {estimate.other_phase} {human_bytes(estimate.other_bytes)}" if estimate.other_phase else ""
        )
        report.lines.append(
            f"   {stage}{where}: {human_bytes(estimate.peak)}, {'fits' if fits else 'does NOT fit'} "
            f"(peak in the {estimate.phase}{other}; {estimate.setup})"
        )
        report.lines.append(f"      {estimate.breakdown()}")
        if not fits:
            changes = knobs(stage, per, shape, train_seq, eval_seq, files, stats, gpu_memory)
            for label, knob in changes:
                mark = "fits" if knob.peak <= gpu_memory else "still over"
                report.lines.append(f"      with {label}: {human_bytes(knob.peak)} ({mark})")
            report.problems.append(_memory_problem(stage + where, estimate, changes, config, gpu_memory))

    # 3. GPUs.
    report.peak = peak_gpus(config)
    report.lines += ["", "3. GPUs the pipeline asks for", "   " + report.peak.describe()]
    return report


def _token_problems(
    report: PreflightReport,
    config: ExperimentConfig,
    train: Longest,
    evaluation: Longest,
    sft_total: TokenCount,
    worst_train: str,
    stats: dict[str, ImageTokens],
    shape: ModelShape,
) -> None:
    limit = config.sft.max_length
    if limit is not None and sft_total.value > limit:
        if train.image_end > limit:
            cut = 'trl would cut through the image\'s tokens ("Image features and image tokens do not match")'
        elif train.tokens.value > limit:
            cut = "trl would cut the prompt's text and the whole target answer (nothing left to learn)"
        else:
            cut = "trl would cut the target answer"
        message = (
            f"sft.max_length {limit:,} cannot hold the prompt and target of train image {worst_train} "
            f"({train.image_tokens:,} image tokens, {sft_total} tokens in all): {cut}; set sft.max_length to at least "
            f"{sft_total.value:,} or null, or lower model.max_pixels"
        )
        (report.problems if sft_total.exact else report.warnings).append(message)
    grpo_total = train.tokens.value + config.grpo.max_completion_length
    if grpo_total > shape.max_positions:
        report.warnings.append(
            f"grpo: prompt + completion ({grpo_total:,} tokens, train image {worst_train}) exceeds the model's "
            f"{shape.max_positions:,} positions"
        )
    eval_total = evaluation.tokens.value + config.evaluate.max_new_tokens
    if eval_total > shape.max_positions:
        worst_eval = stats["eval"].worst.name if stats["eval"].worst else "any eval image"
        message = (
            f"evaluate: prompt + max_new_tokens ({eval_total:,} tokens, eval image {worst_eval}) exceeds the "
            f"model's {shape.max_positions:,} positions; lower evaluate.max_new_tokens or model.max_pixels"
        )
        from vrft.evaluate.inference import resolve_backend

        vllm = config.evaluate.backend == "vllm" or (
            config.evaluate.backend == "auto" and resolve_backend("auto") == "vllm"
        )
        (report.problems if vllm else report.warnings).append(message)


def _memory_problem(
    stage: str,
    estimate: Estimate,
    changes: list[tuple[str, Estimate]],
    config: ExperimentConfig,
    gpu_memory: float,
) -> str:
    head = (
        f"{stage} needs about {estimate.peak_gib:.1f} GiB per GPU, more than pipeline.gpu_memory "
        f"{config.pipeline.gpu_memory:g} GiB"
    )
    fitting = [f"{label} ({knob.peak_gib:.1f} GiB)" for label, knob in changes if knob.peak <= gpu_memory]
    if fitting:
        return f"{head}; it would fit with " + ", or ".join(fitting)
    tried = ", ".join(f"{label} {knob.peak_gib:.1f} GiB" for label, knob in changes[:4])
    return f"{head}; no single change fits ({tried}): combine them, or use GPUs with more memory"


def check_preflight(config: ExperimentConfig, *, source: str = "") -> PreflightReport:
    """:func:`run_preflight`, raising :class:`PreflightError` (one line) when it found a problem."""
    report = run_preflight(config, source=source)
    if not report.ok:
        raise PreflightError(report.refusal())
    return report


# -- GPUs at once -------------------------------------------------------------------------------------
#
# Each iteration of the sweep (one shot count, one training seed) is the same small DAG:
#
#     dataset ─► GRPO ─► evaluate RFT ─┐
#             ├► SFT  ─► evaluate SFT ─┼─► collect        (then, once, the report)
#             └► evaluate base ────────┘   (evaluate base gates the other two in existence_gated mode)
#
# Tasks that no dependency orders can run together, so an iteration's peak is the largest GPU sum over
# such a set (GRPO ‖ SFT ‖ evaluate base, or GRPO ‖ evaluate SFT ‖ evaluate base, ...), and the
# pipeline's follows from the iterations that may run at once (pipeline.max_parallel_iterations, 0: all).
# The task plan computes both (vrft.pipelines.plan.iteration_peak, peak_gpus); this module names them.
# A multi-node training stage counts every node's GPUs (its PyTorchJob's pods). `vrft run` runs one
# iteration at a time.


@dataclass(frozen=True)
class PeakGpus:
    total: int
    per_iteration: int
    iterations: int  # in the sweep
    at_once: int  # of them that may run together
    together: tuple[str, ...]  # the tasks of one iteration that reach its peak
    limit_source: str  # where ``at_once`` comes from

    def describe(self) -> str:
        tasks = " ‖ ".join(self.together) if self.together else "no GPU task"
        return (
            f"{self.total} GPUs at once on a cluster: {self.per_iteration} per iteration ({tasks}) × "
            f"{self.at_once} of {self.iterations} iteration(s) at once ({self.limit_source}); "
            "`vrft run` runs one iteration at a time"
        )


#: How the peak's tasks are named in the report (the planned task's name within its iteration).
_SHORT_NAMES = {
    "dataset": "dataset",
    "grpo": "GRPO",
    "sft": "SFT",
    "evaluate-base": "evaluate base",
    "evaluate-sft": "evaluate SFT",
    "evaluate-rft": "evaluate RFT",
    "collect": "collect",
}


def iteration_peak(config: ExperimentConfig) -> tuple[int, tuple[str, ...]]:
    """The most GPUs one iteration's tasks can hold together, and those tasks (by the task plan)."""
    from vrft.pipelines.plan import build_plan
    from vrft.pipelines.plan import iteration_peak as plan_iteration_peak

    plan = build_plan(config)
    total, group = max(
        (plan_iteration_peak(plan.of_iteration(key)) for key in plan.iterations), key=lambda peak: peak[0]
    )
    return total, tuple(sorted(_SHORT_NAMES.get(t.id.rsplit("/", 1)[1], t.id) for t in group))


def peak_gpus(config: ExperimentConfig) -> PeakGpus:
    """The compiled pipeline's peak GPU demand on a cluster (:func:`vrft.pipelines.plan.peak_gpus`)."""
    from vrft.pipelines.plan import build_plan
    from vrft.pipelines.plan import peak_gpus as plan_peak_gpus

    plan = build_plan(config)
    iterations = len(plan.iterations)
    limit = plan.max_parallel_iterations
    if limit and limit < iterations:
        at_once, source = limit, f"pipeline.max_parallel_iterations {limit}"
    else:
        at_once, source = iterations, f"pipeline.max_parallel_iterations {limit or 'unbounded (0)'}"
    per_iteration, together = iteration_peak(config)
    return PeakGpus(plan_peak_gpus(plan), per_iteration, iterations, at_once, together, source)
