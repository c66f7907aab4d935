"""Multi-node GRPO/SFT training as a Kubeflow Training Operator PyTorchJob (``kubeflow.org/v1``).

When a config asks for more than one node, the training stage does not train in its own pod: it
creates a PyTorchJob with one ``Master`` and ``nodes - 1`` ``Worker`` replicas, each a pod with
``gpus_per_node`` GPUs, and waits for it (:func:`run_pytorchjob`). Every pod runs::

    accelerate launch --num_machines N --num_processes N*G --machine_rank $(PET_NODE_RANK)
        --main_process_ip $(MASTER_ADDR) --main_process_port $(MASTER_PORT)
        --use_deepspeed --deepspeed_config_file configs/deepspeed/zero3.json
        --deepspeed_multinode_launcher standard --same_network --rdzv_backend static
        -m vrft.cli train grpo CONFIG --dataset /data/dataset --output-dir /shared/... [key=value ...]

The training operator injects ``MASTER_ADDR``/``MASTER_PORT`` (the master pod's service) and
``PET_NODE_RANK`` (0 on the master, 1.. on workers) into each pod, and Kubernetes expands the
``$(VAR)`` references in the command from them; no shell is involved. DeepSpeed's ``standard``
multi-node launcher starts the local processes itself (no pdsh/ssh between pods); transformers'
Trainer picks the ZeRO config up from accelerate.

Data: when ``dataset`` is an artifact URI (``s3://`` or ``file://``, what the dataset stage wrote),
an init container downloads and verifies it (:func:`vrft.storage.download_dir`, SHA-256 manifest)
into a scratch volume of each pod; an absolute path is used as it is. Outputs: ZeRO-3 checkpoints
are written shard by shard from every rank into one directory, so ``output_dir`` must lie on a
ReadWriteMany volume (``shared_pvc``: NFS, CephFS, EFS, Filestore ...) mounted in every pod, from
which the training stage uploads the final model. The pods read the same Secrets and endpoint
ConfigMap as the pipeline's pods (:func:`vrft.components.cluster.secret_env_spec`), run as the
pipeline's service account on GPU nodes, and get a memory-backed ``/dev/shm`` (NCCL needs more than
the container default of 64 MiB).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from vrft.components.cluster import (
    CLIENT_POD_LABEL,
    ENDPOINTS_CONFIG_MAP,
    GPU_NODE_SELECTOR,
    GPU_RESOURCE,
    GPU_TOLERATIONS,
    PIPELINE_SERVICE_ACCOUNT,
    secret_env_spec,
)

API_GROUP, API_VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
CONTAINER_NAME = "pytorch"
"""The training operator finds the training container by this name."""
PORT_NAME, DEFAULT_PORT = "pytorchjob-port", 23456
DEFAULT_DEEPSPEED_CONFIG = "configs/deepspeed/zero3.json"
METHODS = ("grpo", "sft")
DATA_MOUNT = "/data"
DATASET_DIR = f"{DATA_MOUNT}/dataset"
"""The download lands in a new directory beside its temporary sibling, both on the scratch volume."""
FETCH_SCRIPT = (
    "import sys; from vrft.storage import download_dir; "
    "print(download_dir(sys.argv[1], sys.argv[2], manifest_sha256=sys.argv[3] if len(sys.argv) > 3 else None))"
)
POD_NAME_ENV, POD_UID_ENV = "VRFT_POD_NAME", "VRFT_POD_UID"
"""The launching pod's name and UID (downward API, set by the DAG): the job's owner."""
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAX_NAME = 40  # pod names add "-worker-NN" and must stay valid DNS labels


class PyTorchJobError(RuntimeError):
    """The PyTorchJob failed, or did not finish in time."""


@dataclass(frozen=True)
class MultiNodeTraining:
    """What a multi-node training job needs; see the module docstring for how it runs.

    ``config`` is a path in the pod: an experiment YAML of the image's ``configs/``, or the run's
    resolved config written to the shared volume. ``dataset`` is the dataset stage's artifact URI or
    an absolute path on the shared volume; ``output_dir`` must be on the shared volume.
    """

    name: str
    method: str
    config: str
    image: str
    nodes: int
    gpus_per_node: int
    dataset: str
    shared_pvc: str
    output_dir: str
    overrides: tuple[str, ...] = ()
    namespace: str | None = None
    deepspeed_config: str = DEFAULT_DEEPSPEED_CONFIG
    shared_mount: str = "/shared"
    cpu: str = "8"
    memory: str = "64Gi"
    shm_size: str = "16Gi"
    service_account: str | None = PIPELINE_SERVICE_ACCOUNT
    port: int = DEFAULT_PORT
    #: The SHA-256 the dataset stage recorded for its manifest; the init container checks it.
    dataset_manifest_sha256: str = ""
    #: The job's ``runPolicy.activeDeadlineSeconds`` (0: none): the operator stops it after that.
    active_deadline_s: int = 0
    #: The pod that launched the job (name, UID): Kubernetes deletes the job when that pod goes.
    owner_pod: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or len(self.name) > _MAX_NAME:
            raise ValueError(
                f"job name {self.name!r}: lower-case letters, digits and '-', starting with a letter, "
                f"at most {_MAX_NAME} characters"
            )
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}: expected one of {', '.join(METHODS)}")
        if self.nodes < 2:
            raise ValueError(
                f"nodes={self.nodes}: a PyTorchJob is for 2 or more nodes; one node trains in the stage's pod"
            )
        if self.gpus_per_node < 1:
            raise ValueError(
                f"gpus_per_node={self.gpus_per_node}: multi-node training needs at least one GPU per node"
            )
        if not self.output_dir.startswith(self.shared_mount.rstrip("/") + "/"):
            raise ValueError(
                f"output_dir {self.output_dir!r} must lie on the shared volume ({self.shared_mount}/...): "
                "every rank writes its checkpoint shards there"
            )
        if "://" not in self.dataset and not self.dataset.startswith("/"):
            raise ValueError(
                f"dataset {self.dataset!r}: an s3:// or file:// artifact URI, or an absolute path"
            )

    @property
    def dataset_path(self) -> str:
        """Where the training command reads the dataset in the pod."""
        return DATASET_DIR if "://" in self.dataset else self.dataset


def job_name(method: str, run_id: str, iteration: str) -> str:
    """A PyTorchJob name unique per pipeline run, sweep iteration and method (a valid DNS label).

    >>> job_name("grpo", "3f1c2a9e-7b8d-4e5f-9a0b-1c2d3e4f5a6b", "shots-4")
    'vrft-grpo-shots-4-...'
    """
    import hashlib

    digest = hashlib.sha256(f"{run_id}/{iteration}".encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9-]+", "-", iteration.lower()).strip("-")
    head = f"vrft-{method}-{slug}"[: _MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


def owner_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The launching pod's (name, UID) from the downward-API variables, or None outside a pod."""
    import os

    environ = os.environ if environ is None else environ
    name, uid = environ.get(POD_NAME_ENV, ""), environ.get(POD_UID_ENV, "")
    return (name, uid) if name and uid else None


def launch_command(job: MultiNodeTraining) -> list[str]:
    """The container command: ``accelerate launch`` with DeepSpeed across ``job.nodes`` nodes."""
    return [
        "accelerate",
        "launch",
        "--num_machines", str(job.nodes),
        "--num_processes", str(job.nodes * job.gpus_per_node),
        "--machine_rank", "$(PET_NODE_RANK)",
        "--main_process_ip", "$(MASTER_ADDR)",
        "--main_process_port", "$(MASTER_PORT)",
        "--use_deepspeed",
        "--deepspeed_config_file", job.deepspeed_config,
        "--deepspeed_multinode_launcher", "standard",
        "--same_network",
        "--rdzv_backend", "static",
        "-m", "vrft.cli",
        "train", job.method, job.config,
        "--dataset", job.dataset_path,
        "--output-dir", job.output_dir,
        *job.overrides,
    ]  # fmt: skip


def fetch_dataset_command(uri: str, target: str = DATASET_DIR, manifest_sha256: str = "") -> list[str]:
    """The init container command: download and verify the dataset artifact into ``target``
    (and its manifest against ``manifest_sha256`` when given)."""
    return ["python", "-c", FETCH_SCRIPT, uri, target, *([manifest_sha256] if manifest_sha256 else [])]


def pytorchjob_manifest(job: MultiNodeTraining) -> dict[str, Any]:
    """The PyTorchJob resource for ``job``: one Master and ``nodes - 1`` Workers, same pod template."""
    metadata: dict[str, Any] = {"name": job.name, "labels": _labels(job)}
    if job.namespace:
        metadata["namespace"] = job.namespace
    if job.owner_pod:
        name, uid = job.owner_pod
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "blockOwnerDeletion": False}
        ]
    run_policy: dict[str, Any] = {
        "backoffLimit": 0,
        "cleanPodPolicy": "Running",
        "ttlSecondsAfterFinished": 86400,
    }
    if job.active_deadline_s:
        run_policy["activeDeadlineSeconds"] = job.active_deadline_s
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {
            "nprocPerNode": str(job.gpus_per_node),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "Never", "template": _pod_template(job)},
                "Worker": {
                    "replicas": job.nodes - 1,
                    "restartPolicy": "Never",
                    "template": _pod_template(job),
                },
            },
        },
    }


def to_yaml(manifest: Mapping[str, Any]) -> str:
    """The manifest as YAML, for ``kubectl apply -f``."""
    return yaml.safe_dump(dict(manifest), sort_keys=False)


def run_pytorchjob(
    manifest: Mapping[str, Any],
    *,
    api: Any | None = None,
    poll_s: float = 30.0,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Create the PyTorchJob and wait until it succeeds; return its name.

    ``api`` is a ``kubernetes.client.CustomObjectsApi`` (by default one from the in-cluster service
    account, else the local kubeconfig). A ``Failed`` condition or the timeout raises
    :class:`PyTorchJobError` with the operator's message; on a timeout the job is deleted first,
    so that its pods free their GPUs.
    """
    if api is None:
        api = _custom_objects_api()
    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"].get("namespace") or _current_namespace()
    api.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, dict(manifest))
    waited = 0.0
    while True:
        status = (
            api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name).get("status")
            or {}
        )
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        if "Succeeded" in conditions:
            return name
        if "Failed" in conditions:
            message = (
                conditions["Failed"].get("message") or conditions["Failed"].get("reason") or "no reason given"
            )
            raise PyTorchJobError(f"PyTorchJob {namespace}/{name} failed: {message}")
        if timeout_s and waited >= timeout_s:
            api.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
            raise PyTorchJobError(
                f"PyTorchJob {namespace}/{name} did not finish within {timeout_s:g} s; deleted it"
            )
        sleep(poll_s)
        waited += poll_s


def _labels(job: MultiNodeTraining) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "vrft",
        "vrft.dev/stage": job.method,
        "vrft.dev/job": job.name,
        CLIENT_POD_LABEL[0]: CLIENT_POD_LABEL[1],
    }  # admitted to S3 and MLflow (k8s NetworkPolicies)


def _pod_template(job: MultiNodeTraining) -> dict[str, Any]:
    env = [
        {"name": env_var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for secret, mapping in secret_env_spec(job.method).items()
        for key, env_var in mapping.items()
    ]
    env_from = [{"configMapRef": {"name": ENDPOINTS_CONFIG_MAP}}]
    security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    shared = {"name": "shared", "mountPath": job.shared_mount}
    container = {
        "name": CONTAINER_NAME,
        "image": job.image,
        "imagePullPolicy": "IfNotPresent",
        "command": launch_command(job),
        "ports": [{"name": PORT_NAME, "containerPort": job.port}],
        "env": env,
        "envFrom": env_from,
        "resources": {
            "requests": {"cpu": job.cpu, "memory": job.memory, GPU_RESOURCE: str(job.gpus_per_node)},
            "limits": {"memory": job.memory, GPU_RESOURCE: str(job.gpus_per_node)},
        },
        "volumeMounts": [shared, {"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": security,
    }
    volumes: list[dict[str, Any]] = [
        {"name": "shared", "persistentVolumeClaim": {"claimName": job.shared_pvc}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": job.shm_size}},
    ]
    spec: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "nodeSelector": dict(GPU_NODE_SELECTOR),
        "tolerations": [dict(t) for t in GPU_TOLERATIONS],
        "volumes": volumes,
    }
    if job.dataset_path == DATASET_DIR:
        dataset = {"name": "dataset", "mountPath": DATA_MOUNT}
        container["volumeMounts"].append(dataset)  # writable: datasets caches map() results beside it
        volumes.append({"name": "dataset", "emptyDir": {}})
        spec["initContainers"] = [
            {
                "name": "fetch-dataset",
                "image": job.image,
                "imagePullPolicy": "IfNotPresent",
                "command": fetch_dataset_command(job.dataset, manifest_sha256=job.dataset_manifest_sha256),
                "env": env,
                "envFrom": env_from,
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
                "volumeMounts": [dataset],
                "securityContext": security,
            }
        ]
    if job.service_account:
        spec["serviceAccountName"] = job.service_account
    return {"metadata": {"labels": _labels(job)}, "spec": spec}


def _custom_objects_api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def _current_namespace() -> str:
    """The pod's own namespace in a cluster, else ``default``."""
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return "default"
