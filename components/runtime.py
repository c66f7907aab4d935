"""What every stage component does around its library function.

A component receives its view of the experiment config as JSON text (:func:`stage_config_json`:
only the sections the stage reads, so that KFP's cache key of a stage changes only when
something the stage depends on changes), the sweep iteration it belongs to (:func:`iteration_key`)
and its upstream artifacts; this module turns those into plain arguments (a parsed config, local
directories verified against their SHA-256 manifests and against the manifest hash KFP recorded)
and publishes the stage's output directory to the artifact store under the prefix
``<artifact_root>/runs/<run_id>/<iteration>/<stage>/<name>/`` (one per run, sweep iteration and
task, so parallel or successive iterations never overwrite each other), recording the URI in the
KFP artifact's metadata and in the stage's MLflow run. It knows nothing of any particular stage.

The run id is not a component input (an input would enter KFP's cache fingerprint and no stage
would ever be reused on a cluster): it arrives as ``$VRFT_RUN_ID``, which the DAG sets from the
pod's ``pipeline/runid`` label on a cluster and ``vrft run`` sets locally.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from vrft.config import to_dict
from vrft.experiment import ExperimentConfig, experiment_from_json
from vrft.io import MANIFEST_NAME, atomic_write_text, sha256_file, write_manifest
from vrft.stage import RUN_ID_ENV, Stage
from vrft.stage import open_stage as open_library_stage
from vrft.storage import STORE_ROOT_ENV, ArtifactStore, run_prefix

__all__ = [
    "STAGE_SECTIONS",
    "StageContext",
    "iteration_key",
    "open_stage",
    "resolve_run_id",
    "stage_config_json",
]

#: The config sections each stage reads (besides the identity every stage tags its MLflow run with).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "dataset": ("dataset",),
    "grpo": ("model", "dataset", "grpo"),
    "sft": ("model", "dataset", "sft"),
    "evaluate": ("model", "dataset", "evaluate"),
}
#: The ``pipeline`` keys each stage reads: where artifacts and runs go; training also launches
#: multi-node jobs from its image, on its nodes.
_PIPELINE_KEYS = ("artifact_root", "tracking_uri")
_TRAIN_PIPELINE_KEYS = (
    *_PIPELINE_KEYS,
    "image_registry",
    "image_tag",
    "train_nodes",
    "shared_pvc",
    "shared_mount",
    "train_resources",
)


def stage_config_json(config: ExperimentConfig, stage: str) -> str:
    """The part of ``config`` that stage ``stage`` reads, as canonical JSON (what its component gets).

    Sections a stage does not read are left out (the component sees their defaults), so changing
    ``grpo.max_steps`` changes the GRPO stage's input and leaves the dataset and base-model
    evaluation inputs, and so their KFP cache keys, as they were. Every view keeps what the MLflow
    tags name: the experiment, the model, the dataset and the paper table.
    """
    if stage not in STAGE_SECTIONS:
        raise ValueError(f"unknown stage {stage!r} (known: {', '.join(STAGE_SECTIONS)})")
    data = to_dict(config)
    keys = _TRAIN_PIPELINE_KEYS if stage in ("grpo", "sft") else _PIPELINE_KEYS
    view: dict[str, Any] = {
        "experiment": data["experiment"],
        "model": {"name_or_path": data["model"]["name_or_path"]},
        "report": {"paper_table": data["report"]["paper_table"]},
        "pipeline": {key: data["pipeline"][key] for key in keys},
    }
    for section in STAGE_SECTIONS[stage]:
        view[section] = data[section]
    if stage == "evaluate":  # the seed a checkpoint was trained with names its evaluation (experiment.seeds)
        view["grpo"], view["sft"] = {"seed": data["grpo"]["seed"]}, {"seed": data["sft"]["seed"]}
    return json.dumps(view, sort_keys=True, separators=(",", ":"))


def iteration_key(config: ExperimentConfig) -> str:
    """The sweep iteration a per-iteration config belongs to: one path segment of its artifact
    prefixes, unique per shot count and training seed (``sweep`` for a whole sweep's config, which
    only the report stage gets).

    >>> from vrft.experiment import load_experiment
    >>> iteration_key(load_experiment("configs/default.yaml", ["dataset.shots=4"]))
    'shots-4'
    >>> iteration_key(load_experiment("configs/default.yaml", ["dataset.shots=4"]).with_seed(7))
    'shots-4-seed-7'
    >>> iteration_key(load_experiment("configs/default.yaml", ["experiment.shots=[1,2]"]))
    'sweep'
    >>> iteration_key(load_experiment("configs/default.yaml", ["experiment.seeds=[1,2]"]))
    'sweep'
    """
    seeds = config.experiment.seeds
    if config.experiment.shots or len(seeds) > 1:
        return "sweep"
    shots = config.dataset.shots
    key = "all-shots" if shots is None else f"shots-{shots}"
    return f"{key}-seed-{seeds[0]}" if seeds else key


@dataclass
class StageContext(Stage):
    """A pipeline stage's :class:`vrft.stage.Stage` plus where it exchanges artifacts: its sweep
    iteration and the store root it publishes under."""

    iteration: str
    artifact_root: str

    def fetch(self, artifact: Any, name: str) -> Path:
        """Download an upstream artifact's directory and verify it against its manifest, and the
        manifest against the SHA-256 its writer recorded in the artifact's metadata.

        A corrupted, truncated, missing or extra object, or a prefix whose manifest was replaced
        (e.g. by another sweep iteration), raises ``ArtifactIntegrityError``.
        """
        metadata = getattr(artifact, "metadata", None) or {}
        uri = metadata.get("uri")
        if not uri:
            raise ValueError(f"stage {self.name}: input {name!r} carries no artifact URI in its metadata")
        manifest_sha = metadata.get("manifest_sha256")
        if not manifest_sha:
            raise ValueError(
                f"stage {self.name}: input {name!r} ({uri}) carries no manifest_sha256 in its metadata"
            )
        target = self.local_dir(name)
        return ArtifactStore.from_uri(uri).download_dir("", target, manifest_sha256=manifest_sha)

    def publish(self, local_dir: Path, artifact: Any, name: str, *, exclude: tuple[str, ...] = ()) -> str:
        """Upload ``local_dir`` (with its manifest) and point the output ``artifact`` at it.

        ``exclude``: glob patterns left out (e.g. resumable ``checkpoint-*`` states, which stay local).
        """
        local_dir = Path(local_dir)
        if exclude:
            # Hard links: a multi-GB checkpoint is not copied to leave out its optimizer states.
            staged = self.local_dir(f"{name}-publish")
            shutil.copytree(
                local_dir, staged, ignore=shutil.ignore_patterns(*exclude), copy_function=_link_or_copy
            )
            local_dir = staged
        if not (local_dir / MANIFEST_NAME).exists():
            write_manifest(local_dir, {"stage": self.name, "name": name})
        uri = self.prefix(name)
        ArtifactStore.from_uri(uri).upload_dir(local_dir, "", overwrite=True)
        manifest_sha = sha256_file(local_dir / MANIFEST_NAME)
        artifact.metadata["uri"] = uri
        artifact.metadata["manifest_sha256"] = manifest_sha
        # The pipeline's artifact itself is a small pointer; the data lives in the store.
        Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            Path(artifact.path), json.dumps({"uri": uri, "manifest_sha256": manifest_sha}) + "\n"
        )
        self.tracker.log_artifact_uri(name, uri)
        return uri

    def prefix(self, name: str) -> str:
        """Where this stage publishes ``name``: unique per run, sweep iteration and stage."""
        return run_prefix(self.artifact_root, self.run_id, self.iteration, self.name, name)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def resolve_run_id(run_id: str = "") -> str:
    """The pipeline run's id: an explicit one (tests, ad-hoc calls), else ``$VRFT_RUN_ID`` (set by the
    DAG from the pod's ``pipeline/runid`` label on a cluster, by ``vrft run`` locally)."""
    return run_id or os.environ.get(RUN_ID_ENV, "") or "adhoc"


@contextlib.contextmanager
def open_stage(
    name: str,
    config_json: str,
    run_id: str = "",
    *,
    iteration: str = "",
    stage: str = "",
    params: Any = None,
    method: str = "",
) -> Iterator[StageContext]:
    """Parse the config, open the stage (:func:`vrft.stage.open_stage`: its MLflow run, FAILED on
    error, and a work dir) and give it the artifact store.

    ``name`` names the artifact prefix and the MLflow run (``grpo``, ``evaluate-sft``); ``stage``
    is the MLflow ``stage`` tag the report filters on (``train``, ``evaluate``), default ``name``.
    ``iteration``: the sweep iteration (:func:`iteration_key`), by default the config's own.
    """
    config = experiment_from_json(config_json, source=f"{name} config")
    artifact_root = config.pipeline.artifact_root or os.environ.get(STORE_ROOT_ENV, "")
    if not artifact_root:
        raise ValueError(f"stage {name}: no artifact store: set pipeline.artifact_root or ${STORE_ROOT_ENV}")
    with open_library_stage(
        name, config, kind=stage or name, method=method, run_id=resolve_run_id(run_id), params=params
    ) as opened:
        yield StageContext(
            **{f.name: getattr(opened, f.name) for f in fields(Stage)},
            iteration=iteration or iteration_key(config),
            artifact_root=artifact_root,
        )
