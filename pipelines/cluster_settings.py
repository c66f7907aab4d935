"""One description of what a planned task's pod gets on a cluster, whichever scheduler starts it.

The Kubeflow DAG (:mod:`vrft.pipelines.dag`, through kfp-kubernetes) and Airflow's
KubernetesPodOperator (:mod:`vrft.pipelines.airflow`) both build a task's pod from
:func:`pod_settings`: CPU/memory limits and requests, GPUs and their nodes, the pod label the
NetworkPolicies admit, environment (literal values, downward-API fields, Secrets, the endpoints
ConfigMap), the non-root security context, the timeout, retries, ``/dev/shm``, the scratch volume
with the caches on it, the source data volume and, for multi-node training, the shared volume.
Neither backend decides any of these itself; each only translates them into its own API. The one
setting that differs is where the pipeline run's id comes from (KFP's ``pipeline/runid`` pod label,
Airflow's run id), so it is not part of the description.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from vrft.components.cluster import (
    CLIENT_POD_LABEL,
    GPU_NODE_SELECTOR,
    GPU_TOLERATIONS,
    PIPELINE_SERVICE_ACCOUNT,
    config_map_env_spec,
    secret_env_spec,
)
from vrft.components.pytorchjob import POD_NAME_ENV, POD_UID_ENV
from vrft.components.resources import CACHE_ENV, POD_USER, SCRATCH_MOUNT, requests_for
from vrft.experiment import PipelineConfig
from vrft.pipelines.plan import Task
from vrft.stage import IMAGE_ENV, WORK_DIR_ENV

SHM_MOUNT = "/dev/shm"
SCRATCH_VOLUME = "scratch"
SHM_VOLUME = "dshm"
DATA_VOLUME = "data"
SHARED_VOLUME = "shared"
TRAIN_STAGES = ("grpo", "sft")
#: Retries wait this long first, then twice as long each time (KFP's backoff; Airflow's exponential backoff).
RETRY_BACKOFF_S = 60
RETRY_BACKOFF_FACTOR = 2.0


@dataclass(frozen=True)
class Volume:
    """A volume of the pod and where the stage's container mounts it.

    ``kind``: ``memory`` (an emptyDir in RAM of ``size``), ``ephemeral`` (a generic ephemeral volume:
    a PVC of ``size`` in ``storage_class`` that lives and dies with the pod) or ``pvc`` (the existing
    claim ``claim``).
    """

    name: str
    mount_path: str
    kind: Literal["memory", "ephemeral", "pvc"]
    size: str = ""
    storage_class: str = ""
    claim: str = ""


@dataclass(frozen=True)
class PodSettings:
    """Everything a task's pod gets on a cluster; see the module docstring."""

    image: str
    cpu_limit: str
    memory_limit: str
    cpu_request: str
    memory_request: str
    gpus: int
    accelerator: str
    labels: Mapping[str, str]
    env: Mapping[str, str]  # literal values
    field_env: Mapping[str, str]  # variable -> downward-API field path
    secret_env: Mapping[str, Mapping[str, str]]  # Secret -> {key: variable}
    config_map_env: Mapping[str, Mapping[str, str]]  # ConfigMap -> {key: variable}
    run_as_user: int
    run_as_group: int
    run_as_non_root: bool
    timeout_s: int  # 0: no limit
    retries: int
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, str], ...]
    volumes: tuple[Volume, ...] = field(default=())
    service_account: str = PIPELINE_SERVICE_ACCOUNT  # KFP: given when a run is submitted (kfp_client)
    # What KFP's backend (>= 2.16) adds to every pod itself; other schedulers must say so.
    allow_privilege_escalation: bool = False
    drop_capabilities: tuple[str, ...] = ("ALL",)
    seccomp_profile: str = "RuntimeDefault"


def pod_settings(task: Task, pipeline: PipelineConfig, image: str) -> PodSettings:
    """What ``task``'s pod gets on a cluster, running ``image``, under ``pipeline``'s settings."""
    from vrft.components.train import UPLOAD_CHECKPOINTS_ENV

    resources, stage = task.resources, task.stage
    cpu_request, memory_request = requests_for(
        resources.cpu, resources.memory, resources.cpu_request, resources.memory_request
    )
    env = {IMAGE_ENV: image}
    field_env: dict[str, str] = {}
    volumes: list[Volume] = []
    multi_node = pipeline.train_nodes > 1 and stage in TRAIN_STAGES
    if multi_node:
        # The launcher mounts the shared volume its PyTorchJob writes to and names itself the job's owner.
        volumes.append(Volume(SHARED_VOLUME, pipeline.shared_mount, "pvc", claim=pipeline.shared_pvc))
        field_env |= {POD_NAME_ENV: "metadata.name", POD_UID_ENV: "metadata.uid"}
    gpu = bool(resources.gpus)
    if gpu:
        # The container default /dev/shm is 64 MiB: DataLoader workers and NCCL need more.
        volumes.append(Volume(SHM_VOLUME, SHM_MOUNT, "memory", size=pipeline.shm_size))
    if gpu or stage == "dataset":
        # Checkpoints, downloads and caches go to a sized scratch volume, not the container's root fs.
        size = pipeline.dataset_scratch_size if stage == "dataset" else pipeline.scratch_size
        volumes.append(
            Volume(
                SCRATCH_VOLUME,
                SCRATCH_MOUNT,
                "ephemeral",
                size=size,
                storage_class=pipeline.scratch_storage_class,
            )
        )
        env |= {WORK_DIR_ENV: SCRATCH_MOUNT, **CACHE_ENV}
    if stage == "dataset" and pipeline.data_pvc:
        # Read-only by the claim's access mode (ReadOnlyMany): the dataset stage only reads sources.
        volumes.append(Volume(DATA_VOLUME, pipeline.data_mount, "pvc", claim=pipeline.data_pvc))
    if stage in TRAIN_STAGES:
        env[UPLOAD_CHECKPOINTS_ENV] = "1"
    return PodSettings(
        image=image,
        cpu_limit=resources.cpu,
        memory_limit=resources.memory,
        cpu_request=cpu_request,
        memory_request=memory_request,
        gpus=resources.gpus,
        accelerator=resources.accelerator,
        labels=dict([CLIENT_POD_LABEL]),  # admitted to S3 and MLflow (k8s NetworkPolicies)
        env=env,
        field_env=field_env,
        secret_env=secret_env_spec(stage),
        # collect reads no store and logs no run
        config_map_env={} if stage == "collect" else config_map_env_spec(),
        # Non-root as the images' own user.
        run_as_user=POD_USER,
        run_as_group=POD_USER,
        run_as_non_root=True,
        timeout_s=task.timeout_s,
        retries=task.retries,
        node_selector=dict(GPU_NODE_SELECTOR) if gpu else {},
        tolerations=tuple(dict(t) for t in GPU_TOLERATIONS) if gpu else (),
        volumes=tuple(volumes),
    )
