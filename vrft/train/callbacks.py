"""What a training run records: local JSONL logs always, MLflow when a tracking URI is configured.

* ``train_log.jsonl`` (:class:`JsonlLogCallback`): every logged step as trl reports it: ``loss``,
  ``learning_rate``, ``grad_norm``, ``kl``, ``reward`` and each reward part as its own key
  (``rewards/detection_iou/mean``, ...), ``completions/mean_length``, ``step_time``.
* ``samples.jsonl`` and ``completions.jsonl`` (:class:`RolloutRecorder`): for each optimizer step,
  which dataset rows were trained on, and a sample of completions with their reward parts. The
  recorder wraps the reward functions, the one place where trl hands over completions together with
  the step and the dataset columns.
* MLflow (:class:`MlflowCallback`): the config as params and the same metrics, into a new run, a
  run nested under a parent (the process's active run by default) or a given existing run.

Every record carries ``step``: the optimizer step it belongs to (1-based, as trl's logs). A run
resumed from ``checkpoint-K`` first drops the records of steps after K (:func:`truncate_jsonl`), so
the files always describe one consistent run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from vrft.answers import completion_text
from vrft.io import atomic_write_text

TRAIN_LOG = "train_log.jsonl"
SAMPLES_LOG = "samples.jsonl"
COMPLETIONS_LOG = "completions.jsonl"
MLFLOW_RUN_FILE = "mlflow_run.json"


def _plain(value: Any) -> Any:
    """A JSON-safe scalar: non-finite floats become null (strict JSON has no NaN)."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    try:
        return _plain(float(value))
    except (TypeError, ValueError):
        return str(value)


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one line and flush it, so a killed run loses at most the line being written."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(_plain(record), ensure_ascii=False) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a JSONL log; a line cut short by a kill is skipped."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Keep only the records of steps up to ``max_step`` (for a run resumed from ``checkpoint-max_step``)."""
    if not path.is_file():
        return
    kept = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= max_step]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))


class JsonlLogCallback(TrainerCallback):
    """Appends every log event of the main process to ``train_log.jsonl`` with its ``step``."""

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / TRAIN_LOG

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if state.is_world_process_zero and logs:
            append_jsonl(self.path, {"step": state.global_step, **logs})


class RolloutRecorder:
    """Wraps trl reward functions to record each step's rows and a sample of completions.

    trl calls the reward functions one after another on the same generation batch; the wrapper of
    the last one writes the records, with the values of all of them. Only the main process writes;
    with several processes the records are its share of the batch.
    """

    def __init__(self, output_dir: Path, completions_per_step: int, is_main_process: bool) -> None:
        self.samples_path = Path(output_dir) / SAMPLES_LOG
        self.completions_path = Path(output_dir) / COMPLETIONS_LOG
        self.completions_per_step = completions_per_step
        self.is_main_process = is_main_process
        self._values: dict[str, list[float | None]] = {}

    def wrap(self, functions: Sequence[Callable[..., list[float | None]]]) -> list[Callable[..., Any]]:
        """The same reward functions (same ``__name__``, so trl's metric names are unchanged), recording."""
        names = [getattr(f, "__name__", type(f).__name__) for f in functions]
        if len(set(names)) != len(names):
            raise ValueError(f"reward functions need distinct names for logging, got {names}")

        def wrapped_for(
            function: Callable[..., list[float | None]], name: str, last: bool
        ) -> Callable[..., Any]:
            def wrapped(**kwargs: Any) -> list[float | None]:
                values = list(function(**kwargs))
                if self.is_main_process:
                    self._values[name] = values
                    if last:
                        self._record(kwargs)
                return values

            wrapped.__name__ = name
            wrapped.__doc__ = getattr(function, "__doc__", None)
            return wrapped

        return [wrapped_for(f, n, i == len(functions) - 1) for i, (f, n) in enumerate(zip(functions, names))]

    def _record(self, kwargs: Mapping[str, Any]) -> None:
        state = kwargs.get("trainer_state")
        step = (state.global_step if state is not None else 0) + 1
        rows = list(kwargs.get("row_index") or [])
        image_ids = list(kwargs.get("image_id") or [])
        completions = kwargs.get("completions") or []
        # trl repeats each prompt num_generations times in a row: keep one entry per prompt.
        prompt_starts = [i for i in range(len(rows)) if i == 0 or rows[i] != rows[i - 1]]
        append_jsonl(
            self.samples_path,
            {
                "step": step,
                "rows": [rows[i] for i in prompt_starts],
                "image_ids": [image_ids[i] for i in prompt_starts if i < len(image_ids)],
            },
        )
        for i in range(min(self.completions_per_step, len(completions))):
            parts = {name: values[i] for name, values in self._values.items()}
            known = [v for v in parts.values() if v is not None]
            append_jsonl(
                self.completions_path,
                {
                    "step": step,
                    "row": rows[i] if i < len(rows) else None,
                    "image_id": image_ids[i] if i < len(image_ids) else None,
                    "completion": completion_text(completions[i]),
                    "rewards": parts,
                    "reward": sum(known) if known else None,
                },
            )
        self._values = {}


@dataclass
class MlflowTarget:
    """The MLflow run a training's metrics go to, besides the local logs (only when a tracking URI
    is known).

    Without ``run_id``, a new run is created, nested under ``parent_run_id`` or else under the
    process's active MLflow run if there is one; a resumed training continues the run it started.
    The URI is never logged (it may carry credentials).
    """

    uri: str = ""  # "" -> $MLFLOW_TRACKING_URI; neither -> local logs only
    experiment: str = "vrft"
    run_id: str = ""
    parent_run_id: str = ""
    run_name: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def resolved_uri(self) -> str:
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI", "")


class MlflowCallback(TrainerCallback):
    """Logs params once and every log event's numeric values as metrics, through
    :class:`vrft.tracking.Tracker` (redacted, explicit run ids: no process-global MLflow state changes).

    A run it created itself is ended FINISHED by ``on_train_end``, or FAILED by :meth:`on_exception`
    (called by the training loop when training raises); a given ``run_id`` is left to its owner.
    """

    def __init__(self, tracking: MlflowTarget, params: Mapping[str, Any], output_dir: Path) -> None:
        from vrft.tracking import Tracker

        self.tracker = Tracker(tracking.resolved_uri())
        self.tracking = tracking
        self.params = params
        self.run_file = Path(output_dir) / MLFLOW_RUN_FILE
        self.run_id = ""

    def _open_run(self) -> str:
        import mlflow

        if self.tracking.run_id:
            return self.tracking.run_id
        if self.run_file.is_file():  # a resumed training continues its run
            return json.loads(self.run_file.read_text(encoding="utf-8"))["run_id"]
        active = mlflow.active_run()
        parent = self.tracking.parent_run_id or (active.info.run_id if active is not None else "")
        run_id = self.tracker.create_run(
            self.tracking.experiment, self.tracking.run_name, self.tracking.tags, parent_run_id=parent or None
        )
        assert run_id is not None  # the callback exists only when a tracking URI is known
        atomic_write_text(self.run_file, json.dumps({"run_id": run_id}) + "\n")
        return run_id

    @property
    def _owns_run(self) -> bool:
        return bool(self.run_id) and not self.tracking.run_id

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        self.run_id = self._open_run()
        self.tracker.log_params(dict(self.params), run_id=self.run_id, skip_logged=True)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not (state.is_world_process_zero and self.run_id and logs):
            return
        metrics = {
            key: value
            for key, value in logs.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        }
        if metrics:
            self.tracker.log_metrics(metrics, step=state.global_step, run_id=self.run_id)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero and self._owns_run:
            self.tracker.end_run(self.run_id)

    def on_exception(self, error: BaseException) -> None:
        """Training raised: a run this callback created ends FAILED (KILLED on an interrupt)."""
        if self._owns_run:
            self.tracker.end_run(self.run_id, error)
