"""The local runner's stage cache: reuse a task's outputs from an earlier run when nothing it
depends on changed, and only while those outputs are intact.

A task's **cache key** is the SHA-256 of what decides its result:

* its stage and parameters (the stage's own view of the config and the sweep iteration, see
  :mod:`vrft.pipelines.plan`);
* the manifest SHA-256 of every upstream artifact it reads (an upstream task that ran again and
  wrote other bytes changes it; one that was reused does not);
* the code identity: a local "image" is the installed code and its dependencies
  (:func:`code_identity`: vrft's installed files and every installed distribution's version); with
  the docker runner it is the image's id (its digest), so a new image under the same tag counts.

A cached entry (``<key>.json``: the run that produced it and its outputs' URIs and manifest hashes)
is used only if every output artifact is still in the store and verifies against its manifest
(every object's size and SHA-256): a damaged or missing artifact makes the task run again, and the
entry is replaced by the new result. Tasks the plan marks not cacheable (collect, report) always
run. The cache is one per MLflow store (:func:`stage_cache_root`), so a deleted and recreated
``mlflow.db`` starts cold and every stage logs again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrft.io import atomic_write_text
from vrft.pipelines.plan import Task
from vrft.storage import ArtifactStore
from vrft.tracking import Tracker

CACHE_FORMAT = "vrft.stage-cache/1"


def stage_cache_root(state_dir: Path, tracker: Tracker) -> Path:
    """The stage cache of this MLflow store: a cached stage's MLflow run lives in the store it ran
    against, so another store (e.g. a deleted and recreated ``mlflow.db``) starts cold."""
    return Path(state_dir) / "stage-cache" / tracker.store_identity()


def code_identity() -> str:
    """The installed code: every file of the installed ``vrft`` packages (sources, the shipped
    model, the default config) and the name and version of every installed distribution."""
    import vrft
    import vrft.components
    import vrft.pipelines

    digest = hashlib.sha256()
    for package in (vrft, vrft.components, vrft.pipelines):
        for base in package.__path__:
            root = Path(base)
            for path in sorted(root.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    digest.update(f"{package.__name__}/{path.relative_to(root).as_posix()}\0".encode())
                    digest.update(hashlib.sha256(path.read_bytes()).digest())
    versions = sorted(
        f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in importlib.metadata.distributions()
    )
    digest.update("\n".join(versions).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheHit:
    """A reusable result: the run that produced it and its outputs' metadata."""

    run_id: str
    outputs: dict[str, dict[str, Any]]


class StageCache:
    """Cache entries under ``root``, keyed on :meth:`key`; see the module docstring."""

    def __init__(self, root: Path, code: str) -> None:
        self.root = Path(root)
        self.code = code

    def key(self, task: Task, inputs: Mapping[str, Mapping[str, Any]]) -> str:
        """What decides ``task``'s result, hashed: its stage, parameters, inputs' manifest hashes, the code."""
        material = {
            "format": CACHE_FORMAT,
            "stage": task.stage,
            "params": dict(task.params),
            "inputs": {name: _input_identity(meta) for name, meta in sorted(inputs.items())},
            "code": self.code,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def lookup(self, key: str) -> tuple[CacheHit | None, str]:
        """The cached result for ``key`` if all its artifacts are intact; else ``None`` and why not
        ("" when there is no entry)."""
        path = self.root / f"{key}.json"
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            hit = CacheHit(run_id=str(entry["run_id"]), outputs=dict(entry["outputs"]))
        except FileNotFoundError:
            return None, ""
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return None, f"unreadable cache entry {path} ({type(exc).__name__})"
        for name, meta in hit.outputs.items():
            uri, manifest = meta.get("uri"), meta.get("manifest_sha256")
            if not uri or not manifest:
                return None, f"cached output {name!r} names no artifact"
            try:
                ArtifactStore.from_uri(uri).verify("", manifest_sha256=manifest)
            except Exception as exc:  # missing, damaged, unreadable: whatever it is, the task runs again
                return None, f"cached {name} is not intact: {exc}"
        return hit, ""

    def record(self, key: str, task: Task, run_id: str, outputs: Mapping[str, Mapping[str, Any]]) -> None:
        """Remember ``task``'s outputs from run ``run_id`` under ``key``."""
        self.root.mkdir(parents=True, exist_ok=True)
        entry = {"format": CACHE_FORMAT, "task": task.id, "run_id": run_id, "outputs": dict(outputs)}
        atomic_write_text(self.root / f"{key}.json", json.dumps(entry, indent=1, sort_keys=True) + "\n")


def _input_identity(metadata: Mapping[str, Any]) -> Any:
    """An artifact is its manifest's hash; anything else (a collected list) its whole metadata."""
    return metadata.get("manifest_sha256") or json.loads(json.dumps(metadata, sort_keys=True))
