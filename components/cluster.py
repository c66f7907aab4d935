"""What the stage images, the compiled DAG, the training launcher and the cluster manifests agree on.

The one place that names the stage images (:func:`image_refs`), the Kubernetes Secrets and ConfigMap
that the pipeline's pods read as environment variables (:func:`secret_env_spec`,
:func:`config_map_env_spec`), the service account, the pod label the NetworkPolicies admit, and the
GPU node selection. ``k8s/`` and ``docker/`` are tested against these. It sits in the components
layer because the training component needs it too (a multi-node training launches a PyTorchJob of
the same image, secrets and nodes); the DAG (:mod:`vrft.pipelines.dag`) and the KFP client read it
from here.

>>> image_refs("registry.example.com/ml", "0.1.0")["grpo"]
'registry.example.com/ml/vrft:0.1.0'
"""

from __future__ import annotations

from collections.abc import Mapping

STAGES: tuple[str, ...] = ("dataset", "grpo", "sft", "evaluate", "report")
"""The pipeline's stages, in DAG order."""
GPU_STAGES: frozenset[str] = frozenset({"grpo", "sft", "evaluate"})
"""Stages that run in the CUDA image on a GPU node; the others run in the CPU image."""
GPU_IMAGE = "vrft"
CPU_IMAGE = "vrft-cpu"

CLIENT_POD_LABEL: tuple[str, str] = ("vrft.dev/client", "true")
"""The pod label the NetworkPolicies of ``k8s/base/network-policies`` admit to S3 and MLflow (with the
pipeline namespace: a label alone admits nobody): on every stage pod of the compiled pipeline and every
PyTorchJob pod."""

PIPELINE_SERVICE_ACCOUNT = "vrft-pipeline"
"""The Kubernetes service account of the pipeline's pods (``k8s/pipeline/rbac``)."""
S3_SECRET = "vrft-s3-credentials"
MLFLOW_SECRET = "vrft-mlflow-credentials"
NOTIFY_SECRET = "vrft-notify"
ENDPOINTS_CONFIG_MAP = "vrft-endpoints"

GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_SELECTOR: Mapping[str, str] = {"nvidia.com/gpu.present": "true"}
"""The label NVIDIA's GPU feature discovery puts on GPU nodes (label a node by hand without it)."""
GPU_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
)
"""Tolerates the taint that keeps non-GPU pods off GPU nodes."""


def image_refs(registry: str, tag: str, digests: Mapping[str, str] | None = None) -> dict[str, str]:
    """The container image of each stage: the CUDA image for GPU stages, the CPU image for the rest.

    ``docker/build.py`` builds exactly these names (``REGISTRY/vrft:TAG``, ``REGISTRY/vrft-cpu:TAG``).
    A moving ``latest`` tag is refused: a compiled pipeline and KFP's cache must name one build.
    ``digests`` (image name -> ``sha256:...``, ``pipeline.image_digests``) pins an image to the build
    pushed under the tag (``REGISTRY/vrft:TAG@sha256:...``): KFP's cache key holds the image string,
    so only a digest makes a build re-pushed under the same tag count as a change.

    >>> image_refs("r.example.com/ml", "0.1.0", {"vrft-cpu": "sha256:" + "0" * 64})["report"][:42]
    'r.example.com/ml/vrft-cpu:0.1.0@sha256:000'
    """
    registry = registry.strip().rstrip("/")
    if not registry:
        raise ValueError("an image registry is required (e.g. ghcr.io/your-org or localhost:5000)")
    if not tag or tag == "latest" or any(c in tag for c in ":/@ "):
        raise ValueError(
            f"image tag {tag!r}: use an immutable tag such as a version or a commit, not 'latest'"
        )
    digests = digests or {}
    refs = {}
    for stage in STAGES:
        name = GPU_IMAGE if stage in GPU_STAGES else CPU_IMAGE
        refs[stage] = f"{registry}/{name}:{tag}" + (f"@{digests[name]}" if digests.get(name) else "")
    return refs


def secret_env_spec(stage: str | None = None) -> dict[str, dict[str, str]]:
    """Secret name -> {secret key: environment variable} for a stage's pod (all stages if ``None``).

    The DAG applies each entry with ``kfp.kubernetes.use_secret_as_env(task, name, mapping)``; the
    templates in ``k8s/base/secrets`` define exactly these keys. S3 credentials are read by boto3
    and MLflow; MLflow credentials log in to the tracking server (basic auth, ``k8s/base/mlflow``); the
    webhook URL of the nightly regression notice (it embeds a token) only reaches the report stage,
    and the task that collects one iteration's evaluation URIs for it (``collect``) gets none.
    """
    if stage == "collect":  # only passes its evaluations' URIs on: reads no store, logs no run
        return {}
    if stage is not None and stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} (known: {', '.join(STAGES)}, collect)")
    spec = {
        S3_SECRET: {
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
        MLFLOW_SECRET: {
            "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
        },
    }
    if stage in (None, "report"):
        spec[NOTIFY_SECRET] = {"VRFT_WEBHOOK_URL": "VRFT_WEBHOOK_URL"}
    return spec


def config_map_env_spec() -> dict[str, dict[str, str]]:
    """ConfigMap name -> {key: environment variable}: the in-cluster S3 and MLflow endpoints.

    Applied with ``kfp.kubernetes.use_config_map_as_env``; boto3 reads ``AWS_ENDPOINT_URL``, MLflow
    reads ``MLFLOW_TRACKING_URI`` and ``MLFLOW_S3_ENDPOINT_URL`` (``k8s/base/endpoints``).
    """
    keys = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL")
    return {ENDPOINTS_CONFIG_MAP: {key: key for key in keys}}
