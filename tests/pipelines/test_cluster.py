"""The cluster target: every shipped config compiles, its IR carries what a GPU pod needs, each
training stage's preflight passes as on its pod, and bad submissions fail before any request."""

import json
from pathlib import Path

import datasets
import pytest
import yaml
from PIL import Image

from vrft.cli import main
from vrft.components import cluster
from vrft.components.runtime import iteration_key, stage_config_json
from vrft.config import ConfigError
from vrft.data.build import resolve_plan
from vrft.experiment import load_experiment
from vrft.io import write_manifest
from vrft.pipelines import kfp_client
from vrft.pipelines.dag import CACHE_ENV, RUN_ID_FIELD_PATH, SCRATCH_MOUNT, compile_pipeline
from vrft.pipelines.plan import build_plan, sweep_configs
from vrft.pipelines.validate import expected_train_rows
from vrft.stage import RUN_ID_ENV, WORK_DIR_ENV
from vrft.train.data import REQUIRED_COLUMNS
from vrft.train.launch import launch_command, needs_launcher

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml"))
CLUSTER = [
    "pipeline.artifact_root=s3://lab-artifacts/vrft",
    "pipeline.image_registry=registry.lab.internal/ml",
]


def on_s3(path: Path) -> list[str]:
    """Overrides that move a config's relative source paths (data/coco/...) into a lab bucket: a
    cluster pod reads s3:// sources (or a data volume), never the compiling machine's files."""
    config = load_experiment(path)
    moved = []
    for where in ("train", "eval"):
        source = getattr(config.dataset, where)
        for key in ("annotations", "images", "path"):
            value = getattr(source, key) if source is not None else ""
            if value and source.kind not in ("shapes", "shapes_classification"):
                moved.append(f"dataset.{where}.{key}=s3://lab-data/{value}")
    return moved


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """Every config under configs/, compiled for the cluster: name -> (pipeline spec, platform spec)."""
    out = tmp_path_factory.mktemp("ir")
    result = {}
    for path in CONFIGS:
        documents = list(
            yaml.safe_load_all(
                compile_pipeline(path, out / f"{path.stem}.yaml", [*CLUSTER, *on_s3(path)]).read_text()
            )
        )
        result[path.stem] = (documents[0], documents[1])
    return result


def executors(compiled_config: tuple[dict, dict]) -> dict[str, tuple[dict, dict]]:
    """executor name -> (container spec, kubernetes config)."""
    spec, platform = compiled_config
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {name: (e["container"], k8s[name]) for name, e in spec["deploymentSpec"]["executors"].items()}


def stage_of(executor: str) -> str:
    if "collect" in executor:  # gathers one iteration's evaluations for the report: placed like the report
        return "report"
    return next(s for s in ("dataset", "grpo", "sft", "evaluate", "report") if s in executor)


def test_every_config_compiles_for_the_cluster(compiled):
    assert set(compiled) == {p.stem for p in CONFIGS} and len(compiled) == 12  # 24 GRPO/SFT stage configs


def test_every_task_has_its_stage_timeout_and_the_run_id_from_its_pod_label(compiled):
    for name, compiled_config in compiled.items():
        config = load_experiment(ROOT / "configs" / f"{name}.yaml", CLUSTER)
        for executor, (_, k8s) in executors(compiled_config).items():
            timeout = config.pipeline.timeout_s(stage_of(executor))
            assert timeout > 0 and int(k8s["activeDeadlineSeconds"]) == timeout, (name, executor)
            assert {"name": RUN_ID_ENV, "fieldPath": RUN_ID_FIELD_PATH} in k8s["fieldPathAsEnv"], (
                name,
                executor,
            )


def test_the_run_id_is_not_a_task_input(compiled):
    """A per-run input would enter KFP's cache key: no stage could ever be reused."""
    for name, (spec, _) in compiled.items():
        assert "pipeline_job_uuid" not in yaml.safe_dump(spec), name


def test_gpu_tasks_get_shm_a_sized_scratch_volume_and_write_there(compiled):
    for name, compiled_config in compiled.items():
        config = load_experiment(ROOT / "configs" / f"{name}.yaml", CLUSTER)
        gpu_stages = set()
        for executor, (container, k8s) in executors(compiled_config).items():
            if not container.get("resources", {}).get("accelerator"):
                assert "emptyDirMounts" not in k8s, (name, executor)
                continue
            gpu_stages.add(stage_of(executor))
            shm = [m for m in k8s["emptyDirMounts"] if m["mountPath"] == "/dev/shm"]
            assert shm and shm[0]["medium"] == "Memory" and shm[0]["sizeLimit"] == config.pipeline.shm_size
            (scratch,) = k8s["genericEphemeralVolume"]
            assert scratch["mountPath"] == SCRATCH_MOUNT
            assert scratch["size"] == config.pipeline.scratch_size  # the volume's storage request
            assert {"name": WORK_DIR_ENV, "value": SCRATCH_MOUNT} in container["env"]
        assert gpu_stages == {"grpo", "sft", "evaluate"}, name  # training and the evaluations


def test_the_dataset_task_gets_scratch_and_every_cache_lives_there(compiled):
    for name, compiled_config in compiled.items():
        config = load_experiment(ROOT / "configs" / f"{name}.yaml", CLUSTER)
        for executor, (container, k8s) in executors(compiled_config).items():
            stage = stage_of(executor)
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            if stage in ("dataset", "grpo", "sft", "evaluate"):
                (scratch,) = k8s["genericEphemeralVolume"]
                expected = (
                    config.pipeline.dataset_scratch_size
                    if stage == "dataset"
                    else config.pipeline.scratch_size
                )
                assert scratch["size"] == expected, (name, executor)
                assert {k: env[k] for k in CACHE_ENV} == CACHE_ENV, (name, executor)
                assert all(value.startswith(SCRATCH_MOUNT + "/") for value in CACHE_ENV.values())
            else:
                assert "genericEphemeralVolume" not in k8s and "HF_HOME" not in env, (name, executor)


def test_requests_sit_below_limits_so_a_512gi_pod_fits_a_512_gib_node(compiled, tmp_path):
    from vrft.components.resources import parse_quantity

    for name, (spec, _) in compiled.items():
        for executor, e in spec["deploymentSpec"]["executors"].items():
            r = e["container"]["resources"]
            memory = [parse_quantity(r[f"resourceMemory{kind}"]) for kind in ("Request", "Limit")]
            cpu = [parse_quantity(r[f"resourceCpu{kind}"]) for kind in ("Request", "Limit")]
            assert memory[0] < memory[1] and cpu[0] < cpu[1], (name, executor)
    train = compiled["coco_8cat"][0]["deploymentSpec"]["executors"]["exec-grpo-stage"]["container"][
        "resources"
    ]
    assert (train["resourceMemoryLimit"], train["resourceMemoryRequest"]) == ("512Gi", "448Gi")
    path = ROOT / "configs" / "coco_8cat.yaml"
    given = ["pipeline.train_resources.memory_request=480Gi", 'pipeline.train_resources.cpu_request="30"']
    spec = next(
        yaml.safe_load_all(
            compile_pipeline(path, tmp_path / "p.yaml", [*CLUSTER, *on_s3(path), *given]).read_text()
        )
    )
    train = spec["deploymentSpec"]["executors"]["exec-grpo-stage"]["container"]["resources"]
    assert (train["resourceMemoryRequest"], train["resourceCpuRequest"]) == ("480Gi", "30")


def test_pods_run_non_root_and_secrets_reach_only_the_tasks_that_use_them(compiled):
    for name, compiled_config in compiled.items():
        for executor, (_, k8s) in executors(compiled_config).items():
            assert k8s["securityContext"] == {"runAsUser": "1000", "runAsGroup": "1000", "runAsNonRoot": True}
            secrets = {s["secretName"] for s in k8s.get("secretAsEnv", [])}
            if "collect" in executor:  # passes URIs on: no store, no tracking, no webhook
                assert secrets == set() and "configMapAsEnv" not in k8s, (name, executor)
            elif "report-stage" in executor:
                assert cluster.NOTIFY_SECRET in secrets
            else:
                assert cluster.NOTIFY_SECRET not in secrets, (name, executor)
                assert secrets == {cluster.S3_SECRET, cluster.MLFLOW_SECRET}, (name, executor)


def test_training_retries_on_a_cluster_and_mirrors_its_checkpoints(compiled):
    from vrft.components.train import UPLOAD_CHECKPOINTS_ENV

    spec, platform = compiled["coco_8cat"]
    training = [
        task
        for task in spec["root"]["dag"]["tasks"].values()
        if task["componentRef"]["name"].startswith(("comp-grpo-stage", "comp-sft-stage"))
    ]
    assert len(training) == 10  # GRPO and SFT of each of the five shot counts
    assert all(task["retryPolicy"]["maxRetryCount"] == 2 for task in training)
    executors_ = spec["deploymentSpec"]["executors"]
    for executor in ("exec-grpo-stage", "exec-sft-stage"):
        assert {"name": UPLOAD_CHECKPOINTS_ENV, "value": "1"} in executors_[executor]["container"]["env"]
    assert UPLOAD_CHECKPOINTS_ENV not in json.dumps(executors_["exec-evaluate-stage"])


def test_a_data_volume_is_mounted_on_the_dataset_task_only(tmp_path):
    overrides = [
        *CLUSTER,
        "pipeline.data_pvc=vrft-data",
        "dataset.train.annotations=/data/coco/annotations/instances_train2017.json",
        "dataset.train.images=/data/coco/train2017",
        "dataset.eval.annotations=s3://lab-data/coco/annotations/instances_val2017.json",
        "dataset.eval.images=s3://lab-data/coco/val2017",
    ]
    path = compile_pipeline(ROOT / "configs" / "coco_8cat.yaml", tmp_path / "p.yaml", overrides)
    for executor, (_, k8s) in executors(tuple(yaml.safe_load_all(path.read_text()))).items():
        mounts = k8s.get("pvcMount", [])
        if "dataset" in executor:
            assert [(m["constant"], m["mountPath"]) for m in mounts] == [("vrft-data", "/data")]
        else:
            assert mounts == [], executor


@pytest.mark.parametrize(
    "sources_on_s3, overrides, message",
    [
        (
            False,
            [],
            "dataset.train.annotations 'data/coco/annotations/instances_train2017.json' is a relative path",
        ),
        (
            True,
            ["dataset.train.annotations=/home/me/coco/instances_train2017.json"],
            "'/home/me/coco/instances_train2017.json' is a local path no pod mounts: use s3://bucket/key, "
            "or set pipeline.data_pvc",
        ),
        (
            True,
            ["pipeline.data_pvc=vrft-data", "dataset.train.images=/data/../etc/coco"],
            "'/data/../etc/coco' is a local path no pod mounts (the data volume is at /data)",
        ),
        (
            True,
            ["pipeline.train_resources.memory_request=600Gi"],
            "memory_request 600Gi is above the limit 512Gi",
        ),
    ],
)
def test_sources_no_pod_can_read_are_refused_at_compile_time(sources_on_s3, overrides, message, tmp_path):
    path = ROOT / "configs" / "coco_8cat.yaml"
    with pytest.raises(ConfigError) as failure:
        compile_pipeline(
            path, tmp_path / "p.yaml", [*CLUSTER, *(on_s3(path) if sources_on_s3 else []), *overrides]
        )
    assert len(str(failure.value).splitlines()) == 1 and message in str(failure.value)
    assert not (tmp_path / "p.yaml").exists()


def test_planned_tasks_carry_each_stage_view_and_iteration():
    config = load_experiment(ROOT / "configs" / "default.yaml")
    plan = build_plan(config)
    assert plan.iterations == (iteration_key(config),) == (f"shots-{config.dataset.shots}",)
    grpo = plan.task(f"{plan.iterations[0]}/grpo")
    assert grpo.params == {"config_json": stage_config_json(config, "grpo"), "iteration": plan.iterations[0]}


def test_changing_grpo_steps_changes_only_the_grpo_stage_input():
    """KFP's cache key of a task is its inputs: dataset and evaluations must not see grpo.max_steps."""
    before = build_plan(load_experiment(ROOT / "configs" / "coco_8cat.yaml"))
    after = build_plan(load_experiment(ROOT / "configs" / "coco_8cat.yaml", ["grpo.max_steps=300"]))
    changed = {t.id for t, u in zip(before, after, strict=True) if t.params != u.params}
    assert changed == {f"{key}/grpo" for key in before.iterations} | {"report"}  # the report gets it all
    assert before.iterations == ("shots-1", "shots-2", "shots-4", "shots-8", "shots-16")


def _fake_dataset(path: Path, rows: int, task: str) -> Path:
    """A saved dataset of ``rows`` rows with the columns training checks (content is never read)."""
    image = Image.new("RGB", (4, 4))
    data = {column: [""] * rows for column in REQUIRED_COLUMNS}
    data.update(
        image=[image] * rows,
        width=[4] * rows,
        height=[4] * rows,
        task=[task] * rows,
        gt_boxes=[[[0.0, 0.0, 1.0, 1.0]]] * rows,
        aliases=[["a"]] * rows,
    )
    split = datasets.Dataset.from_dict(data, features=None).cast_column("image", datasets.Image())
    datasets.DatasetDict({"train": split}).save_to_disk(str(path))
    write_manifest(path)  # training checks every file against it, as `vrft dataset build` writes it
    return path


class _PreflightPassed(Exception):
    """Raised where training would load the processor: everything checked before it passed."""


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.stem)
def test_each_training_stage_preflight_passes_as_on_its_pod(config_path, tmp_path, monkeypatch):
    """What `vrft train` runs under torchrun on the training pod, up to the model load: the same
    process count (WORLD_SIZE), the same DeepSpeed file, a train split of the size the dataset
    config fixes. DeepSpeed itself is installed in the GPU image (checked below), not here."""
    from vrft.models.config import ModelConfig
    from vrft.train import config as train_config
    from vrft.train import train_grpo, train_sft

    assert "deepspeed==" in (ROOT / "docker" / "base.Dockerfile").read_text()
    monkeypatch.setattr(train_config, "deepspeed_installed", lambda: True)
    monkeypatch.setattr(ModelConfig, "load_processor", lambda self: (_ for _ in ()).throw(_PreflightPassed()))
    config = load_experiment(config_path, CLUSTER)
    cache: dict[tuple[int, str], Path] = {}
    for per_shot in sweep_configs(config):
        processes = per_shot.pipeline.training_processes()
        task = resolve_plan(per_shot.dataset).task
        rows = expected_train_rows(per_shot.dataset) or 64  # unknown until built: the runtime check decides
        if (rows, task) not in cache:
            cache[rows, task] = _fake_dataset(tmp_path / f"data-{rows}-{task}", rows, task)
        for method, train in (("grpo", train_grpo), ("sft", train_sft)):
            stage = getattr(per_shot, method)
            if processes > 1 or stage.deepspeed:
                assert needs_launcher(stage, processes)
                command = launch_command(method, "experiment.json", "data", "out", processes)
                assert f"--nproc_per_node={processes}" in command
                monkeypatch.setenv("WORLD_SIZE", str(processes))
            else:
                monkeypatch.delenv("WORLD_SIZE", raising=False)
            with pytest.raises(_PreflightPassed):
                train(
                    stage,
                    cache[rows, task],
                    tmp_path / "out" / method / iteration_key(per_shot),
                    model=per_shot.model,
                )


def test_paper_configs_keep_16_prompts_per_step_on_8_gpus():
    for path in CONFIGS:
        config = load_experiment(path, CLUSTER)
        if config.pipeline.training_processes() != 8:
            continue
        for per_shot in sweep_configs(config):
            g = per_shot.grpo
            prompts = g.per_device_train_batch_size * g.gradient_accumulation_steps * 8 // g.num_generations
            rows = expected_train_rows(per_shot.dataset)
            assert prompts == 16 or (rows is not None and prompts <= rows < 16), (
                path.stem,
                per_shot.dataset.shots,
            )


def test_a_one_shot_sweep_that_cannot_fill_a_step_fails_at_compile_time(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"shots 1, 8 training process\(es\): grpo: a step trains on 16 prompts .* "
        r"8 rows",
    ):
        compile_pipeline(
            ROOT / "configs" / "coco_8cat.yaml",
            tmp_path / "p.yaml",
            [*CLUSTER, "experiment.shot_overrides={}"],
        )
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("pipeline.artifact_root=", "pipeline.artifact_root is empty"),
        ("pipeline.image_registry=ghcr.io/vrft", "pipeline.image_registry 'ghcr.io/vrft' is a placeholder"),
        ("pipeline.image_registry=registry.example.com/ml", "is a placeholder"),
        ("pipeline.artifact_root=file:///data/artifacts", "share no file system"),
    ],
)
@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_bad_submissions_fail_before_contacting_the_server(command, override, message, monkeypatch, capsys):
    def no_server(*args, **kwargs):
        raise AssertionError("the KFP server was contacted")

    monkeypatch.setattr(kfp_client, "connect", no_server)
    monkeypatch.setattr(kfp_client, "check_host", no_server)
    extra = ["--cron", "0 2 * * *"] if command == "schedule" else []
    code = main(
        [
            command,
            str(ROOT / "configs" / "default.yaml"),
            *CLUSTER,
            override,
            "--host",
            "http://kfp.invalid",
            *extra,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and message in err, err
