"""The ``vrft`` command line: one sub-command per stage, plus the pipeline commands.

Stage commands take an experiment YAML and ``section.key=value`` overrides, torchtune-style:
``vrft train grpo configs/coco_8cat.yaml grpo.max_steps=25 model.name_or_path=/models/qwen2-vl-2b``.
Commands whose stage has not landed yet say so and exit with status 2; none pretends to work.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vrft import __version__
from vrft.config import ConfigError

# Sub-commands planned but not built yet -> the issue that tracks each.
PENDING: dict[str, str] = {
    "train grpo": "issue 4 (GRPO training)",
    "train sft": "issue 4 (SFT baseline)",
    "evaluate": "issue 5 (checkpoint evaluation)",
    "report": "issue 5 (RFT-vs-SFT report)",
    "run": "issue 6 (the pipeline on the embedded default)",
    "up": "issue 6 (local S3 + MLflow services)",
    "down": "issue 6 (local S3 + MLflow services)",
    "compile": "issue 6 (Kubeflow compile)",
    "submit": "issue 7 (Kubeflow submission)",
    "schedule": "issue 7 (nightly recurring runs)",
    "runs": "issue 7 (run listing)",
}


class CommandError(Exception):
    """An error to print as one line, without a traceback."""


def _pending(name: str) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        print(f"vrft {name}: not implemented yet; tracked in {PENDING[name]}.", file=sys.stderr)
        return 2

    return run


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from vrft.models.tiny import build_tiny_model

    path = build_tiny_model(args.output_dir, family=args.family, seed=args.seed)
    print(path)
    return 0


def _cmd_reward(args: argparse.Namespace) -> int:
    from vrft.config import parse_override
    from vrft.rewards import Reward, resolve_reward

    reward = resolve_reward(args.name)
    text = sys.stdin.read() if args.completion == "-" else args.completion
    columns = {}
    for item in args.column:
        keys, value = parse_override(item)
        columns[".".join(keys)] = [value]
    if isinstance(reward, Reward):
        result = reward.breakdown([text], **columns)[0].as_dict()
    else:
        result = {"overall": reward([text], **columns)[0]}
    print(json.dumps(result))
    return 0


def _cmd_prompt(args: argparse.Namespace) -> int:
    from vrft.config import parse_override
    from vrft.models.coords import BoxConvention
    from vrft.prompts import render_prompt

    values = {}
    for item in args.value:
        keys, value = parse_override(item)
        values[".".join(keys)] = str(value)
    convention = BoxConvention.for_family(args.family)
    print(render_prompt(args.name, convention=convention, width=args.width, height=args.height, **values))
    return 0


def _add_pending(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name.split()[-1], help=f"{help_text} [not implemented yet]")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(func=_pending(name))
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vrft",
        description="Visual Reinforcement Fine-Tuning for Qwen2-VL / Qwen2.5-VL: few-shot data, GRPO with "
        "verifiable visual rewards, an SFT baseline, evaluation and RFT-vs-SFT reports.",
    )
    parser.add_argument("--version", action="version", version=f"vrft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    tiny = sub.add_parser("tiny-model", help="build a tiny random Qwen2-VL / Qwen2.5-VL offline (tests, default run)")
    tiny.add_argument("output_dir", type=Path)
    tiny.add_argument("--family", choices=["qwen2_vl", "qwen2_5_vl"], default="qwen2_vl")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_cmd_tiny_model)

    dataset = sub.add_parser("dataset", help="stage 1: few-shot dataset construction")
    dataset_sub = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    build = dataset_sub.add_parser("build", help="build the train/eval sets of one experiment")
    build.add_argument("config", type=Path)
    build.add_argument("-o", "--output-dir", type=Path, required=True)
    build.add_argument("overrides", nargs="*", help="section.key=value")
    build.set_defaults(func=_cmd_dataset_build)

    train = sub.add_parser("train", help="stages 2 and 3: GRPO training and the SFT baseline")
    train_sub = train.add_subparsers(dest="train_command", metavar="METHOD", required=True)
    _add_pending(train_sub, "train grpo", "GRPO with verifiable visual rewards")
    _add_pending(train_sub, "train sft", "the SFT baseline on the same data and budget")

    _add_pending(sub, "evaluate", "stage 4: evaluate base/SFT/RFT checkpoints (mAP, accuracy, mIoU)")
    _add_pending(sub, "report", "stage 5: paper-style RFT-vs-SFT tables and plots from MLflow")
    _add_pending(sub, "run", "run the whole pipeline locally (local S3 + MLflow)")
    _add_pending(sub, "up", "start the local S3 and MLflow services and keep them")
    _add_pending(sub, "down", "stop the local services")
    _add_pending(sub, "compile", "compile the Kubeflow pipeline to IR YAML")
    _add_pending(sub, "submit", "submit a run to Kubeflow Pipelines")
    _add_pending(sub, "schedule", "create/list/delete nightly recurring runs")
    _add_pending(sub, "runs", "list recent Kubeflow runs")

    reward = sub.add_parser("reward", help="score one completion with a reward and print its breakdown")
    reward.add_argument("name", help="a registered name (detection, classification, ...) or package.module:function")
    reward.add_argument("completion", help="the completion text, or - to read it from standard input")
    reward.add_argument("column", nargs="*", help="dataset columns as key=value (YAML), e.g. 'solution_boxes=[[1,2,3,4]]'")
    reward.set_defaults(func=_cmd_reward)

    prompt = sub.add_parser("prompt", help="render a named prompt template for a model family")
    prompt.add_argument("name", help="detection, classification, existence or grounding")
    prompt.add_argument("value", nargs="*", help="template values as key=value, e.g. category=cat")
    prompt.add_argument("--family", default="qwen2_vl", help="model family (config.model_type)")
    prompt.add_argument("--width", type=int, help="image width (needed by Qwen2.5-VL's absolute convention)")
    prompt.add_argument("--height", type=int, help="image height")
    prompt.set_defaults(func=_cmd_prompt)
    return parser


def _cmd_dataset_build(args: argparse.Namespace) -> int:
    try:
        from vrft.data.build import DatasetConfig, build_dataset
    except ImportError:
        return _pending_dataset()
    from vrft.config import load_config

    config = load_config(DatasetConfig, args.config, args.overrides, section="dataset")
    result = build_dataset(config, args.output_dir)
    print(result.output_dir if hasattr(result, "output_dir") else args.output_dir)
    return 0


def _pending_dataset() -> int:
    print("vrft dataset build: not implemented yet; tracked in issue 3 (few-shot dataset construction).",
          file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ConfigError, CommandError, ValueError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"vrft {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
