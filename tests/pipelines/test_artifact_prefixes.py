"""Per-iteration artifact prefixes and the manifest hash KFP carries (fast: file:// store, no model)."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from vrft.components.runtime import open_stage, stage_config_json
from vrft.experiment import load_experiment
from vrft.pipelines.plan import sweep_configs

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("VRFT_WORK_DIR", str(tmp_path / "work"))
    return tmp_path / "store"


def publish_per_shot(store: Path, tmp_path: Path) -> dict[int, SimpleNamespace]:
    """What each shot iteration's dataset stage publishes: its own directory, its own KFP artifact."""
    config = load_experiment(
        ROOT / "configs" / "default.yaml",
        ["experiment.shots=[1,2]", f"pipeline.artifact_root=file://{store}"],
    )
    artifacts = {}
    for per_shot in sweep_configs(config):
        k = per_shot.dataset.shots
        source = tmp_path / f"built-{k}"
        source.mkdir()
        (source / "rows.json").write_text(json.dumps({"shots": k}))
        artifact = SimpleNamespace(metadata={}, path=str(tmp_path / "kfp" / f"dataset-{k}"))
        with open_stage("dataset", stage_config_json(per_shot, "dataset"), "run-1") as stage:
            stage.publish(source, artifact, "dataset")
        artifacts[k] = artifact
    return artifacts


def test_each_shot_iteration_publishes_under_its_own_prefix(store, tmp_path):
    artifacts = publish_per_shot(store, tmp_path)
    uris = {k: a.metadata["uri"] for k, a in artifacts.items()}
    assert uris == {k: f"file://{store}/runs/run-1/shots-{k}/dataset/dataset/" for k in (1, 2)}
    for k in (1, 2):
        published = Path(uris[k].removeprefix("file://"))
        assert json.loads((published / "rows.json").read_text()) == {"shots": k}  # neither overwritten


def test_a_prefix_replaced_by_another_iterations_artifact_is_refused(store, tmp_path):
    from vrft.storage import ArtifactIntegrityError

    artifacts = publish_per_shot(store, tmp_path)
    one, two = (Path(artifacts[k].metadata["uri"].removeprefix("file://")) for k in (1, 2))
    shutil.rmtree(two)
    shutil.copytree(one, two)  # complete and self-consistent, but shots-1's data
    config = load_experiment(ROOT / "configs" / "default.yaml", [f"pipeline.artifact_root=file://{store}"])
    with open_stage("grpo", stage_config_json(config, "grpo"), "run-1") as stage:
        with pytest.raises(ArtifactIntegrityError, match="manifest is not the one its writer published"):
            stage.fetch(artifacts[2], "dataset")
        assert json.loads((stage.fetch(artifacts[1], "dataset") / "rows.json").read_text()) == {"shots": 1}


def test_an_artifact_without_its_manifest_hash_is_refused(store, tmp_path):
    artifacts = publish_per_shot(store, tmp_path)
    del artifacts[2].metadata["manifest_sha256"]
    config = load_experiment(ROOT / "configs" / "default.yaml", [f"pipeline.artifact_root=file://{store}"])
    with open_stage("grpo", stage_config_json(config, "grpo"), "run-1") as stage:
        with pytest.raises(ValueError, match="carries no manifest_sha256"):
            stage.fetch(artifacts[2], "dataset")
