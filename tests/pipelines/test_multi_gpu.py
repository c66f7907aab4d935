"""A training stage with ``gpus: 2`` runs as two processes (torchrun, gloo on the CPU) through the
component's own launch path, and a failing child fails the stage with the child's error."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from vrft.components import dataset as dataset_component
from vrft.components import train as train_components
from vrft.components.runtime import stage_config_json
from vrft.experiment import load_experiment
from vrft.storage import ArtifactStore
from vrft.train.launch import TrainingLaunchError, launch_command, run_distributed

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "configs" / "default.yaml"


def artifact(path: Path) -> SimpleNamespace:
    """What KFP hands a component for an artifact: metadata and a local path."""
    return SimpleNamespace(metadata={}, path=str(path), log_metric=lambda *a: None)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("VRFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VRFT_WORK_DIR", str(tmp_path / "work"))
    return tmp_path


def test_launch_command_starts_one_process_per_gpu():
    command = launch_command("grpo", "/w/experiment.json", "/w/dataset", "/w/out", 8)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc_per_node=8" in command
    assert command[command.index("-m", 3) + 1 :][:4] == ["vrft.cli", "train", "grpo", "/w/experiment.json"]


@pytest.mark.slow
def test_two_process_grpo_stage_trains_both_ranks_and_publishes_one_checkpoint(isolated, capsys):
    store = f"file://{isolated / 'store'}"
    config = load_experiment(
        DEFAULT,
        [
            f"pipeline.artifact_root={store}",
            "pipeline.train_resources.gpus=2",
            "grpo.max_steps=2",
            "grpo.save_steps=1",
        ],
    )
    dataset = artifact(isolated / "kfp" / "dataset")
    dataset_component.run(stage_config_json(config, "dataset"), "run-1", dataset)
    checkpoint = artifact(isolated / "kfp" / "checkpoint")

    uri = train_components.run("grpo", stage_config_json(config, "grpo"), "run-1", dataset, checkpoint)

    out = capsys.readouterr().out
    steps = dict(re.findall(r"grpo \(rank (\d) of 2\): (\d+) steps", out))
    assert steps == {"0": "2", "1": "2"}, out[-3000:]  # both ranks ran the same step budget
    assert uri == f"{store}/runs/run-1/shots-{config.dataset.shots}/grpo/grpo/"
    assert checkpoint.metadata["uri"] == uri and checkpoint.metadata["manifest_sha256"]
    published = ArtifactStore.from_uri(uri).download_dir(
        "", isolated / "published", manifest_sha256=checkpoint.metadata["manifest_sha256"]
    )
    assert (published / "final" / "model.safetensors").is_file()
    assert not list(published.glob("checkpoint-*"))  # resumable states stay on the stage's disk
    record = (published / "config.json").read_text()
    assert '"world_size": 2' in record
    run_dirs = [p for p in (isolated / "store" / "runs" / "run-1").rglob("final") if p.is_dir()]
    assert len(run_dirs) == 1  # one checkpoint published, not one per rank


@pytest.mark.slow
def test_a_failing_child_fails_the_launch_with_its_error(isolated, tmp_path):
    config_path = tmp_path / "experiment.yaml"
    # 3 per device x 1 step x 2 processes = 6 completions: not whole groups of 4.
    config_path.write_text(
        "grpo: {per_device_train_batch_size: 3, num_generations: 4, gradient_accumulation_steps: 1}\n"
    )
    with pytest.raises(
        TrainingLaunchError, match=r"exit status [1-9].*grpo: the generation batch .* 2 processes"
    ):
        run_distributed("grpo", config_path, tmp_path / "dataset", tmp_path / "out", 2)
