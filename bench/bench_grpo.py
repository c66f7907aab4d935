"""Benchmark GRPO as vrft runs it: optimizer-step time, rollout tokens/s, peak memory and MFU.

Two cases, both through the real ``train_grpo`` on a synthetic shapes detection set built by the
dataset stage, G 8 completions of exactly up to 256 new tokens, per-device batch 8 (one prompt's
group) × gradient accumulation 2, β 0.04 (so the reference model forward is included):

* ``tiny``: the tiny offline Qwen2-VL (:mod:`vrft.models.tiny`), fp32, on whatever device there is.
* ``qwen2-vl-2b``: a model with Qwen2-VL-2B-Instruct's exact architecture and sizes (2.2 B
  parameters, vocabulary 151,936) and random weights, built offline, on a GPU with bf16 (needs
  CUDA; on a CPU only its parameter count is checked and the case is skipped). Images are
  640×480 at the authors' max_pixels 401408 (391 image tokens each). The tokenizer is the tiny
  one: ids it lacks decode to nothing, which changes no timing (rewards are zero either way).

Per optimizer step (averaged over ``--steps`` steps, after one warm-up step):

* step: wall time between the starts of successive steps' rollouts (everything: rollout, reward,
  reference/old log-probs, forward + backward of the accumulation steps, optimizer update, logging);
* rollout: time in trl's ``_generate`` (``model.generate`` + decoding); rollout tokens/s = the
  step's completion tokens / rollout time;
* score: the rest of trl's ``_generate_and_score_completions`` (rewards, reference log-probs);
* train: step − rollout − score (policy forward + backward + optimizer);
* MFU of the training part = 6 × parameters × trained tokens / train time / peak FLOP/s, where the
  trained tokens are every sequence's prompt (image tokens included) + completion tokens. It
  counts the vision tower's parameters against language tokens, so it is an approximation; peak
  FLOP/s are the dense bf16 numbers (H100/H200 989 T, A100 312 T) or ``--peak-tflops``.

    python bench/bench_grpo.py                 # both cases (the 2B one only with CUDA)
    python bench/bench_grpo.py --case tiny --steps 2
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

import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

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


def qwen2_vl_2b_config(token_ids: dict[str, int]) -> Qwen2VLConfig:
    """Qwen2-VL-2B-Instruct's architecture (its published config.json), with the tokenizer's special ids."""
    text = {"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
            "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
            "bos_token_id": token_ids["bos_token_id"], "eos_token_id": token_ids["eos_token_id"],
            "pad_token_id": token_ids["pad_token_id"]}
    vision = {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "mlp_ratio": 4, "num_heads": 16,
              "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
    ids = {k: token_ids[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                     "vision_end_token_id")}
    return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def parameter_count(config: Qwen2VLConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in Qwen2VLForConditionalGeneration(config).parameters())


def build_2b_checkpoint(tiny_dir: Path, output: Path) -> Path:
    """The tiny checkpoint's tokenizer and processor with a 2B-shaped random bf16 model (on the GPU)."""
    tiny = Qwen2VLConfig.from_pretrained(tiny_dir)
    text = tiny.text_config
    config = qwen2_vl_2b_config({"bos_token_id": text.bos_token_id, "eos_token_id": text.eos_token_id,
                                 "pad_token_id": text.pad_token_id, "image_token_id": tiny.image_token_id,
                                 "video_token_id": tiny.video_token_id,
                                 "vision_start_token_id": tiny.vision_start_token_id,
                                 "vision_end_token_id": tiny.vision_end_token_id})
    output.mkdir(parents=True)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2VLForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config = Qwen2VLForConditionalGeneration.from_pretrained(tiny_dir).generation_config
    for path in tiny_dir.iterdir():
        if path.is_file() and path.name not in ("model.safetensors", "config.json"):
            (output / path.name).write_bytes(path.read_bytes())
    model.save_pretrained(output)
    del model
    torch.cuda.empty_cache()
    return output


def build_shapes(root: Path, image_size: list[int]) -> Path:
    config = from_dict(DatasetConfig, {"train": {"kind": "shapes", "path": str(root / "source"), "n_images": 48,
                                                 "image_size": image_size},
                                       "shots": 4, "categories": ["circle", "square"], "eval_max_per_category": 1})
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


def run_case(name: str, model: ModelConfig, dataset: Path, output: Path, args: argparse.Namespace,
             parameters: int, probe: Probe) -> dict[str, Any]:
    probe.steps.clear()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    config = from_dict(GRPOStageConfig, {
        # One warm-up step first; the last step only marks where the one before it ended.
        "max_steps": args.steps + 2, "num_generations": 8, "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 2, "max_completion_length": args.completion_tokens,
        "save_steps": 10_000, "completions_per_step": 0})
    start = time.perf_counter()
    train_grpo(config, dataset, output, model=model)
    total = time.perf_counter() - start
    steps = probe.steps[1:]
    walls = [b.start - a.start for a, b in zip(steps, steps[1:])]
    measured = steps[:len(walls)]
    train = [w - s.generate_and_score_s for w, s in zip(walls, measured)]
    mean = statistics.fmean
    trained_tokens = mean(s.trained_tokens for s in measured)
    flops = peak_flops(args.peak_tflops)
    return {
        "case": name,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} "
                                                                                   "threads)",
        "dtype": "bf16" if torch.cuda.is_available() else "fp32",
        "parameters": parameters,
        "steps_measured": len(walls),
        "step_s": mean(walls),
        "rollout_s": mean(s.rollout_s for s in measured),
        "score_s": mean(s.generate_and_score_s - s.rollout_s for s in measured),
        "train_s": mean(train),
        "completion_tokens_per_step": mean(s.completion_tokens for s in measured),
        "rollout_tokens_per_s": sum(s.completion_tokens for s in measured) / sum(s.rollout_s for s in measured),
        "trained_tokens_per_step": trained_tokens,
        "mfu_train": 6 * parameters * trained_tokens / mean(train) / flops if flops else None,
        "peak_memory_gib": peak_memory_gib(),
        "total_s": total,
    }


def table(results: list[dict[str, Any]]) -> str:
    columns = [("case", "{}"), ("device", "{}"), ("dtype", "{}"), ("parameters", "{:,}"), ("step_s", "{:.2f}"),
               ("rollout_s", "{:.2f}"), ("score_s", "{:.2f}"), ("train_s", "{:.2f}"),
               ("rollout_tokens_per_s", "{:,.0f}"), ("trained_tokens_per_step", "{:,.0f}"),
               ("mfu_train", "{:.1%}"), ("peak_memory_gib", "{:.2f}")]
    lines = ["| " + " | ".join(c for c, _ in columns) + " |", "|" + "---|" * len(columns)]
    for result in results:
        cells = ["n/a" if result[c] is None else f.format(result[c]) for c, f in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["tiny", "qwen2-vl-2b", "all"], default="all")
    parser.add_argument("--steps", type=int, default=3, help="measured optimizer steps (plus two, see run_case)")
    parser.add_argument("--completion-tokens", type=int, default=256)
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
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
            parameters = parameter_count(qwen2_vl_2b_config({k: i for i, k in enumerate(
                ("bos_token_id", "eos_token_id", "pad_token_id", "image_token_id", "video_token_id",
                 "vision_start_token_id", "vision_end_token_id"))}))
            if not torch.cuda.is_available():
                print(f"qwen2-vl-2b: skipped, no CUDA device (the 2B-shaped model has {parameters:,} parameters; "
                      "its benchmark needs a GPU)", file=sys.stderr)
            else:
                checkpoint = build_2b_checkpoint(tiny_dir, root / "qwen2-vl-2b")
                dataset = build_shapes(root / "shapes-coco-sized", [640, 480])
                model = ModelConfig(name_or_path=str(checkpoint), max_pixels=PAPER_MAX_PIXELS)
                results.append(run_case("qwen2-vl-2b", model, dataset, root / "run-2b", args, parameters, probe))
    if results:
        print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
