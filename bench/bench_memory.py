"""Predicted vs measured peak GPU memory of the 2B-shaped GRPO step (the preflight's acceptance check).

For each setting (G and gradient checkpointing), the preflight's estimate for exactly this run
(:mod:`vrft.preflight.stages`: the checkpoint's config, the dataset's images and prompts, the stage
settings) is set against ``torch.cuda.max_memory_allocated`` over one real ``train_grpo`` step:
vrft's defaults otherwise (full fine-tuning, fp32 weights under bf16 autocast, no DeepSpeed, β 0.04
so a reference model, per-device batch = G completions × gradient accumulation 2, up to 256 new
tokens), a random-weight model with Qwen2-VL-2B's exact sizes (``qwen2_vl_shapes.py``), 640×480
images at max_pixels 401408. The peak is also split at the end of the rollout (generation) so each
phase can be compared with its own prediction. Allocated bytes are what the estimate models; the
CUDA context and the caching allocator's reserve come on top (``peak_reserved_gib``).

The final model is not written (it costs disk time, not GPU memory). On a CPU (``--shape mini``)
the same path runs with a narrow two-layer model and nothing is measured: the dry run of
bench/gpu/check.sh.

    python bench/bench_memory.py --json memory.json                      # on a GPU
    python bench/bench_memory.py --shape mini --settings 4:on --completion-tokens 8 \\
        --image-size 64 48 --max-pixels 12544                            # the path on a CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_grpo  # beside this script (its directory is sys.path[0])
import qwen2_vl_shapes
import torch

from vrft.config import from_dict
from vrft.experiment import ExperimentConfig
from vrft.models.config import PAPER_MAX_PIXELS
from vrft.models.tiny import build_tiny_model
from vrft.preflight.memory import GIB, model_shape
from vrft.preflight.stages import stage_estimate, stage_inputs
from vrft.preflight.tokens import ModelFiles
from vrft.train import train_grpo
from vrft.train.grpo import VrftGRPOTrainer

DEFAULT_SETTINGS = "8:on,4:on,8:off"


class PhaseProbe:
    """Splits the CUDA peak at the end of each rollout: the rollout's peak, and the rest's."""

    def __init__(self) -> None:
        self.rollout = 0
        self.rest = 0
        generate = VrftGRPOTrainer._generate
        probe = self

        def timed_generate(trainer: Any, prompts: Any) -> Any:
            probe.rest = max(probe.rest, torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
            output = generate(trainer, prompts)
            probe.rollout = max(probe.rollout, torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
            return output

        if torch.cuda.is_available():
            VrftGRPOTrainer._generate = timed_generate

    def reset(self) -> None:
        self.rollout = self.rest = 0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def finish(self) -> None:
        if torch.cuda.is_available():
            self.rest = max(self.rest, torch.cuda.max_memory_allocated())


def skip_final_save() -> None:
    """The final model directory (weights, manifest hashes) is disk time, not GPU memory."""
    import vrft.train.runtime as runtime

    def no_final(trainer: Any, output_dir: Path, **kwargs: Any) -> tuple[Path, None]:
        return Path(output_dir) / "final", None

    runtime.save_final = no_final


def experiment(
    checkpoint: Path, source: Path, args: argparse.Namespace, generations: int, checkpointing: bool
) -> ExperimentConfig:
    return from_dict(
        ExperimentConfig,
        {
            "model": {"name_or_path": str(checkpoint), "max_pixels": args.max_pixels},
            "dataset": {
                "train": {
                    "kind": "shapes",
                    "path": str(source),
                    "n_images": 48,
                    "image_size": list(args.image_size),
                },
                "shots": 4,
                "categories": ["circle", "square"],
                "eval_max_per_category": 1,
            },
            "grpo": {
                "max_steps": 1,
                "num_generations": generations,
                "per_device_train_batch_size": generations,
                "gradient_accumulation_steps": 2,
                "max_completion_length": args.completion_tokens,
                "gradient_checkpointing": checkpointing,
                "save_steps": 10_000,
                "completions_per_step": 0,
            },
            "pipeline": {"train_resources": {"gpus": 1}, "gpu_memory": args.gpu_memory},
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(qwen2_vl_shapes.SHAPES), default="2b")
    parser.add_argument(
        "--settings", default=DEFAULT_SETTINGS, help="comma-separated G:checkpointing, e.g. 8:on,4:off"
    )
    parser.add_argument("--completion-tokens", type=int, default=256)
    parser.add_argument("--max-pixels", type=int, default=PAPER_MAX_PIXELS)
    parser.add_argument("--image-size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    parser.add_argument("--gpu-memory", type=float, default=141.0, help="GiB per GPU (an H200: 141)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    settings = []
    for item in args.settings.split(","):
        generations, _, checkpointing = item.partition(":")
        settings.append((int(generations), checkpointing.strip().lower() in ("on", "true", "1")))
    cuda = torch.cuda.is_available()
    if args.shape == "2b" and not cuda:
        parser.error("the 2B shape needs a CUDA device (use --shape mini to run the path on a CPU)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    probe = PhaseProbe()
    skip_final_save()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        tiny = build_tiny_model(root / "tiny", family="qwen2_vl")
        device = "cuda" if cuda else "cpu"
        checkpoint = qwen2_vl_shapes.build_checkpoint(
            args.shape, tiny, root / "model", device, torch.bfloat16 if cuda else torch.float32
        )
        dataset = bench_grpo.build_shapes(root / "shapes", list(args.image_size))
        source = root / "shapes" / "source"
        first = experiment(checkpoint, source, args, *settings[0])
        files = ModelFiles(first.model)
        shape = model_shape(first.model)
        inputs = stage_inputs(first, files)
        for n, (generations, checkpointing) in enumerate(settings):
            config = experiment(checkpoint, source, args, generations, checkpointing)
            train_seq, eval_seq = inputs.sequences(config)
            estimate = stage_estimate("grpo", config, shape, train_seq, eval_seq, args.gpu_memory * GIB)
            assert estimate is not None
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            probe.reset()
            start = time.perf_counter()
            train_grpo(config.grpo, dataset, root / f"run-{n}", model=config.model)
            probe.finish()
            phases = {estimate.phase: estimate.peak / GIB}
            if estimate.other_phase:
                phases[estimate.other_phase] = estimate.other_bytes / GIB
            measured = max(probe.rollout, probe.rest) / GIB if cuda else None
            result = {
                "shape": args.shape,
                "device": torch.cuda.get_device_name() if cuda else "CPU (nothing measured)",
                "num_generations": generations,
                "gradient_checkpointing": checkpointing,
                "completions_per_micro_step": generations,
                "prompt_tokens": train_seq["grpo"].prompt_tokens,
                "image_tokens": train_seq["grpo"].image_tokens,
                "max_completion_length": args.completion_tokens,
                "predicted_gib": estimate.peak / GIB,
                "predicted_phase": estimate.phase,
                "predicted_rollout_gib": phases.get("rollout"),
                "predicted_train_gib": phases.get("training micro-step"),
                "predicted_terms_gib": {t.name: t.bytes / GIB for t in estimate.terms},
                "measured_gib": measured,
                "measured_rollout_gib": probe.rollout / GIB if cuda else None,
                "measured_train_gib": probe.rest / GIB if cuda else None,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB if cuda else None,
                "ratio": estimate.peak / GIB / measured if measured else None,
                "within_20_percent": abs(estimate.peak / GIB / measured - 1) <= 0.2 if measured else None,
                "seconds": time.perf_counter() - start,
            }
            results.append(result)
            shown = "n/a" if measured is None else f"{measured:.2f} GiB"
            print(
                f"G {generations}, checkpointing {'on' if checkpointing else 'off'}: predicted "
                f"{estimate.peak / GIB:.2f} GiB ({estimate.phase}), measured {shown}",
                flush=True,
            )
    if args.json:
        versions = bench_grpo.versions()
        args.json.write_text(
            json.dumps({"benchmark": "memory", "versions": versions, "results": results}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
