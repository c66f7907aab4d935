"""Run tags: the one list of names the stages write and the report reads, and the one builder.

Every run vrft writes carries the tags of :class:`RunTags` (what experiment, model and data, which
method, how many shots, which pipeline run, code and image); an evaluation adds what it turned out
to be (:func:`evaluation_tags`: task, eval mode, the split and image cap that make two evaluations
comparable). The report (:mod:`vrft.report`) groups runs by ``config`` and ``model`` and places
them by ``method``, ``shots`` and ``seed``.

>>> RunTags(method="rft", config="coco_8cat", model="Qwen/Qwen2-VL-2B-Instruct", shots=4).as_tags("evaluate")
{'stage': 'evaluate', 'method': 'rft', 'config': 'coco_8cat', 'model': 'Qwen/Qwen2-VL-2B-Instruct', 'shots': '4'}
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIT_COMMIT_ENV = "VRFT_GIT_COMMIT"

TAG_STAGE = "stage"  # pipeline | dataset | train | evaluate | report
TAG_METHOD = "method"  # base | sft | rft (see report_method)
TAG_CONFIG = "config"  # the experiment config's name
TAG_MODEL = "model"  # the base model
TAG_DATASET = "dataset"
TAG_SHOTS = "shots"  # "" / absent: not a k-shot setting
TAG_GIT_COMMIT = "git_commit"
TAG_IMAGE = "image"  # the container image a stage ran in (absent: not in a container)
TAG_CONFIG_SHA256 = "config_sha256"
TAG_RUN_ID = "run_id"  # the pipeline run id (the artifact prefix runs/<run_id>/)
TAG_PAPER_TABLE, TAG_PAPER_MODEL, TAG_PAPER_COLUMN = "paper_table", "paper_model", "paper_column"
TAG_TASK, TAG_EVAL_MODE = "task", "eval_mode"
TAG_REGRESSION_STATUS = "regression_status"
# What makes two evaluations comparable (the report refuses a row whose values differ from its table's):
TAG_EVAL_SPLIT, TAG_IMAGE_CAP, TAG_SEED = "eval_split_sha256", "max_eval_images", "seed"
TAG_GATE_SOURCE, TAG_GROUND_TRUTH = "gate_source", "ground_truth"
# What trained a row (vrft.paper_mode.training_objective: "reward:<name>", "sft:<prompt style>"), and
# the evaluation's protocol entries (vrft.evaluate.run.evaluation_protocol) as "protocol.<entry>".
TAG_TRAINING, TAG_PROTOCOL_PREFIX = "training", "protocol."
TAG_ERROR = "error"  # on a FAILED / KILLED run: the (redacted) exception
ARTIFACT_TAG_PREFIX = "artifact."
# On a pipeline (parent) run, written by its report: series -> the MLflow evaluation run whose numbers
# the report showed (JSON), so that the next run's regression check compares with what this run said.
TAG_EVALUATION_RUNS = "evaluation_runs"
# Stage runs a report found without a parent (a cluster's) and nested under the pipeline run it made.
TAG_PARENT_RUN = "mlflow.parentRunId"
# MLflow's experiment kind: its UI (3.x) opens an experiment without one on the GenAI overview page
# (traces, latency: empty for vrft); "finetuning" is a model-training kind, which opens the runs table.
TAG_EXPERIMENT_KIND, EXPERIMENT_KIND = "mlflow.experimentKind", "finetuning"

STAGE_DATASET, STAGE_TRAIN, STAGE_EVALUATE, STAGE_REPORT = "dataset", "train", "evaluate", "report"
STAGE_PIPELINE = "pipeline"  # the parent run of one pipeline run (local runner, or made by the report)
METHODS = ("base", "sft", "rft")
# Training method (the `vrft train` sub-command, the config section) -> the report's method tag.
_REPORT_METHOD = {"grpo": "rft", "sft": "sft"}


def report_method(training_method: str) -> str:
    """The ``method`` tag of a training method's runs: GRPO is the paper's RFT.

    >>> report_method("grpo"), report_method("sft")
    ('rft', 'sft')
    """
    try:
        return _REPORT_METHOD[training_method]
    except KeyError:
        raise ValueError(
            f"unknown training method {training_method!r}; expected one of {', '.join(_REPORT_METHOD)}"
        ) from None


@dataclass(frozen=True)
class RunTags:
    """What a run is: which experiment config, model and data, trained how, with how many shots,
    in which pipeline run, with which code and image. Empty fields are left out of the tags."""

    method: str  # base | sft | rft; "" for dataset and report runs
    config: str  # the experiment config's name, e.g. coco_8cat
    model: str  # the base model, e.g. Qwen/Qwen2-VL-2B-Instruct
    dataset: str = ""
    shots: int | None = None  # None: not a k-shot setting (OVD, LISA)
    paper_table: str = ""  # e.g. table3, when the config reproduces a paper table
    paper_model: str = ""  # the paper's row group, e.g. Qwen2-VL-2B
    paper_column: str = ""  # Table 2 dataset / Table 6 split of the primary metric
    seed: str = ""  # evaluations of trained checkpoints: the training seed (repeats differ only here)
    training: str = ""  # what trained the row: "reward:<name>" (RFT), "sft:<prompt style>" (SFT)
    run_id: str = ""  # the pipeline run
    config_sha256: str = ""
    git_commit: str = ""
    image: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)  # the config's own experiment.tags

    @classmethod
    def for_experiment(cls, config: Any, *, method: str = "", run_id: str = "", image: str = "") -> RunTags:
        """The tags of a run of an :class:`~vrft.experiment.ExperimentConfig`; evaluations of a
        trained checkpoint (``method`` sft or rft) also carry the seed it was trained with."""
        from vrft.paper_mode import training_objective

        seed = {"rft": config.grpo.seed, "sft": config.sft.seed}.get(method)
        return cls(
            method=method,
            config=config.experiment.name,
            model=config.model.name_or_path,
            dataset=config.dataset.preset or config.dataset.train.display_name,
            shots=config.dataset.shots,
            paper_table=config.report.paper_table,
            paper_model=config.report.paper_model,
            paper_column=config.report.paper_column,
            seed="" if seed is None else str(seed),
            training=training_objective(config, method),
            run_id=run_id,
            config_sha256=config.digest(),
            git_commit=current_git_commit(),
            image=image,
            extra=dict(config.experiment.tags),
        )

    def validate(self) -> None:
        """What an evaluation run needs for the report to place it."""
        if self.method not in METHODS:
            raise ValueError(f"method: {self.method!r} is not one of {', '.join(METHODS)}")
        if not self.config or not self.model:
            raise ValueError("config and model tags are required: the report groups runs by them")

    def as_tags(self, stage: str = "") -> dict[str, str]:
        """The tags of a run of ``stage`` (dataset, train, evaluate, report; none for a parent run)."""
        tags = {
            TAG_STAGE: stage,
            TAG_METHOD: self.method,
            TAG_CONFIG: self.config,
            TAG_MODEL: self.model,
            TAG_DATASET: self.dataset,
            TAG_SHOTS: "" if self.shots is None else str(self.shots),
            TAG_PAPER_TABLE: self.paper_table,
            TAG_PAPER_MODEL: self.paper_model,
            TAG_PAPER_COLUMN: self.paper_column,
            TAG_SEED: self.seed,
            TAG_TRAINING: self.training,
            TAG_RUN_ID: self.run_id,
            TAG_CONFIG_SHA256: self.config_sha256,
            TAG_GIT_COMMIT: self.git_commit,
            TAG_IMAGE: self.image,
            **self.extra,
        }
        return {k: str(v) for k, v in tags.items() if v not in ("", None)}


def evaluation_tags(result: Any) -> dict[str, str]:
    """What an evaluation turned out to be, added to its run's :class:`RunTags`: ``task`` and, for
    detection, ``eval_mode`` (the mode changes the numbers, so the report and readers must see it),
    the evaluated split, the image cap and where the existence gate came from."""
    summary = result.summary
    details = summary.get("details") or {}
    tags = {TAG_TASK: result.task}
    if details.get("mode"):
        tags[TAG_EVAL_MODE] = details["mode"]
    split = (summary.get("dataset") or {}).get("eval_split_sha256")
    if split:
        tags[TAG_EVAL_SPLIT] = split
    cap = (summary.get("config") or {}).get("max_eval_images")
    tags[TAG_IMAGE_CAP] = "all" if cap is None else str(cap)
    if details.get("gate"):
        tags[TAG_GATE_SOURCE] = str(details["gate"].get("source", ""))
    if details.get("ground_truth"):
        tags[TAG_GROUND_TRUTH] = details["ground_truth"]
    for key, value in (summary.get("protocol") or {}).items():
        tags[TAG_PROTOCOL_PREFIX + key] = str(value)
    if summary.get("training"):  # read from the checkpoint's own training record: it wins over the config
        tags[TAG_TRAINING] = str(summary["training"])
    return tags


def current_git_commit(cwd: str | Path | None = None) -> str:
    """The checkout's ``git rev-parse HEAD``; else ``$VRFT_GIT_COMMIT`` (set in images); else "unknown"."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        result = None
    if (
        result is not None
        and result.returncode == 0
        and re.fullmatch(r"[0-9a-f]{40,64}", result.stdout.strip())
    ):
        return result.stdout.strip()
    return os.environ.get(GIT_COMMIT_ENV) or "unknown"
