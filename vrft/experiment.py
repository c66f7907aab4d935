"""One experiment = one YAML file with a section per stage (torchtune-style recipe config).

>>> cfg = load_experiment("configs/default.yaml", ["grpo.max_steps=3"])
>>> cfg.experiment.name, cfg.grpo.max_steps, cfg.dataset.train.kind
('default', 3, 'shapes_classification')
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vrft.config import ConfigError, from_dict, parse_override, read_yaml, to_dict
from vrft.data.config import DatasetConfig
from vrft.evaluate.config import EvaluateConfig
from vrft.models.config import ModelConfig
from vrft.report.config import ReportConfig
from vrft.train.config import GRPOStageConfig, SFTStageConfig


@dataclass
class ExperimentInfo:
    """What the experiment is called (the MLflow experiment and the report's ``config`` tag)."""

    name: str = "default"
    description: str = ""
    shots: list[int] = field(
        default_factory=list
    )  # a sweep over dataset.shots (one pipeline run, one report)
    # Repeat RFT and SFT with these training seeds (grpo.seed = sft.seed = each): the report shows the
    # mean ± standard deviation over seeds and says when RFT − SFT is inside that spread. [] = once,
    # with grpo.seed / sft.seed as configured. The few-shot sample (dataset.seed) stays the same.
    seeds: list[int] = field(default_factory=list)
    # Overrides for one shot count of the sweep, e.g. {1: ["grpo.gradient_accumulation_steps=1"]} where
    # 1 shot x 8 categories cannot fill the 16 prompts of a step on 8 GPUs.
    shot_overrides: dict[str, list[str]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"experiment.seeds: repeated seed in {self.seeds}")
        normalized = {}
        for key, overrides in self.shot_overrides.items():
            if isinstance(key, bool) or not str(key).isdigit():
                raise ConfigError(f"experiment.shot_overrides: keys are shot counts, got {key!r}")
            for text in overrides:
                parse_override(text)
            normalized[str(int(key))] = list(overrides)
        self.shot_overrides = normalized  # YAML gives int keys, JSON string ones


@dataclass
class Resources:
    """Kubernetes resources of one stage (ignored by the local runner)."""

    cpu: str = "4"
    memory: str = "16Gi"
    gpus: int = 0
    accelerator: str = "nvidia.com/gpu"  # the resource name; node selection is in k8s/

    def validate(self) -> None:
        if self.gpus < 0:
            raise ConfigError(f"gpus: must be >= 0, got {self.gpus}")


@dataclass
class StageTimeouts:
    """Seconds each stage's pod may run on a cluster before Kubernetes stops it (0: no limit).

    A hung stage would otherwise hold its GPUs and, with a nightly schedule's ``max_concurrency``
    of 1, block every later run.
    """

    dataset: int = 2 * 3600
    train: int = 24 * 3600
    evaluate: int = 8 * 3600
    report: int = 3600

    def validate(self) -> None:
        for name in ("dataset", "train", "evaluate", "report"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"pipeline.timeouts.{name}: must be >= 0 seconds (0: no limit), got {getattr(self, name)}"
                )


@dataclass
class PipelineConfig:
    """Where artifacts and runs go, which images run the stages, and with what resources."""

    artifact_root: str = ""  # s3://bucket/prefix or file:///abs/path; `vrft run` uses its local S3 when empty
    tracking_uri: str = ""  # MLflow; `vrft run` uses its local store when empty
    image_registry: str = "ghcr.io/vrft"
    image_tag: str = "0.1.0"
    retries: int = (
        1  # retries of the stages that can be retried (all but training on spot nodes: still safe, resume)
    )
    caching: bool = True
    evaluate_base: bool = True
    # How many sweep iterations (shot counts x seeds) may hold GPUs at once on a cluster: iteration i
    # starts after iteration i - k's GPU tasks finished. 1 (the default): one iteration at a time, its
    # GRPO, SFT and base evaluation side by side; 0: no bound (every iteration at once).
    max_parallel_iterations: int = 1
    # Training on more than one node runs as a Kubeflow PyTorchJob (DeepSpeed ZeRO-3 across nodes);
    # train_resources.gpus is then per node and every pod mounts the ReadWriteMany `shared_pvc`.
    train_nodes: int = 1
    shared_pvc: str = ""
    shared_mount: str = "/shared"
    dataset_resources: Resources = field(default_factory=lambda: Resources(cpu="2", memory="8Gi"))
    train_resources: Resources = field(default_factory=lambda: Resources(cpu="16", memory="128Gi", gpus=8))
    evaluate_resources: Resources = field(default_factory=lambda: Resources(cpu="8", memory="64Gi", gpus=1))
    report_resources: Resources = field(default_factory=lambda: Resources(cpu="1", memory="4Gi"))
    timeouts: StageTimeouts = field(default_factory=StageTimeouts)
    # GPU tasks on a cluster: a memory-backed /dev/shm (the 64 MiB default kills DataLoader workers
    # and NCCL) and a scratch volume for checkpoints and downloads (a generic ephemeral volume:
    # its storage request is scheduled like any PVC; "" uses the cluster's default StorageClass).
    shm_size: str = "16Gi"
    scratch_size: str = "200Gi"
    scratch_storage_class: str = ""

    def validate(self) -> None:
        for name, value in (("artifact_root", self.artifact_root),):
            if value and not value.startswith(("s3://", "file://")):
                raise ConfigError(
                    f"pipeline.{name}: expected s3://bucket/prefix or file:///path, got {value!r}"
                )
        if self.retries < 0:
            raise ConfigError(f"pipeline.retries: must be >= 0, got {self.retries}")
        if self.max_parallel_iterations < 0:
            raise ConfigError(
                f"pipeline.max_parallel_iterations: must be >= 0 (0: no bound), got {self.max_parallel_iterations}"
            )
        if self.train_nodes < 1:
            raise ConfigError(f"pipeline.train_nodes: must be >= 1, got {self.train_nodes}")
        if self.train_nodes > 1 and not self.shared_pvc:
            raise ConfigError(
                "pipeline.shared_pvc: multi-node training (train_nodes > 1) needs a ReadWriteMany "
                "PersistentVolumeClaim that every training pod mounts (ZeRO-3 shards are written there)"
            )
        if not self.shm_size or not self.scratch_size:
            raise ConfigError(
                "pipeline.shm_size and pipeline.scratch_size: give Kubernetes quantities such as 16Gi"
            )
        if self.train_nodes > 1 and self.train_resources.gpus < 1:
            raise ConfigError(
                "pipeline.train_resources.gpus: multi-node training needs at least one GPU per node"
            )

    def training_processes(self) -> int:
        """Training processes of one GRPO/SFT run: one per GPU on every node (one without GPUs)."""
        return max(1, self.train_resources.gpus) * self.train_nodes

    def timeout_s(self, stage: str) -> int:
        """The timeout of a stage (``grpo`` and ``sft`` are ``train``), in seconds; 0: none."""
        return getattr(self.timeouts, "train" if stage in ("grpo", "sft") else stage)


@dataclass
class ExperimentConfig:
    """Every stage's configuration; each stage function takes its own section."""

    experiment: ExperimentInfo = field(default_factory=ExperimentInfo)
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def to_json(self) -> str:
        """The whole config as canonical one-line JSON: what components receive (a multi-line
        string would break the comment header of kfp's compiled YAML), stable for caching."""
        return json.dumps(to_dict(self), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: identifies the config in MLflow tags and regressions."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def with_shots(self, shots: int) -> ExperimentConfig:
        """The config of one iteration of the shot sweep (its ``shot_overrides`` applied)."""
        data = to_dict(self)
        data["dataset"]["shots"] = shots
        data["experiment"]["shots"] = []
        overrides = data["experiment"].pop("shot_overrides").get(str(shots), [])
        return from_dict(ExperimentConfig, _apply_overrides(data, overrides), source=f"shots {shots}")

    def with_seed(self, seed: int) -> ExperimentConfig:
        """This config trained with ``seed`` (RFT and SFT), as one repeat of ``experiment.seeds``."""
        data = to_dict(self)
        data["grpo"]["seed"] = data["sft"]["seed"] = seed
        data["experiment"]["seeds"] = [seed]  # one repeat: its artifacts go under a seed-specific prefix
        return from_dict(ExperimentConfig, data)


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """An experiment YAML plus ``section.key=value`` overrides, validated before anything runs."""
    return from_dict(ExperimentConfig, _apply_overrides(read_yaml(path), overrides), source=str(path))


def _apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {key} is not a section")
        node[keys[-1]] = value
    return data


def experiment_from_json(text: str, source: str = "config") -> ExperimentConfig:
    """The inverse of :meth:`ExperimentConfig.to_json` (components receive the config as text)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections")
    return from_dict(ExperimentConfig, data, source=source)
