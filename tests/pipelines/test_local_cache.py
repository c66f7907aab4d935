"""`vrft run`'s stage cache: what a task's key depends on, one cache per MLflow store, and a damaged or
missing cached artifact that makes its task run again (fast: file:// store, no model)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vrft.experiment import load_experiment
from vrft.io import MANIFEST_NAME, sha256_file, write_manifest
from vrft.pipelines.local.cache import StageCache, code_identity, stage_cache_root
from vrft.pipelines.plan import build_plan
from vrft.storage import ArtifactStore
from vrft.tracking import Tracker

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]


def published(tmp_path: Path, name: str, content: bytes) -> dict[str, str]:
    """An artifact in a file:// store, as a stage publishes it: its URI and manifest hash."""
    local = tmp_path / "local" / name
    local.mkdir(parents=True)
    (local / "data.bin").write_bytes(content)
    write_manifest(local, {})
    uri = (tmp_path / "store" / name).as_uri() + "/"
    ArtifactStore.from_uri(uri).upload_dir(local, "")
    return {"uri": uri, "manifest_sha256": sha256_file(local / MANIFEST_NAME)}


@pytest.fixture
def plan():
    return build_plan(load_experiment(ROOT / "configs" / "default.yaml"))


def test_the_key_is_stage_parameters_input_manifests_and_code(plan, tmp_path):
    cache = StageCache(tmp_path, code="code-1")
    grpo = plan.task(f"{plan.iterations[0]}/grpo")
    data = {"dataset": {"uri": "s3://b/runs/r1/shots-4/dataset/dataset/", "manifest_sha256": "a" * 64}}
    key = cache.key(grpo, data)
    # Another run's copy of the same bytes (same manifest) is the same input; other bytes are not.
    assert cache.key(grpo, {"dataset": {**data["dataset"], "uri": "s3://b/runs/r2/x/"}}) == key
    assert cache.key(grpo, {"dataset": {**data["dataset"], "manifest_sha256": "b" * 64}}) != key
    assert StageCache(tmp_path, code="code-2").key(grpo, data) != key  # the code changed
    more_steps = build_plan(load_experiment(ROOT / "configs" / "default.yaml", ["grpo.max_steps=9"]))
    assert cache.key(more_steps.task(grpo.id), data) != key
    sft = plan.task(f"{plan.iterations[0]}/sft")
    assert cache.key(sft, data) != key


def test_a_result_is_reused_only_while_its_artifacts_verify(plan, tmp_path):
    task = plan.task(f"{plan.iterations[0]}/dataset")
    cache = StageCache(tmp_path / "cache", code="c")
    key = cache.key(task, {})
    assert cache.lookup(key) == (None, "")
    output = published(tmp_path, "dataset", b"rows" * 100)
    cache.record(key, task, "run-1", {"dataset": output})
    hit, why = cache.lookup(key)
    assert hit is not None and hit.run_id == "run-1" and hit.outputs == {"dataset": output} and why == ""

    stored = tmp_path / "store" / "dataset" / "data.bin"
    stored.write_bytes(b"ROWS" + stored.read_bytes()[4:])  # same size, other bytes
    hit, why = cache.lookup(key)
    assert hit is None and "cached dataset is not intact" in why and "SHA-256 differs" in why

    stored.unlink()
    hit, why = cache.lookup(key)
    assert hit is None and "missing" in why


def test_each_mlflow_store_has_its_own_stage_cache(tmp_path: Path) -> None:
    class Store(Tracker):
        def __init__(self, identity: str) -> None:
            super().__init__("sqlite:///unused.db")
            self.identity = identity

        def store_identity(self) -> str:
            return self.identity

    # A deleted and recreated mlflow.db is another store (tests/test_tracking.py): its runs start cold.
    assert stage_cache_root(tmp_path, Store("a")) != stage_cache_root(tmp_path, Store("b"))
    assert stage_cache_root(tmp_path, Store("a")) == tmp_path / "stage-cache" / "a"


def test_the_code_identity_is_the_installed_code(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    first = code_identity()
    assert first == code_identity() and len(first) == 64
    real = importlib.metadata.distributions

    def one_more_version():
        yield from real()
        yield dataclasses.make_dataclass("D", [("metadata", dict), ("version", str)])({"Name": "x"}, "9")

    monkeypatch.setattr(importlib.metadata, "distributions", one_more_version)
    assert code_identity() != first  # a dependency changed
