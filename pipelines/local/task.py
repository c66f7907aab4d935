"""One task of a local run, in its own process: ``python -m vrft.pipelines.local.task SPEC_FILE``.

The runner (:mod:`vrft.pipelines.local.runner`) writes the task's spec (the planned task and the
metadata of each input: artifact URI and manifest SHA-256) into the task's directory and starts
this module in a process group of its own, or in a container of the CPU image. It calls the same
stage function a Kubeflow component runs (``dataset_stage``, ``grpo_stage``, ... of
:mod:`vrft.components`) with the planned parameters, the inputs and fresh outputs, then writes
each output's metadata to ``outputs.json`` next to the spec. A failure writes its one-line reason
to ``error.txt`` (and the traceback to the task's output, which the runner keeps in the run's log)
and exits 1; SIGTERM stops the stage cleanly (:mod:`vrft.signals`) and exits 143.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vrft.io import atomic_write_text
from vrft.pipelines.plan import Task
from vrft.signals import Terminated, unwind_on_sigterm

SPEC_FILE, OUTPUTS_FILE, ERROR_FILE = "spec.json", "outputs.json", "error.txt"


class Artifact:
    """What a stage function reads and writes for an artifact: its metadata (URI, manifest hash)
    and a local file for a small pointer or page (the ``path`` of kfp's artifacts)."""

    def __init__(self, metadata: dict[str, Any] | None = None, path: str = "") -> None:
        self.metadata = dict(metadata or {})
        self.path = path

    def log_metric(self, metric: str, value: float) -> None:
        """What kfp's ``Metrics.log_metric`` does: the value goes into the metadata."""
        self.metadata[metric] = value


def stage_functions() -> dict[str, Callable[..., Any]]:
    """Stage -> the function its Kubeflow component runs."""
    from vrft.components import dataset, evaluate, report, train

    return {
        "dataset": dataset.dataset_stage,
        "grpo": train.grpo_stage,
        "sft": train.sft_stage,
        "evaluate": evaluate.evaluate_stage,
        "collect": evaluate.collect_stage,
        "report": report.report_stage,
    }


def run_task(spec_file: Path) -> dict[str, dict[str, Any]]:
    """Run the task ``spec_file`` describes; write and return its outputs' metadata."""
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    task = Task.from_dict(spec["task"])
    directory = spec_file.parent
    inputs = {name: Artifact(metadata) for name, metadata in spec["inputs"].items()}
    (directory / "outputs").mkdir(exist_ok=True)
    outputs = {name: Artifact(path=str(directory / "outputs" / name)) for name in task.outputs}
    stage_functions()[task.stage](**task.params, **inputs, **outputs)
    result = {name: artifact.metadata for name, artifact in outputs.items()}
    atomic_write_text(directory / OUTPUTS_FILE, json.dumps(result, sort_keys=True) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vrft.pipelines.local.task SPEC_FILE", file=sys.stderr)
        return 2
    spec_file = Path(args[0])
    unwind_on_sigterm()  # the runner stops a task with SIGTERM to its group: unwind, end runs KILLED
    try:
        run_task(spec_file)
    except (Terminated, KeyboardInterrupt) as exc:
        print(f"task stopped: {exc or type(exc).__name__}", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)
    except Exception as exc:
        traceback.print_exc()
        from vrft.tracking import redact_text

        reason = redact_text(f"{type(exc).__name__}: {exc}".splitlines()[0])
        atomic_write_text(spec_file.parent / ERROR_FILE, reason + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
