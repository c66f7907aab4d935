"""The compiled DAG: loads back with kfp, GPUs on training/evaluation, images and secrets wired."""

from pathlib import Path

import pytest
import yaml

from vrft.experiment import load_experiment
from vrft.pipelines.dag import compile_pipeline, sweep_configs
from vrft.pipelines.kfp_client import image_refs, secret_env_spec

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "configs" / "default.yaml"
CLUSTER = ["pipeline.artifact_root=s3://lab/vrft", "pipeline.image_registry=registry.lab.internal/ml"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = compile_pipeline(
        DEFAULT, tmp_path_factory.mktemp("c") / "pipeline.yaml", ["experiment.shots=[1,2]", *CLUSTER]
    )
    documents = list(yaml.safe_load_all(path.read_text()))
    return path, documents[0], documents[1] if len(documents) > 1 else {}


def executors(spec):
    return spec["deploymentSpec"]["executors"]


def test_loads_back_with_kfp(compiled):
    from kfp import components

    path, spec, _ = compiled
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == "vrft-default"
    assert spec["pipelineInfo"]["name"] == "vrft-default"


def test_gpus_on_training_and_evaluation_only(compiled):
    _, spec, _ = compiled
    by_stage = {}
    for name, executor in executors(spec).items():
        container = executor["container"]
        accelerator = container.get("resources", {}).get("accelerator", {})
        by_stage[name] = (container["image"], accelerator)
    gpu = {n for n, (_, acc) in by_stage.items() if acc}
    assert gpu == {n for n in by_stage if any(s in n for s in ("grpo", "sft", "evaluate"))}
    for name in gpu:
        assert by_stage[name][1].get("resourceType", by_stage[name][1].get("type")) == "nvidia.com/gpu"


def test_images_match_the_dockerfiles(compiled):
    _, spec, _ = compiled
    config = load_experiment(DEFAULT, CLUSTER)
    refs = image_refs(config.pipeline.image_registry, config.pipeline.image_tag)
    images = {executor["container"]["image"] for executor in executors(spec).values()}
    assert images == set(refs.values())
    import importlib.util
    import sys

    # docker/build.py says how each image is built (both stage images share docker/vrft.Dockerfile).
    spec = importlib.util.spec_from_file_location("vrft_docker_build", ROOT / "docker" / "build.py")
    build = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = build  # dataclasses resolve the module of their class
    spec.loader.exec_module(build)
    dockerfiles = {image.name: image.dockerfile for image in build.IMAGES}
    for image in images:
        name = image.rsplit("/", 1)[1].split(":")[0]
        assert (ROOT / dockerfiles[name]).exists(), image


def test_cluster_target_wires_secrets_and_gpu_nodes(compiled):
    _, _, platform = compiled
    executors_config = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, cfg in executors_config.items():
        secrets = {
            s.get("secretName") or s.get("secretNameParameter", {}).get("runtimeValue", {}).get("constant")
            for s in cfg.get("secretAsEnv", [])
        }
        assert set(secret_env_spec("dataset")) <= secrets | set(secret_env_spec("report")), name
        if any(s in name for s in ("grpo", "sft", "evaluate")):
            assert cfg.get("nodeSelector") and cfg.get("tolerations"), name


def test_sweep_has_one_config_per_shot_count(compiled):
    config = load_experiment(DEFAULT, ["experiment.shots=[1,4,16]"])
    assert [c.dataset.shots for c in sweep_configs(config)] == [1, 4, 16]
    _, spec, _ = compiled
    text = yaml.safe_dump(spec)
    assert "ParallelFor" in text or "parameterIterator" in text
