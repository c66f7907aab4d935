"""One experiment = one YAML file with a section per stage (torchtune-style recipe config).

>>> cfg = load_experiment("configs/default.yaml", ["grpo.max_steps=3"])
>>> cfg.experiment.name, cfg.grpo.max_steps, cfg.dataset.train.kind
('default', 3, 'shapes_classification')
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from vrft.config import ConfigError, apply_overrides, from_dict, parse_override, read_yaml, to_dict
from vrft.data.config import DatasetConfig
from vrft.evaluate.config import EvaluateConfig
from vrft.models.config import ModelConfig
from vrft.report.config import ReportConfig
from vrft.train.config import GRPOStageConfig, SFTStageConfig


@dataclass
class ExperimentInfo:
    """What the experiment is called (the MLflow experiment and the report's ``config`` tag).

    Parameters:
        name: The experiment's name: the MLflow experiment and the report's ``config`` tag.
        description: The Kubeflow pipeline's description (default: "Visual-RFT vs SFT").
        shots: A sweep over ``dataset.shots``: one pipeline run builds, trains and evaluates each
            shot count, and one report compares them; empty: just ``dataset.shots``.
        seeds: Repeat RFT and SFT with these training seeds (``grpo.seed`` = ``sft.seed`` = each):
            the report shows the mean ± standard deviation over seeds and says when RFT − SFT is
            inside that spread. Empty: once, with ``grpo.seed`` / ``sft.seed`` as configured. The
            few-shot sample (``dataset.seed``) stays the same unless ``seeds_vary_sample``.
        shot_overrides: Overrides for one shot count of the sweep, e.g.
            ``{1: ["grpo.gradient_accumulation_steps=1"]}`` where 1 shot × 8 categories cannot fill
            the 16 prompts of a step on 8 GPUs. They follow the rules of command-line overrides.
        tags: Extra MLflow tags on every run of the experiment.
        paper_mode: Every point where vrft's default differs from the authors' code takes the
            authors' value (``vrft.paper_mode.POINTS``; docs/evaluation.md lists them). Set in every
            paper config.
        keep_ours: Points (``vrft.paper_mode.POINT_NAMES``) that keep vrft's choice under paper mode;
            the report names them.
        seeds_vary_sample: With ``seeds``: also draw a new few-shot sample per seed
            (``dataset.seed`` = the seed), not only a new training seed. The eval split must not
            depend on it (a separate, uncapped eval source).
    """

    name: str = "default"
    description: str = ""
    shots: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    shot_overrides: dict[str, list[str]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    paper_mode: bool = False
    keep_ours: list[str] = field(default_factory=list)
    seeds_vary_sample: bool = False

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
    """Kubernetes resources of one stage (ignored by the local runner).

    Parameters:
        cpu: The pod's CPU limit (a Kubernetes quantity, e.g. ``4`` or ``500m``).
        memory: The pod's memory limit (a Kubernetes quantity, e.g. ``16Gi``).
        gpus: GPUs of the pod (per node for multi-node training).
        accelerator: The GPU resource name; node selection is in ``k8s/``.
        cpu_request: What the scheduler reserves of CPU; empty: 7/8 of ``cpu``.
        memory_request: What the scheduler reserves of memory; empty: 7/8 of ``memory``, so that a
            512Gi limit still fits a 512 GiB node.
    """

    cpu: str = "4"
    memory: str = "16Gi"
    gpus: int = 0
    accelerator: str = "nvidia.com/gpu"
    cpu_request: str = ""
    memory_request: str = ""

    def validate(self) -> None:
        if self.gpus < 0:
            raise ConfigError(f"gpus: must be >= 0, got {self.gpus}")


@dataclass
class StageTimeouts:
    """Seconds each stage's pod may run on a cluster before Kubernetes stops it (0: no limit).

    A hung stage would otherwise hold its GPUs and, with a nightly schedule's ``max_concurrency``
    of 1, block every later run.

    Parameters:
        dataset: Seconds for the dataset stage.
        train: Seconds for each GRPO and SFT training stage.
        evaluate: Seconds for each evaluation.
        report: Seconds for the report stage.
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


AIRFLOW_EXECUTORS = ("local", "docker", "kubernetes")


@dataclass
class AirflowConfig:
    """How the Airflow DAG (``vrft airflow dag``) runs each task and when.

    Parameters:
        executor: ``local``: a process on the Airflow worker (the local runner's task entry point,
            with its stage cache); ``docker``: a container of the CPU image on a Docker engine
            (DockerOperator); ``kubernetes``: a pod with the Kubeflow tasks' cluster settings
            (KubernetesPodOperator).
        schedule: The DAG's schedule: a five-field cron such as ``0 2 * * *`` (nightly at 02:00);
            empty: runs start only when triggered.
        namespace: ``kubernetes``: the namespace of the pods (the pipeline's Secrets and ConfigMap live there).
        kubernetes_conn_id: ``kubernetes``: the Airflow connection to the cluster; empty: in-cluster
            or the worker's kubeconfig.
        docker_url: ``docker``: the engine's URL; empty: ``$DOCKER_HOST`` or the default socket.
        docker_gpus: ``docker``: run the GPU tasks (training, evaluation) in the CUDA image with their
            GPUs (an engine with the NVIDIA container toolkit); false: every task in the CPU image.
    """

    executor: str = "local"
    schedule: str = ""
    namespace: str = "vrft"
    kubernetes_conn_id: str = ""
    docker_url: str = ""
    docker_gpus: bool = False

    def validate(self) -> None:
        if self.executor not in AIRFLOW_EXECUTORS:
            raise ConfigError(
                f"pipeline.airflow.executor: one of {', '.join(AIRFLOW_EXECUTORS)}, got {self.executor!r}"
            )
        if self.schedule and len(self.schedule.split()) != 5:
            raise ConfigError(
                f"pipeline.airflow.schedule: a five-field cron such as '0 2 * * *', got {self.schedule!r}"
            )


@dataclass
class PipelineConfig:
    """Where artifacts and runs go, which images run the stages, and with what resources.

    Parameters:
        artifact_root: Where stages exchange artifacts: ``s3://bucket/prefix`` or
            ``file:///abs/path``; empty: ``vrft run`` uses its local S3.
        tracking_uri: The MLflow tracking URI; empty: ``vrft run`` uses its local store.
        image_registry: The registry of the stage images (``REGISTRY/vrft:TAG``, ``REGISTRY/vrft-cpu:TAG``).
        image_tag: The stage images' tag: an immutable version or commit, never ``latest``.
        image_digests: Image name (``vrft``, ``vrft-cpu``) -> the registry digest (``sha256:...``) of
            the build pushed under ``image_tag``: the compiled pipeline then names each image as
            ``REGISTRY/NAME:TAG@DIGEST``, so a build re-pushed under the same tag is another image
            string and Kubeflow's cache does not reuse results of the old one.
        retries: Kubeflow's retries of the dataset and evaluation stages on a cluster (training has
            its own, ``train_retries``).
        caching: Let Kubeflow reuse the outputs of a stage whose inputs did not change.
        evaluate_base: Evaluate the base model too (``existence_gated`` detection always does: its
            answers are the gate every checkpoint shares).
        max_parallel_iterations: How many sweep iterations (shot counts × seeds) may hold GPUs at
            once on a cluster: iteration i starts after iteration i − k's GPU tasks finished. 1 (the
            default): one iteration at a time, its GRPO, SFT and base evaluation side by side; 0: no
            bound (every iteration at once).
        train_nodes: Training on more than one node runs as a Kubeflow PyTorchJob (DeepSpeed ZeRO-3
            across nodes); ``train_resources.gpus`` is then per node.
        shared_pvc: Multi-node training: a ReadWriteMany PersistentVolumeClaim every training pod
            mounts (ZeRO-3 shards are written there).
        shared_mount: Where ``shared_pvc`` is mounted in the training pods.
        dataset_resources: Resources of the dataset stage.
        train_resources: Resources of each training stage.
        evaluate_resources: Resources of each evaluation.
        report_resources: Resources of the report stage.
        timeouts: Seconds each stage may run on a cluster.
        shm_size: GPU tasks on a cluster: the size of a memory-backed ``/dev/shm`` (the 64 MiB
            default kills DataLoader workers and NCCL).
        scratch_size: GPU tasks on a cluster: a scratch volume for checkpoints and downloads (a
            generic ephemeral volume: its storage request is scheduled like any PVC).
        scratch_storage_class: The scratch volume's StorageClass; empty: the cluster's default.
        dataset_scratch_size: The dataset task's scratch volume (source downloads, caches).
        train_retries: Retries of a GRPO/SFT task on a cluster (a preempted pod): the retry resumes
            from the newest checkpoint the stage uploaded to its iteration's prefix.
        data_pvc: An existing PersistentVolumeClaim with source data, mounted on the dataset task at
            ``data_mount`` (source paths then name files under it); empty: sources come from
            ``s3://`` only.
        data_mount: Where ``data_pvc`` is mounted.
        airflow: The Airflow DAG's executor and schedule (``vrft airflow dag``).
        gpu_memory: GiB of memory per GPU of the training and evaluation tasks: what
            ``vrft preflight`` checks its per-rank memory estimate against (80: an A100/H100 80 GB;
            an H200 has 141).
    """

    artifact_root: str = ""
    tracking_uri: str = ""
    image_registry: str = "ghcr.io/vrft"
    image_tag: str = "0.1.0"
    image_digests: dict[str, str] = field(default_factory=dict)
    retries: int = 1
    caching: bool = True
    evaluate_base: bool = True
    max_parallel_iterations: int = 1
    train_nodes: int = 1
    shared_pvc: str = ""
    shared_mount: str = "/shared"
    dataset_resources: Resources = field(default_factory=lambda: Resources(cpu="2", memory="8Gi"))
    train_resources: Resources = field(default_factory=lambda: Resources(cpu="16", memory="128Gi", gpus=8))
    evaluate_resources: Resources = field(default_factory=lambda: Resources(cpu="8", memory="64Gi", gpus=1))
    report_resources: Resources = field(default_factory=lambda: Resources(cpu="1", memory="4Gi"))
    timeouts: StageTimeouts = field(default_factory=StageTimeouts)
    shm_size: str = "16Gi"
    scratch_size: str = "200Gi"
    scratch_storage_class: str = ""
    dataset_scratch_size: str = "50Gi"
    train_retries: int = 2
    data_pvc: str = ""
    data_mount: str = "/data"
    gpu_memory: float = 80.0
    airflow: AirflowConfig = field(default_factory=AirflowConfig)

    def validate(self) -> None:
        for name, value in (("artifact_root", self.artifact_root),):
            if value and not value.startswith(("s3://", "file://")):
                raise ConfigError(
                    f"pipeline.{name}: expected s3://bucket/prefix or file:///path, got {value!r}"
                )
        for name, digest in self.image_digests.items():
            if name not in ("vrft", "vrft-cpu"):
                raise ConfigError(f"pipeline.image_digests: {name!r} is not one of the images vrft, vrft-cpu")
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", str(digest)):
                raise ConfigError(
                    f"pipeline.image_digests.{name}: expected sha256:<64 hex digits>, got {digest!r}"
                )
        if self.retries < 0:
            raise ConfigError(f"pipeline.retries: must be >= 0, got {self.retries}")
        if self.train_retries < 0:
            raise ConfigError(f"pipeline.train_retries: must be >= 0, got {self.train_retries}")
        if not self.data_mount.startswith("/") or self.data_mount.rstrip("/") in ("", "/tmp", "/scratch"):
            raise ConfigError(
                f"pipeline.data_mount: an absolute path of its own (e.g. /data), got {self.data_mount!r}"
            )
        if not self.gpu_memory > 0:
            raise ConfigError(f"pipeline.gpu_memory: GiB per GPU, must be > 0, got {self.gpu_memory}")
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
    """Every stage's configuration; each stage function takes its own section.

    Parameters:
        experiment: What the experiment is called, and its shot and seed sweeps.
        model: The base checkpoint that GRPO and SFT start from and evaluation compares against.
        dataset: Stage 1: the few-shot dataset.
        grpo: Stage 2: GRPO (RFT).
        sft: Stage 3: the SFT baseline.
        evaluate: Stage 4: evaluation of the base, SFT and RFT checkpoints.
        report: Stage 5: the RFT-vs-SFT report.
        pipeline: Where artifacts and runs go, and the cluster's images and resources.
    """

    experiment: ExperimentInfo = field(default_factory=ExperimentInfo)
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def validate(self) -> None:
        """Paper mode's values (:func:`vrft.paper_mode.apply_paper_mode`), then what no single section
        can check: GRPO's batch arithmetic with the number of processes the
        pipeline's training stage launches (``pipeline.train_resources.gpus`` × ``train_nodes``).

        trl refuses a generation batch that is not whole groups of ``num_generations`` completions
        only when GRPO starts — minutes into a run, after the dataset and the base evaluation; here
        it is refused with the config. Each shot count of a sweep is checked with its own
        ``grpo.*``/``pipeline.*`` shot overrides (only those sections are rebuilt: a stage's config
        view holds defaults in the sections it does not read, which need not make a whole config).
        """
        from vrft.paper_mode import apply_paper_mode
        from vrft.train.config import check_batch_divisibility

        apply_paper_mode(self)
        for shots in self.experiment.shots or [None]:
            overrides = self.experiment.shot_overrides.get(str(shots), []) if shots is not None else []
            where = f"shots {shots}: " if shots is not None else ""
            try:
                grpo = apply_overrides(self.grpo, _section_overrides(overrides, "grpo"))
                pipeline = apply_overrides(self.pipeline, _section_overrides(overrides, "pipeline"))
                check_batch_divisibility(grpo, pipeline.training_processes())
            except ConfigError as exc:
                raise ConfigError(f"{where}{exc}") from None

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
        return from_dict(ExperimentConfig, data, overrides, source=f"shots {shots}", interpolate=False)

    def with_seed(self, seed: int) -> ExperimentConfig:
        """This config trained with ``seed`` (RFT and SFT), as one repeat of ``experiment.seeds``."""
        data = to_dict(self)
        data["grpo"]["seed"] = data["sft"]["seed"] = seed
        if self.experiment.seeds_vary_sample:
            data["dataset"]["seed"] = seed
        data["experiment"]["seeds"] = [seed]  # one repeat: its artifacts go under a seed-specific prefix
        return from_dict(ExperimentConfig, data, interpolate=False)


def _section_overrides(overrides: list[str], section: str) -> list[str]:
    """The ``section.key=value`` overrides of one section, as that section's own ``key=value``."""
    prefix = f"{section}."
    return [text.strip()[len(prefix) :] for text in overrides if text.strip().startswith(prefix)]


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """An experiment YAML plus ``section.key=value`` overrides, validated before anything runs."""
    from vrft.paper_mode import check_paper_data

    config = from_dict(ExperimentConfig, read_yaml(path), overrides, source=str(path))
    try:
        check_paper_data(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


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
    return from_dict(ExperimentConfig, data, source=source, interpolate=False)
