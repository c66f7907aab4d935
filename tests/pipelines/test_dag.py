"""The compiled DAG: loads back with kfp, GPUs on training/evaluation, images and secrets wired."""

from pathlib import Path

import pytest
import yaml

from vrft.components.cluster import image_refs, secret_env_spec
from vrft.experiment import load_experiment
from vrft.pipelines.dag import compile_pipeline
from vrft.pipelines.plan import build_plan, sweep_configs

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
    tasks = spec["root"]["dag"]["tasks"]
    names = sorted(t["taskInfo"]["name"] for t in tasks.values())
    assert "Few-shot dataset (1 shot)" in names and "Few-shot dataset (2 shots)" in names


def test_the_dag_is_flat_for_the_kubeflow_people_run(compiled):
    """No ParallelFor, nested pipeline or Collected (backend <= 2.5 skips ParallelFor outputs; collected
    artifacts and retries inside nested pipelines need 2.14): one task per planned task."""
    path, spec, _ = compiled
    text = path.read_text()
    assert "parameterIterator" not in text and "artifactIterator" not in text and "Collected" not in text
    assert all(
        "componentRef" in t and "iteratorPolicy" not in t for t in spec["root"]["dag"]["tasks"].values()
    )
    assert all("dag" not in c for c in spec["components"].values())  # no nested pipelines
    plan = build_plan(load_experiment(DEFAULT, ["experiment.shots=[1,2]", *CLUSTER]))
    assert len(spec["root"]["dag"]["tasks"]) == len(plan)


def test_the_compiled_graph_is_the_plans(compiled):
    _, spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    display = {name: t["taskInfo"]["name"] for name, t in tasks.items()}
    compiled_graph = {
        display[name]: tuple(sorted(display[d] for d in t.get("dependentTasks", [])))
        for name, t in tasks.items()
    }
    plan = build_plan(load_experiment(DEFAULT, ["experiment.shots=[1,2]", *CLUSTER]))
    assert compiled_graph == plan.graph()
    # Each iteration's collect extends the previous one's list; the report reads the last one.
    report = next(t for t in tasks.values() if t["taskInfo"]["name"] == "Report: RFT vs SFT")
    (source,) = report["inputs"]["artifacts"].values()
    assert display[source["taskOutputArtifact"]["producerTask"]] == "This run's evaluations (2 shots)"


def test_collect_and_report_are_never_cached(compiled):
    _, spec, _ = compiled
    for task in spec["root"]["dag"]["tasks"].values():
        uncached = task["taskInfo"]["name"].startswith(("This run's evaluations", "Report"))
        assert task.get("cachingOptions", {}).get("enableCache", False) is not uncached, task["taskInfo"]


def test_max_parallel_iterations_orders_the_iterations(tmp_path):
    overrides = ["experiment.shots=[1,2,4]", "pipeline.max_parallel_iterations=2", *CLUSTER]
    spec = next(yaml.safe_load_all(compile_pipeline(DEFAULT, tmp_path / "p.yaml", overrides).read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    display = {name: t["taskInfo"]["name"] for name, t in tasks.items()}
    waits = {t["taskInfo"]["name"]: {display[d] for d in t.get("dependentTasks", [])} for t in tasks.values()}
    # Iteration 3 (4 shots) starts when iteration 1 (1 shot) has released its GPUs; 2 shots does not wait.
    assert waits["Few-shot dataset (4 shots)"] == {"Evaluate SFT (1 shot)", "Evaluate RFT (1 shot)"}
    assert waits["Few-shot dataset (2 shots)"] == set() == waits["Few-shot dataset (1 shot)"]


def _caching(path: Path) -> dict[str, bool]:
    """Display name -> whether KFP may reuse the task's result, from the compiled IR."""
    spec = next(yaml.safe_load_all(Path(path).read_text()))
    return {
        t["taskInfo"]["name"]: t.get("cachingOptions", {}).get("enableCache", False)
        for t in spec["root"]["dag"]["tasks"].values()
    }


def _scheduled_ir(tmp_path, monkeypatch, *flags) -> dict[str, bool]:
    """What `vrft schedule` hands KFP (the compiled package), captured instead of contacting a server."""
    from vrft.cli import main
    from vrft.pipelines import kfp_client

    seen: dict[str, bool] = {}

    def capture(package_path, *args, **kwargs):
        seen.update(_caching(package_path))
        return "schedule-id"

    monkeypatch.setattr(kfp_client, "schedule", capture)
    code = main(
        [
            "schedule",
            str(DEFAULT),
            "experiment.shots=[1,2]",
            *CLUSTER,
            "--host",
            "http://kfp.invalid",
            "--cron",
            "0 2 * * *",
            "--ignore-preflight",
            *flags,
        ]
    )
    assert code == 0
    return seen


def test_a_schedule_reuses_unchanged_stages_and_always_reruns_collect_and_report(tmp_path, monkeypatch):
    caching = _scheduled_ir(tmp_path, monkeypatch)
    never = {name for name in caching if name.startswith(("This run's evaluations", "Report"))}
    assert len(never) == 3 and not any(caching[name] for name in never)
    assert all(cached for name, cached in caching.items() if name not in never)  # keyed on image + inputs


def test_a_fresh_schedule_retrains_and_reevaluates_every_night(tmp_path, monkeypatch):
    caching = _scheduled_ir(tmp_path, monkeypatch, "--fresh")
    assert len(caching) == 15 and not any(caching.values()), caching


def test_images_are_referenced_by_digest_when_one_is_known(tmp_path):
    digest = "sha256:" + "ab" * 32
    overrides = [*CLUSTER, f"pipeline.image_digests={{vrft: '{digest}'}}"]
    spec = next(yaml.safe_load_all(compile_pipeline(DEFAULT, tmp_path / "p.yaml", overrides).read_text()))
    images = {name: e["container"]["image"] for name, e in executors(spec).items()}
    gpu = {n for n in images if any(s in n for s in ("grpo", "sft", "evaluate"))}
    # A re-push under the same tag has another digest: another image string, so KFP's cache key changes.
    assert {images[n] for n in gpu} == {f"registry.lab.internal/ml/vrft:0.1.0@{digest}"}
    assert {images[n] for n in images if n not in gpu} == {"registry.lab.internal/ml/vrft-cpu:0.1.0"}
