"""Multi-node GRPO/SFT training as a Kubeflow Training Operator PyTorchJob (``kubeflow.org/v1``).

When a config asks for more than one node, the training stage does not train in its own pod: it
creates a PyTorchJob with one ``Master`` and ``nodes - 1`` ``Worker`` replicas, each a pod with
``gpus_per_node`` GPUs, and waits for it (:func:`run_pytorchjob`). Every pod runs the launcher a
single node uses, ``torch.distributed.run``, with the node's rank and the master's address::

    python -m torch.distributed.run --nnodes N --nproc_per_node G --node_rank $(PET_NODE_RANK)
        --master_addr $(MASTER_ADDR) --master_port $(MASTER_PORT)
        -m vrft.cli train METHOD CONFIG --dataset /data/dataset --output-dir /shared/...
        [--tracking-run-id ID] [key=value ...]

The training operator injects ``MASTER_ADDR``/``MASTER_PORT`` (the master pod's service) and
``PET_NODE_RANK`` (0 on the master, 1.. on workers) into each pod, and Kubernetes expands the
``$(VAR)`` references in the command from them; no shell is involved. The stage's own DeepSpeed
file (``grpo.deepspeed: zero3``, ``sft.deepspeed: zero2``) reaches every process through the
trainer arguments, as on one node. With the stage's MLflow run id (``--tracking-run-id``) the
processes log into that one run, and only global rank 0 writes to it.

Data: when ``dataset`` is an artifact URI (``s3://`` or ``file://``, what the dataset stage wrote),
an init container downloads and verifies it (:func:`vrft.storage.download_dir`, SHA-256 manifest)
into a volume of each pod; an absolute path is used as it is. Outputs: ZeRO-3 checkpoints
are written shard by shard from every rank into one directory, so ``output_dir`` must lie on a
ReadWriteMany volume (``shared_pvc``: NFS, CephFS, EFS, Filestore ...) mounted in every pod, from
which the training stage uploads the final model; with ``checkpoint_uri`` rank 0 also uploads each
checkpoint there (:mod:`vrft.train.remote_checkpoints`). The pods read the same Secrets and endpoint
ConfigMap as the pipeline's pods (:func:`vrft.components.cluster.secret_env_spec`), run as the
pipeline's service account on GPU nodes, as uid 1000 on a read-only root file system (``/tmp``,
caches and a memory-backed ``/dev/shm`` are volumes).

The job belongs to one pipeline task: created again by a retried task it is adopted (same spec,
not failed) or replaced (:func:`create_or_adopt`); the launcher deletes it when its wait times out
or the task is stopped, so that no job keeps its GPUs after the run is gone.
"""

from __future__ import annotations

import hashlib
import json
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
from vrft.components.resources import CACHE_ENV, POD_USER, SCRATCH_MOUNT, requests_for
from vrft.train.checkpoints import CHECKPOINT_URI_ENV

API_GROUP, API_VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
CONTAINER_NAME = "pytorch"
"""The training operator finds the training container by this name."""
PORT_NAME, DEFAULT_PORT = "pytorchjob-port", 23456
SPEC_ANNOTATION = "vrft.dev/spec-sha256"
"""The SHA-256 of the job's spec: a retried task adopts a job only if it would create the same one."""
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
    #: The stage's MLflow run (and its tracking URI): every rank logs into it, rank 0 writes.
    tracking_run_id: str = ""
    tracking_uri: str = ""
    #: Where rank 0 uploads each checkpoint (empty: checkpoints stay on the shared volume only).
    checkpoint_uri: str = ""
    scratch_size: str = "100Gi"

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
    """The container command: ``torch.distributed.run`` across ``job.nodes`` nodes, as on one node."""
    from vrft.train.launch import train_module_args

    return [
        "python", "-m", "torch.distributed.run",
        "--nnodes", str(job.nodes),
        "--nproc_per_node", str(job.gpus_per_node),
        "--node_rank", "$(PET_NODE_RANK)",
        "--master_addr", "$(MASTER_ADDR)",
        "--master_port", "$(MASTER_PORT)",
        *train_module_args(
            job.method,
            job.config,
            job.dataset_path,
            job.output_dir,
            overrides=job.overrides,
            tracking_run_id=job.tracking_run_id,
        ),
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
    spec = {
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
    }
    metadata["annotations"] = {SPEC_ANNOTATION: spec_digest(spec)}
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": spec,
    }


def spec_digest(spec: Mapping[str, Any]) -> str:
    """SHA-256 of a job spec's canonical JSON."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
    """Create (or adopt, :func:`create_or_adopt`) the PyTorchJob and wait until it succeeds; return
    its name.

    ``api`` is a ``kubernetes.client.CustomObjectsApi`` (by default one from the in-cluster service
    account, else the local kubeconfig). A ``Failed`` condition raises :class:`PyTorchJobError` with
    the operator's message. The job is deleted before the timeout's error is raised, and when the
    wait is interrupted (the stage's pod gets SIGTERM when the run is terminated), so that its pods
    free their GPUs instead of running on, unobserved, until the job's own deadline.
    """
    if api is None:
        api = _custom_objects_api()
    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"].get("namespace") or _current_namespace()
    create_or_adopt(api, manifest, namespace, poll_s=poll_s, sleep=sleep)
    waited = 0.0
    try:
        while True:
            conditions = _conditions(
                api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
            )
            if "Succeeded" in conditions:
                return name
            if "Failed" in conditions:
                message = (
                    conditions["Failed"].get("message")
                    or conditions["Failed"].get("reason")
                    or "no reason given"
                )
                raise PyTorchJobError(f"PyTorchJob {namespace}/{name} failed: {message}")
            if timeout_s and waited >= timeout_s:
                delete_job(api, namespace, name)
                raise PyTorchJobError(
                    f"PyTorchJob {namespace}/{name} did not finish within {timeout_s:g} s; deleted it"
                )
            sleep(poll_s)
            waited += poll_s
    except (KeyboardInterrupt, SystemExit):
        delete_job(api, namespace, name)
        raise


def create_or_adopt(
    api: Any,
    manifest: Mapping[str, Any],
    namespace: str,
    *,
    poll_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    delete_timeout_s: float = 600.0,
) -> str:
    """Create the job; if one of its name exists (HTTP 409: an earlier attempt of the same task),
    adopt it when it has the same spec and has not failed (``"adopted"``: taking over its owner
    reference), else delete it, wait until it is gone and create ours (``"replaced"``).
    Returns ``"created"``, ``"adopted"`` or ``"replaced"``."""
    from kubernetes.client.rest import ApiException

    name = manifest["metadata"]["name"]
    try:
        api.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, dict(manifest))
        return "created"
    except ApiException as exc:
        if exc.status != 409:
            raise
    existing = api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
    ours = manifest["metadata"].get("annotations", {}).get(SPEC_ANNOTATION)
    theirs = (existing.get("metadata") or {}).get("annotations", {}).get(SPEC_ANNOTATION)
    if ours and ours == theirs and "Failed" not in _conditions(existing):
        owners = manifest["metadata"].get("ownerReferences")
        if owners and (existing.get("metadata") or {}).get("ownerReferences") != owners:
            api.patch_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, name, {"metadata": {"ownerReferences": owners}}
            )
        return "adopted"
    delete_job(api, namespace, name)
    waited = 0.0
    while True:
        try:
            api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                break
            raise
        if waited >= delete_timeout_s:
            raise PyTorchJobError(
                f"PyTorchJob {namespace}/{name} of an earlier attempt was not deleted within {delete_timeout_s:g} s"
            )
        sleep(poll_s)
        waited += poll_s
    api.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, dict(manifest))
    return "replaced"


def delete_job(api: Any, namespace: str, name: str) -> None:
    """Delete a job and (foreground) its pods; one that is already gone is not an error."""
    from kubernetes.client.rest import ApiException

    try:
        api.delete_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, name, propagation_policy="Foreground"
        )
    except ApiException as exc:
        if exc.status != 404:
            raise


def _conditions(job: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    status = job.get("status") or {}
    return {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}


def _labels(job: MultiNodeTraining) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "vrft",
        "vrft.dev/stage": job.method,
        "vrft.dev/job": job.name,
        CLIENT_POD_LABEL[0]: CLIENT_POD_LABEL[1],
    }  # admitted to S3 and MLflow (k8s NetworkPolicies)


def _pod_template(job: MultiNodeTraining) -> dict[str, Any]:
    secrets = [
        {"name": env_var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for secret, mapping in secret_env_spec(job.method).items()
        for key, env_var in mapping.items()
    ]
    # The root file system is read-only: temporary files, caches and home go to volumes.
    extra = {"HOME": "/tmp", "PYTHONUNBUFFERED": "1", **CACHE_ENV}
    if job.tracking_uri:  # the stage's tracking server, over the ConfigMap's default
        extra["MLFLOW_TRACKING_URI"] = job.tracking_uri
    if job.checkpoint_uri:
        extra[CHECKPOINT_URI_ENV] = job.checkpoint_uri
    env = secrets + [{"name": k, "value": v} for k, v in extra.items()]
    env_from = [{"configMapRef": {"name": ENDPOINTS_CONFIG_MAP}}]
    security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": POD_USER,
        "runAsGroup": POD_USER,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = [
        {"name": "shared", "mountPath": job.shared_mount},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "scratch", "mountPath": SCRATCH_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    cpu_request, memory_request = requests_for(job.cpu, job.memory)
    container = {
        "name": CONTAINER_NAME,
        "image": job.image,
        "imagePullPolicy": "IfNotPresent",
        "command": launch_command(job),
        "ports": [{"name": PORT_NAME, "containerPort": job.port}],
        "env": env,
        "envFrom": env_from,
        "resources": {
            "requests": {"cpu": cpu_request, "memory": memory_request, GPU_RESOURCE: str(job.gpus_per_node)},
            "limits": {"cpu": job.cpu, "memory": job.memory, GPU_RESOURCE: str(job.gpus_per_node)},
        },
        "volumeMounts": mounts,
        "securityContext": security,
    }
    volumes: list[dict[str, Any]] = [
        {"name": "shared", "persistentVolumeClaim": {"claimName": job.shared_pvc}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": job.shm_size}},
        {"name": "scratch", "emptyDir": {"sizeLimit": job.scratch_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}},
    ]
    spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": POD_USER,
            "runAsGroup": POD_USER,
            "fsGroup": POD_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,  # the training processes never call the Kubernetes API
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
                "env": secrets + [{"name": "HOME", "value": "/tmp"}],
                "envFrom": env_from,
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
                "volumeMounts": [dataset, {"name": "tmp", "mountPath": "/tmp"}],
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
