"""Benchmark GRPO as vrft runs it: optimizer-step time, rollout and train tokens/s, MFU and peak memory.

Two cases, both through the real ``train_grpo`` on a synthetic shapes detection set built by the
dataset stage, with the paper's settings by default: G 8 completions of up to 256 new tokens,
per-device batch 8 (one prompt's group) × gradient accumulation 2 = 16 completions per step on one
device, β 0.04 (so the reference model forward is included):

* ``tiny``: the tiny offline Qwen2-VL (:mod:`vrft.models.tiny`), fp32, on whatever device there is.
* ``qwen2-vl-2b``: a model with Qwen2-VL-2B-Instruct's exact architecture and sizes (2.2 B
  parameters, vocabulary 151,936) and random weights, built offline (``qwen2_vl_shapes.py``), on a
  GPU: ``model.dtype auto`` keeps fp32 weights and computes in bf16 (autocast), as vrft trains a
  full fine-tune without DeepSpeed; ``--model-dtype bfloat16`` trains pure bf16. Images are
  640×480 at the authors' max_pixels 401408 (391 image tokens each). It needs CUDA; ``--shape mini``
  runs the same path with a two-layer, narrow model of the same architecture on a CPU (the dry run of
  bench/gpu/check.sh). The tokenizer is the tiny one: ids it lacks decode to nothing, which changes no
  timing (rewards are zero either way).

Per optimizer step (averaged over ``--steps`` steps, after one warm-up step):

* step: wall time between the starts of successive steps' rollouts (everything: rollout, reward,
  reference/old log-probs, forward + backward of the accumulation steps, optimizer update, logging);
* rollout: time in trl's ``_generate`` (``model.generate`` + decoding); rollout tokens/s = the
  step's completion tokens / rollout time;
* score: the rest of trl's ``_generate_and_score_completions`` (rewards, reference log-probs);
* train: step − rollout − score (policy forward + backward + optimizer); train tokens/s = the
  step's trained tokens / train time;
* MFU of the training part = 6 × parameters × trained tokens / train time / peak FLOP/s, where the
  trained tokens are every sequence's prompt (image tokens included) + completion tokens. It
  counts the vision tower's parameters against language tokens, so it is an approximation; peak
  FLOP/s are the dense bf16 numbers (H100/H200 989 T, A100 312 T) or ``--peak-tflops``;
* peak memory: ``torch.cuda.max_memory_allocated`` (and reserved) over the run; on a CPU, peak RSS.

    python bench/bench_grpo.py                 # both cases (the 2B one only with CUDA)
    python bench/bench_grpo.py --case qwen2-vl-2b --steps 3 --json grpo.json
    python bench/bench_grpo.py --case qwen2-vl-2b --shape mini --image-size 64 48 --max-pixels 12544 \
        --completion-tokens 8 --steps 1          # the 2B path on a CPU, in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import qwen2_vl_shapes  # beside this script (its directory is sys.path[0])
import torch

from vrft.config import from_dict
from vrft.data import DatasetConfig, build_dataset
from vrft.models.config import PAPER_MAX_PIXELS, ModelConfig
from vrft.models.tiny import build_tiny_model
from vrft.train import GRPOStageConfig, train_grpo
from vrft.train.grpo import VrftGRPOTrainer

#: Dense bf16 peak FLOP/s by GPU name fragment (no sparsity).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


@dataclass
class StepProbe:
    """Timings and token counts of one optimizer step, filled by the wrapped trl methods."""

    start: float = 0.0
    rollout_s: float = 0.0
    generate_and_score_s: float = 0.0
    completion_tokens: int = 0
    trained_tokens: int = 0


@dataclass
class Probe:
    steps: list[StepProbe] = field(default_factory=list)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def instrument(probe: Probe) -> None:
    """Wrap trl's rollout methods on vrft's trainer class to time them (benchmark only)."""
    generate_and_score = VrftGRPOTrainer._generate_and_score_completions
    generate = VrftGRPOTrainer._generate

    def timed_generate_and_score(self: Any, inputs: Any) -> Any:
        _sync()
        step = StepProbe(start=time.perf_counter())
        probe.steps.append(step)
        output = generate_and_score(self, inputs)
        _sync()
        step.generate_and_score_s = time.perf_counter() - step.start
        return output

    def timed_generate(self: Any, prompts: Any) -> Any:
        _sync()
        start = time.perf_counter()
        output = generate(self, prompts)
        _sync()
        step = probe.steps[-1]
        step.rollout_s += time.perf_counter() - start
        prompt_ids, completion_ids = output[0], output[1]
        step.completion_tokens += sum(len(ids) for ids in completion_ids)
        step.trained_tokens += sum(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
        return output

    VrftGRPOTrainer._generate_and_score_completions = timed_generate_and_score
    VrftGRPOTrainer._generate = timed_generate


def build_shapes(root: Path, image_size: list[int]) -> Path:
    config = from_dict(
        DatasetConfig,
        {
            "train": {
                "kind": "shapes",
                "path": str(root / "source"),
                "n_images": 48,
                "image_size": image_size,
            },
            "shots": 4,
            "categories": ["circle", "square"],
            "eval_max_per_category": 1,
        },
    )
    return build_dataset(config, root / "dataset", progress=False).output_dir


def peak_memory_gib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def peak_flops(override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((flops for fragment, flops in PEAK_BF16_FLOPS.items() if fragment in name), None)


def run_case(
    name: str,
    model: ModelConfig,
    dataset: Path,
    output: Path,
    args: argparse.Namespace,
    parameters: int,
    probe: Probe,
) -> dict[str, Any]:
    probe.steps.clear()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    config = from_dict(
        GRPOStageConfig,
        {
            # One warm-up step first; the last step only marks where the one before it ended.
            "max_steps": args.steps + 2,
            "num_generations": args.num_generations,
            "per_device_train_batch_size": args.per_device_batch,
            "gradient_accumulation_steps": args.accumulation,
            "max_completion_length": args.completion_tokens,
            "save_steps": 10_000,
            "completions_per_step": 0,
        },
    )
    start = time.perf_counter()
    train_grpo(config, dataset, output, model=model)
    total = time.perf_counter() - start
    steps = probe.steps[1:]
    walls = [b.start - a.start for a, b in zip(steps, steps[1:])]
    measured = steps[: len(walls)]
    train = [w - s.generate_and_score_s for w, s in zip(walls, measured)]
    mean = statistics.fmean
    trained_tokens = mean(s.trained_tokens for s in measured)
    flops = peak_flops(args.peak_tflops)
    cuda = torch.cuda.is_available()
    return {
        "case": name,
        "device": torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)",
        "dtype": ("bf16 autocast, fp32 weights" if model.dtype == "auto" else "bf16") if cuda else "fp32",
        "parameters": parameters,
        "completions_per_step": args.per_device_batch * args.accumulation,
        "num_generations": args.num_generations,
        "max_completion_length": args.completion_tokens,
        "max_pixels": model.max_pixels,
        "steps_measured": len(walls),
        "step_s": mean(walls),
        "rollout_s": mean(s.rollout_s for s in measured),
        "score_s": mean(s.generate_and_score_s - s.rollout_s for s in measured),
        "train_s": mean(train),
        "completion_tokens_per_step": mean(s.completion_tokens for s in measured),
        "rollout_tokens_per_s": sum(s.completion_tokens for s in measured)
        / sum(s.rollout_s for s in measured),
        "trained_tokens_per_step": trained_tokens,
        "train_tokens_per_s": trained_tokens / mean(train),
        "mfu_train": 6 * parameters * trained_tokens / mean(train) / flops if flops else None,
        "peak_memory_gib": peak_memory_gib(),
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "total_s": total,
    }


def table(results: list[dict[str, Any]]) -> str:
    columns = [
        ("case", "{}"),
        ("device", "{}"),
        ("dtype", "{}"),
        ("parameters", "{:,}"),
        ("step_s", "{:.2f}"),
        ("rollout_s", "{:.2f}"),
        ("score_s", "{:.2f}"),
        ("train_s", "{:.2f}"),
        ("rollout_tokens_per_s", "{:,.0f}"),
        ("trained_tokens_per_step", "{:,.0f}"),
        ("train_tokens_per_s", "{:,.0f}"),
        ("mfu_train", "{:.1%}"),
        ("peak_memory_gib", "{:.2f}"),
    ]
    lines = ["| " + " | ".join(c for c, _ in columns) + " |", "|" + "---|" * len(columns)]
    for result in results:
        cells = ["n/a" if result[c] is None else f.format(result[c]) for c, f in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    import transformers
    import trl

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "cuda": torch.version.cuda or "",
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["tiny", "qwen2-vl-2b", "all"], default="all")
    parser.add_argument(
        "--shape",
        choices=sorted(qwen2_vl_shapes.SHAPES),
        default="2b",
        help="the qwen2-vl-2b case's model: 2b (needs CUDA) or mini (its path on any device)",
    )
    parser.add_argument(
        "--model-dtype",
        choices=["auto", "bfloat16"],
        default="auto",
        help="model.dtype of the qwen2-vl-2b case (auto: fp32 weights, bf16 compute on CUDA)",
    )
    parser.add_argument(
        "--steps", type=int, default=3, help="measured optimizer steps (plus two, see run_case)"
    )
    parser.add_argument("--num-generations", type=int, default=8, help="G, completions per prompt")
    parser.add_argument("--per-device-batch", type=int, default=8, help="completions per micro-step")
    parser.add_argument("--accumulation", type=int, default=2, help="micro-steps per optimizer step")
    parser.add_argument("--completion-tokens", type=int, default=256, help="max_completion_length")
    parser.add_argument("--max-pixels", type=int, default=PAPER_MAX_PIXELS, help="the qwen2-vl-2b case's")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=[640, 480],
        metavar=("W", "H"),
        help="the qwen2-vl-2b case's synthetic images",
    )
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU")
    parser.add_argument("--json", type=Path, help="also write the results (and versions, settings) here")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    shaped = f"qwen2-vl-{args.shape}"
    if args.case == "qwen2-vl-2b" and args.shape == "2b" and not torch.cuda.is_available():
        parser.error("--case qwen2-vl-2b needs a CUDA device (use --shape mini to run its path on a CPU)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    probe = Probe()
    instrument(probe)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as tmp:
        root = Path(tmp)
        tiny_dir = build_tiny_model(root / "tiny", family="qwen2_vl")
        if args.case in ("tiny", "all"):
            dataset = build_shapes(root / "shapes-small", [64, 48])
            model = ModelConfig(name_or_path=str(tiny_dir), min_pixels=56 * 56, max_pixels=112 * 112)
            parameters = sum(p.numel() for p in model.load_model().parameters())
            results.append(run_case("tiny", model, dataset, root / "run-tiny", args, parameters, probe))
        if args.case in ("qwen2-vl-2b", "all"):
            tokenizer = ModelConfig(name_or_path=str(tiny_dir)).load_processor().tokenizer
            parameters = qwen2_vl_shapes.parameter_count(args.shape, tokenizer)
            if args.shape == "2b" and not torch.cuda.is_available():
                print(
                    f"{shaped}: skipped, no CUDA device (the 2B-shaped model has {parameters:,} parameters; "
                    "its benchmark needs a GPU)",
                    file=sys.stderr,
                )
            else:
                device = "cuda" if torch.cuda.is_available() else "cpu"
                dtype = torch.bfloat16 if device == "cuda" else torch.float32
                checkpoint = qwen2_vl_shapes.build_checkpoint(
                    args.shape, tiny_dir, root / shaped, device, dtype
                )
                dataset = build_shapes(root / "shapes-shaped", args.image_size)
                model = ModelConfig(
                    name_or_path=str(checkpoint), max_pixels=args.max_pixels, dtype=args.model_dtype
                )
                results.append(
                    run_case(shaped, model, dataset, root / f"run-{args.shape}", args, parameters, probe)
                )
    if results:
        print(table(results))
    if args.json:
        payload = {"benchmark": "grpo", "versions": versions(), "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
