"""Multi-node training: the training component launches a PyTorchJob and publishes what it wrote."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from vrft.components import pytorchjob
from vrft.config import ConfigError
from vrft.experiment import load_experiment
from vrft.io import write_manifest

ROOT = Path(__file__).resolve().parents[2]
MULTI = ["pipeline.train_nodes=2", "pipeline.shared_pvc=vrft-shared", "pipeline.train_resources.gpus=8"]


class FakeCustomObjects:
    """The two calls run_pytorchjob makes; the job 'runs' by writing a final model into the shared dir."""

    def __init__(self):
        self.created = []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append(body)
        command = body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
            "command"
        ]
        output = Path(command[command.index("--output-dir") + 1])
        (output / "final").mkdir(parents=True)
        (output / "final" / "model.safetensors").write_bytes(b"weights")
        (output / "checkpoint-2").mkdir()
        (output / "checkpoint-2" / "optimizer.pt").write_bytes(b"optimizer state")

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return {"status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}


def test_train_component_runs_a_pytorchjob_and_publishes_the_final_model(tmp_path, monkeypatch):
    from vrft.components import train as train_component

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fake = FakeCustomObjects()
    monkeypatch.setattr(pytorchjob, "_custom_objects_api", lambda: fake)
    monkeypatch.setattr(pytorchjob, "_current_namespace", lambda: "kubeflow")
    monkeypatch.setenv("VRFT_POD_NAME", "vrft-coco-launcher-7")
    monkeypatch.setenv("VRFT_POD_UID", "5a1d-uid")
    config = load_experiment(
        ROOT / "configs" / "default.yaml",
        [
            *MULTI,
            f"pipeline.shared_mount={tmp_path / 'shared'}",
            f"pipeline.artifact_root=file://{tmp_path / 'store'}",
        ],
    )
    dataset_dir = tmp_path / "dataset"
    dataset_dir.mkdir()
    (dataset_dir / "rows.txt").write_text("x")
    write_manifest(dataset_dir, {})
    dataset = SimpleNamespace(metadata={"uri": f"file://{dataset_dir}/", "manifest_sha256": "cd" * 32})
    checkpoint = SimpleNamespace(metadata={}, path=str(tmp_path / "kfp" / "checkpoint"))

    monkeypatch.setenv("VRFT_UPLOAD_CHECKPOINTS", "1")  # as the DAG sets it on a cluster
    iteration = f"shots-{config.dataset.shots}"
    uri = train_component.run("grpo", config.to_json(), "r1", dataset, checkpoint)

    (manifest,) = fake.created
    replicas = manifest["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    container = replicas["Worker"]["template"]["spec"]["containers"][0]
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "8"
    command = container["command"]
    assert (
        command[command.index("--nnodes") + 1] == "2"
        and command[command.index("--nproc_per_node") + 1] == "8"
    )
    assert command[command.index("vrft.cli") + 2] == "grpo"
    config_path = Path(command[command.index("grpo") + 1])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VRFT_CHECKPOINT_URI"] == f"file://{tmp_path / 'store'}/runs/r1/{iteration}/grpo/checkpoints/"
    assert json.loads(config_path.read_text())["pipeline"]["train_nodes"] == 2
    published = Path(uri.removeprefix("file://"))
    assert (published / "final" / "model.safetensors").read_bytes() == b"weights"
    assert not (published / "checkpoint-2").exists()
    assert json.loads(Path(checkpoint.path).read_text())["uri"] == uri
    # Unique per run and shot iteration, owned by the launcher pod, bounded in time.
    assert manifest["metadata"]["name"] == pytorchjob.job_name("grpo", "r1", iteration)
    assert str(config_path.parent) == str(tmp_path / "shared" / "runs" / "r1" / iteration / "grpo")
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "5a1d-uid"
    assert manifest["spec"]["runPolicy"]["activeDeadlineSeconds"] == config.pipeline.timeouts.train
    init = replicas["Master"]["template"]["spec"]["initContainers"][0]
    assert init["command"][-1] == "cd" * 32


def test_multi_node_needs_a_shared_volume_and_gpus():
    with pytest.raises(ConfigError, match="shared_pvc"):
        load_experiment(ROOT / "configs" / "default.yaml", ["pipeline.train_nodes=2"])
    with pytest.raises(ConfigError, match="GPU per node"):
        load_experiment(ROOT / "configs" / "default.yaml", [*MULTI[:2], "pipeline.train_resources.gpus=0"])


def test_compiled_multi_node_dag_mounts_the_volume_on_the_launchers(tmp_path):
    from vrft.pipelines.dag import compile_pipeline

    cluster = [
        "pipeline.artifact_root=s3://lab/vrft",
        "pipeline.image_registry=registry.lab.internal/ml",
        "dataset.shots=16",
    ]  # 16 training processes need 16 prompts per step
    path = compile_pipeline(ROOT / "configs" / "default.yaml", tmp_path / "p.yaml", [*MULTI, *cluster])
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-grpo-stage", "exec-sft-stage"):
        assert executors[name]["pvcMount"][0]["mountPath"] == "/shared"
        container = spec["deploymentSpec"]["executors"][name]["container"]
        assert "accelerator" not in container.get("resources", {})  # the launcher needs no GPU
        env = {e["name"]: e["fieldPath"] for e in executors[name]["fieldPathAsEnv"]}
        assert env["VRFT_POD_NAME"] == "metadata.name" and env["VRFT_POD_UID"] == "metadata.uid"
