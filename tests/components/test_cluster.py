"""What the images, the DAG and the manifests agree on: stage images, secrets per stage."""

from __future__ import annotations

import doctest

import pytest

from vrft.components import cluster
from vrft.components.cluster import image_refs, secret_env_spec

pytestmark = pytest.mark.timeout(60)


def test_image_refs_put_gpu_stages_on_the_cuda_image() -> None:
    refs = image_refs("registry.example.com/ml/", "0.1.0")
    assert refs == {
        "dataset": "registry.example.com/ml/vrft-cpu:0.1.0",
        "grpo": "registry.example.com/ml/vrft:0.1.0",
        "sft": "registry.example.com/ml/vrft:0.1.0",
        "evaluate": "registry.example.com/ml/vrft:0.1.0",
        "report": "registry.example.com/ml/vrft-cpu:0.1.0",
    }
    for registry, tag in (("", "0.1.0"), ("r", "latest"), ("r", "a:b")):
        with pytest.raises(ValueError):
            image_refs(registry, tag)


def test_the_webhook_secret_reaches_only_the_report_stage() -> None:
    assert cluster.NOTIFY_SECRET in secret_env_spec("report")
    assert cluster.NOTIFY_SECRET not in secret_env_spec("grpo")
    assert set(secret_env_spec()) == {
        cluster.S3_SECRET,
        cluster.MLFLOW_SECRET,
        cluster.NOTIFY_SECRET,
    }
    with pytest.raises(ValueError, match="unknown stage"):
        secret_env_spec("train")


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(cluster).failed == 0
