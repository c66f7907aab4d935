"""Training on every GPU of one node: ``torchrun`` with one process per GPU, output streamed.

A training stage that gets ``gpus > 1`` does not train in its own process (one process would use
one GPU, and a step would see 1/8 of the paper's prompts): it writes the experiment config to a
file and runs ``vrft train METHOD CONFIG`` under ``torch.distributed.run`` with one process per
GPU. The stage config's DeepSpeed file (``grpo.deepspeed: zero3``) reaches every process through
the trainer arguments, as transformers documents for ``torchrun``; ``WORLD_SIZE`` is set for the
preflight and trl's batch arithmetic. Without CUDA the processes use gloo on the CPU (tests).

The child's output is streamed line by line to this process's stdout (the pod log); a failing
child raises :class:`TrainingLaunchError` with its one-line error.

>>> launch_command("grpo", "/w/experiment.json", "/w/dataset", "/w/out", 8)[2:6]
['torch.distributed.run', '--standalone', '--nnodes=1', '--nproc_per_node=8']
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from vrft.train.config import StageConfig

#: Lines of the child's output kept to explain a failure.
_TAIL_LINES = 200


class TrainingLaunchError(RuntimeError):
    """The distributed training processes failed; the message carries the child's error line."""


def needs_launcher(config: StageConfig, processes: int) -> bool:
    """Whether a stage trains through torchrun: several processes, or DeepSpeed (even on one GPU)."""
    return processes > 1 or bool(config.deepspeed)


def launch_command(
    method: str,
    config_path: str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path,
    processes: int,
    *,
    overrides: Sequence[str] = (),
    tracking_run_id: str = "",
) -> list[str]:
    """``python -m torch.distributed.run`` of ``vrft train`` with ``processes`` local processes."""
    if processes < 1:
        raise ValueError(f"processes={processes}: must be >= 1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc_per_node={processes}",
    ]
    return [
        *command,
        *train_module_args(
            method, config_path, dataset_dir, output_dir, overrides=overrides, tracking_run_id=tracking_run_id
        ),
    ]


def train_module_args(
    method: str,
    config_path: str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    tracking_run_id: str = "",
) -> list[str]:
    """``-m vrft.cli train METHOD CONFIG ...``: what every launcher (torchrun on one node, each pod of
    a multi-node PyTorchJob) runs in each process. With ``tracking_run_id`` the processes log into
    that MLflow run (rank 0 only), not one run each."""
    args = ["-m", "vrft.cli", "train", method, str(config_path), "--dataset", str(dataset_dir)]
    args += ["--output-dir", str(output_dir)]
    if tracking_run_id:
        args += ["--tracking-run-id", tracking_run_id]
    return [*args, *overrides]


def child_error(lines: Sequence[str]) -> str:
    """The line that says why the child failed: vrft's own one-line error, else the last exception."""
    for prefix in ("vrft train: error:",):
        for line in reversed(lines):
            if prefix in line:
                return line[line.index(prefix) :].strip()
    for line in reversed(lines):
        text = line.strip()
        if text and (
            text.split(":", 1)[0].endswith(("Error", "Exception")) or "Error:" in text.split(" ", 1)[0]
        ):
            return text
    return next((line.strip() for line in reversed(lines) if line.strip()), "no output")


def run_distributed(
    method: str,
    config_path: str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path,
    processes: int,
    *,
    tracking_run_id: str = "",
    overrides: Sequence[str] = (),
    stream: TextIO | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """Train with ``processes`` local processes; stream their output; return ``output_dir``.

    Raises :class:`TrainingLaunchError` naming the exit status and the child's error line.
    """
    stream = stream or sys.stdout
    command = launch_command(
        method,
        config_path,
        dataset_dir,
        output_dir,
        processes,
        overrides=overrides,
        tracking_run_id=tracking_run_id,
    )
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    if "OMP_NUM_THREADS" not in child_env:  # torchrun would warn and set 1; keep the node's cores shared
        child_env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=child_env
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            stream.write(line)
            tail.append(line.rstrip("\n"))
        status = child.wait()
    stream.flush()
    if status != 0:
        raise TrainingLaunchError(
            f"{method} training on {processes} processes failed (exit status {status}): "
            f"{child_error(list(tail))}"
        )
    return Path(output_dir)
