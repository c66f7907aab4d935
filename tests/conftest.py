"""Fixtures shared across the suite: the tiny offline models, built once per session."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from vrft.models.config import ModelConfig
from vrft.models.tiny import build_tiny_model

# Small pixel bounds keep the tiny model at 4-16 vision tokens per image.
TINY_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    path = build_tiny_model(tmp_path_factory.mktemp("models") / "qwen2_vl", family="qwen2_vl")
    return ModelConfig(name_or_path=str(path), **TINY_PIXELS)


@pytest.fixture(scope="session")
def tiny_qwen25(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    path = build_tiny_model(tmp_path_factory.mktemp("models") / "qwen2_5_vl", family="qwen2_5_vl")
    return ModelConfig(name_or_path=str(path), **TINY_PIXELS)


@pytest.fixture(autouse=True)
def _no_client_state_between_tests():
    """Tests start their own S3 servers (each with its own credentials) and MLflow stores in one
    process. boto3's default session caches the first credentials it resolves and MLflow caches its
    S3 clients and the tracking URI it was last given; a real run has one of each, so reset them."""
    yield
    import boto3
    from mlflow.store.artifact import s3_artifact_repo
    from mlflow.tracking._tracking_service import utils as tracking_utils

    boto3.DEFAULT_SESSION = None
    s3_artifact_repo._cached_get_s3_client.cache_clear()
    tracking_utils._tracking_uri = None


@pytest.fixture(scope="session")
def find_tool() -> Callable[[str, str], str]:
    """Locate a command-line tool shipped as a dev wheel (hadolint, kubectl): this interpreter's
    environment first, then PATH. A missing tool fails the test; it is never skipped."""

    def find(name: str, package: str) -> str:
        search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        tool = shutil.which(name, path=search)
        if tool is None:
            pytest.fail(f"{name} is not installed: pip install {package} (it is part of the dev dependencies)")
        return tool

    return find
