"""Pre-train the default run's small base: a tiny Qwen2-VL that names the colour of a big shape.

The random ``tiny://qwen2_vl`` never writes a well-formed answer, so a run on it reports zeros
everywhere. This module turns the 1.2 M-parameter ``base`` size of :mod:`vrft.models.tiny` into a
model that answers ``<think>…</think> <answer>colour</answer>`` and is right well above chance,
using nothing but vrft's own stages on generated data: the synthetic colour task
(:func:`vrft.data.shapes.generate_shapes_classification` with ``label="colour"``), SFT of every
weight (:func:`vrft.train.train_sft`), then the evaluation stage on a validation set.

Everything is seeded (generator seeds, the initial weights, the trainer's seed), so the same
machine and library versions reproduce the same weights; other CPUs or BLAS builds can differ in
the last bits. The result is written fp16 (half the bytes; every stage loads it as fp32 on CPU)
with ``recipe.json``: the recipe and the measured accuracies.

``python tools/pretrain_tiny.py OUTPUT_DIR`` rebuilds it; the repository ships the result
in ``vrft/resources/models/`` (the default names it ``tiny://qwen2_vl-colours``; see docs/default-run.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vrft.io import atomic_directory, dumps_deterministic

#: The classification noun of the colour task ("Please identify the colour of the coloured shape").
COLOUR_NOUN = "coloured shape"


@dataclass
class PretrainRecipe:
    """How the base is made; the defaults are the shipped model's recipe."""

    seed: int = 0  # initial weights and the trainer's seed
    image_size: list[int] = field(default_factory=lambda: [112, 112])
    shape_size: list[float] = field(default_factory=lambda: [0.30, 0.45])  # big shapes: the colour is plain
    train_per_class: int = 200  # 8 colours: 1600 images
    validation_per_class: int = 30  # 240 images, for choosing the recipe
    train_generator_seed: int = 10  # not the seeds the experiments' own shapes sets use (0, 1)
    validation_generator_seed: int = 11
    max_steps: int = 150
    batch_size: int = 16
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "constant_with_warmup"
    warmup_steps: int = 10
    weight_decay: float = 0.0


def colour_dataset_config(recipe: PretrainRecipe):
    """The pre-training data: every generated image of the train and validation sets."""
    from vrft.data.config import DatasetConfig, SourceConfig

    def source(n: int, seed: int) -> SourceConfig:
        return SourceConfig(
            kind="shapes_classification",
            label="colour",
            n_images=n,
            image_size=recipe.image_size,
            shape_size=recipe.shape_size,
            generator_seed=seed,
        )

    return DatasetConfig(
        train=source(recipe.train_per_class, recipe.train_generator_seed),
        eval=source(recipe.validation_per_class, recipe.validation_generator_seed),
        shots=None,
        noun=COLOUR_NOUN,
        seed=recipe.seed,
    )


def pretrain_tiny_base(
    output_dir: str | Path,
    recipe: PretrainRecipe | None = None,
    *,
    work_dir: str | Path | None = None,
    evaluate: bool = True,
) -> Path:
    """Build the random ``base``-size model, SFT it on the colour task, write it to ``output_dir``.

    ``output_dir`` appears complete or not at all. ``work_dir`` keeps the intermediate dataset and
    trainer outputs (default: a temporary directory, removed afterwards).
    """

    from vrft.data.build import build_dataset
    from vrft.models.config import ModelConfig
    from vrft.models.tiny import build_tiny_model
    from vrft.train import train_sft
    from vrft.train.config import LoraSettings, SFTStageConfig

    recipe = recipe or PretrainRecipe()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vrft-pretrain-") as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        pixels = recipe.image_size[0] * recipe.image_size[1]
        random_dir = build_tiny_model(work / "random", seed=recipe.seed, size="base", max_pixels=pixels)
        model = ModelConfig(name_or_path=str(random_dir), min_pixels=3136, max_pixels=pixels, dtype="float32")
        data = build_dataset(colour_dataset_config(recipe), work / "data", progress=False, overwrite=True)
        sft = SFTStageConfig(
            max_steps=recipe.max_steps,
            learning_rate=recipe.learning_rate,
            lr_scheduler_type=recipe.lr_scheduler_type,
            warmup_steps=recipe.warmup_steps,
            weight_decay=recipe.weight_decay,
            per_device_train_batch_size=recipe.batch_size,
            gradient_accumulation_steps=1,
            gradient_checkpointing=False,
            lora=LoraSettings(enabled=False),
            seed=recipe.seed,
            save_steps=50,
            save_total_limit=2,
            resume="never",
        )
        shutil.rmtree(work / "sft", ignore_errors=True)
        trained = train_sft(sft, data.output_dir, work / "sft", model=model)
        record = {
            "recipe": asdict(recipe),
            "train_loss": trained.metrics.get("train_loss"),
            "train_seconds_this_machine": round(time.monotonic() - started, 1),
        }
        return write_base(
            trained.final_dir,
            output_dir,
            record,
            validation_data=data.output_dir if evaluate else None,
            work_dir=work,
        )


def write_base(
    trained_dir: str | Path,
    output_dir: str | Path,
    record: dict,
    *,
    validation_data: str | Path | None,
    work_dir: str | Path,
) -> Path:
    """Write the trained model of ``trained_dir`` to ``output_dir`` in fp16 with its processor, and
    ``recipe.json`` (``record`` plus the validation metrics when ``validation_data`` is given)."""
    import torch

    from vrft.evaluate import evaluate_checkpoint
    from vrft.evaluate.config import EvaluateConfig
    from vrft.models.config import ModelConfig

    trained_dir, output = Path(trained_dir), Path(output_dir)
    record = dict(record)
    with atomic_directory(output, overwrite=True) as staging:
        weights = ModelConfig(name_or_path=str(trained_dir), dtype="float32").load_model()
        weights.to(torch.float16).save_pretrained(staging, safe_serialization=True)
        for item in trained_dir.iterdir():  # processor, tokenizer, chat template, generation config
            if item.is_file() and not (staging / item.name).exists() and item.suffix in (".json", ".jinja"):
                if item.name not in ("trainer_state.json", "manifest.json"):
                    shutil.copy2(item, staging / item.name)
        if validation_data is not None:
            pixels = record["recipe"]["image_size"][0] * record["recipe"]["image_size"][1]
            result = evaluate_checkpoint(
                EvaluateConfig(batch_size=16, max_new_tokens=48, progress=False),
                validation_data,
                Path(work_dir) / "eval-validation",
                overwrite=True,
                label="base",
                model=ModelConfig(name_or_path=str(staging), max_pixels=pixels),
            )
            record["validation"] = {
                k: round(v, 4) for k, v in result.metrics.items() if not k.startswith("timing/")
            }
        (staging / "recipe.json").write_text(dumps_deterministic(record), encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/pretrain_tiny.py", description=__doc__.split("\n")[0])
    parser.add_argument("output_dir")
    parser.add_argument("--seed", type=int, default=PretrainRecipe.seed)
    parser.add_argument("--steps", type=int, default=PretrainRecipe.max_steps)
    parser.add_argument("--learning-rate", type=float, default=PretrainRecipe.learning_rate)
    parser.add_argument("--train-per-class", type=int, default=PretrainRecipe.train_per_class)
    parser.add_argument("--shape-size", type=float, nargs=2, default=None, metavar=("MIN", "MAX"))
    parser.add_argument("--work-dir", default=None, help="keep the dataset and trainer outputs here")
    args = parser.parse_args(argv)
    recipe = PretrainRecipe(
        seed=args.seed,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        train_per_class=args.train_per_class,
    )
    if args.shape_size:
        recipe.shape_size = list(args.shape_size)
    out = pretrain_tiny_base(args.output_dir, recipe, work_dir=args.work_dir)
    print(json.dumps(json.loads((out / "recipe.json").read_text()), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
