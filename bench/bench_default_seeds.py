"""The default experiment's numbers over several training seeds: base, SFT and RFT accuracy on eval.

What docs/training.md ("The default run's base") quotes: the same stages `vrft run` runs (dataset,
``train_grpo``, ``train_sft``, ``evaluate_checkpoint``) on the packaged default experiment, with
the training seed varied and everything else fixed; the data, the base and greedy evaluation do
not depend on the seed. Overrides are the usual ``section.key=value``, so other recipes are tried
the same way:

    python bench/bench_default_seeds.py --seeds 0 1 2
    python bench/bench_default_seeds.py --seeds 0 1 2 grpo.max_steps=30 sft.max_steps=30

Prints one JSON line per evaluation and a summary line (mean and sample standard deviation of
accuracy per method, and RFT − SFT). Wall times depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from vrft.cli import DEFAULT_CONFIG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["rft", "sft"], choices=["rft", "sft"])
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)

    from vrft.data.build import build_dataset
    from vrft.evaluate import evaluate_checkpoint
    from vrft.experiment import load_experiment
    from vrft.train import train_grpo, train_sft

    config = load_experiment(args.config, args.overrides)
    model = config.model.materialized()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vrft-seeds-"))
    data = build_dataset(config.dataset, work / "data", progress=False, overwrite=True).output_dir
    evaluation = replace(config.evaluate, progress=False)

    def evaluate(label: str, checkpoint: Path | None, seed: int | None, seconds: float) -> float:
        checked = model if checkpoint is None else replace(model, name_or_path=str(checkpoint))
        name = label if seed is None else f"{label}-{seed}"
        result = evaluate_checkpoint(
            evaluation, data, work / f"eval-{name}", model=checked, label=label, overwrite=True
        )
        print(
            json.dumps(
                {
                    "method": label,
                    "seed": seed,
                    "accuracy": result.metrics["accuracy"],
                    "format_rate": result.metrics["format_rate"],
                    "train_seconds": round(seconds, 1),
                    "eval_images": result.summary["dataset"]["images"],
                }
            ),
            flush=True,
        )
        return result.metrics["accuracy"]

    base = evaluate("base", None, None, 0.0)
    scores: dict[str, list[float]] = {method: [] for method in args.methods}
    for seed in args.seeds:
        for method in args.methods:
            stage = config.grpo if method == "rft" else config.sft
            train = train_grpo if method == "rft" else train_sft
            started = time.monotonic()
            out = work / f"{method}-{seed}"
            result = train(replace(stage, seed=seed, resume="never"), data, out, model=model)
            scores[method].append(evaluate(method, result.final_dir, seed, time.monotonic() - started))

    def spread(values: list[float]) -> dict[str, float]:
        return {
            "mean": round(statistics.fmean(values), 4),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        }

    summary = {
        "base": base,
        **{m: spread(v) for m, v in scores.items()},
        "seeds": args.seeds,
        "overrides": args.overrides,
    }
    if len(scores) == 2:
        summary["rft_minus_sft"] = spread([r - s for r, s in zip(scores["rft"], scores["sft"], strict=True)])
    print(json.dumps({"summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
