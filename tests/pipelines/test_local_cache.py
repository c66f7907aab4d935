"""`vrft run`'s stage cache: one per MLflow store, and a damaged artifact's entry is dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
from kfp import dsl
from kfp.local.cache import LocalCache

from vrft.pipelines.local import _failure_hint, invalidate_cached_outputs, stage_cache_root
from vrft.tracking import Tracker

pytestmark = pytest.mark.timeout(300)


def cache_entry(cache_dir: Path, key: str, uri: str) -> Path:
    """A real kfp cache entry whose output artifact points at ``uri`` (as vrft's components publish)."""
    artifact = dsl.Dataset(name="dataset", uri=str(cache_dir / "local" / key), metadata={"uri": uri})
    LocalCache(str(cache_dir)).put(key, {"dataset": artifact})
    return cache_dir / f"{key}.json"


def test_a_damaged_artifact_drops_the_cache_entry_of_the_stage_that_wrote_it(tmp_path: Path) -> None:
    cache = tmp_path / "kfp" / "cache"
    damaged = cache_entry(cache / "store-a", "a" * 64, "s3://vrft/runs/r1/dataset/dataset/")
    other = cache_entry(cache / "store-a", "b" * 64, "s3://vrft/runs/r1/dataset/dataset-2/")
    log = tmp_path / "run.log"
    log.write_text(
        "Traceback ...\nvrft.storage.ArtifactIntegrityError: s3://vrft/runs/r1/dataset/dataset/train/"
        "data-00000-of-00001.arrow: SHA-256 differs from the manifest (recorded 1a, found 2b)\n"
    )
    hint = _failure_hint(log, cache)
    assert "s3://vrft/runs/r1/dataset/dataset/train/data-00000-of-00001.arrow is damaged" in hint
    assert "the next run rebuilds it" in hint
    assert not damaged.exists() and other.exists()
    # Nothing cached points at it any more: the hint says how to start over.
    assert f"delete {cache}" in _failure_hint(log, cache)
    assert invalidate_cached_outputs(cache, "s3://vrft/runs/r1/dataset/dataset-2/x") == [other]


def test_each_mlflow_store_has_its_own_stage_cache(tmp_path: Path) -> None:
    class Store(Tracker):
        def __init__(self, identity: str) -> None:
            super().__init__("sqlite:///unused.db")
            self.identity = identity

        def store_identity(self) -> str:
            return self.identity

    # A deleted and recreated mlflow.db is another store (tests/test_tracking.py): its runs start cold.
    assert stage_cache_root(tmp_path, Store("a")) != stage_cache_root(tmp_path, Store("b"))
    assert stage_cache_root(tmp_path, Store("a")) == tmp_path / "kfp" / "cache" / "a"
