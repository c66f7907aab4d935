"""The Visual-RFT pipeline as a Kubeflow DAG, top to bottom like the paper's Figure 3.

    few-shot dataset ──► GRPO with verifiable rewards (RFT) ──► evaluate RFT ─┐
                     ├─► SFT baseline (same data, same steps) ─► evaluate SFT ├─► report (Δ = RFT − SFT)
                     └────────────────────────────────────────► evaluate base ┘

One experiment config may sweep ``experiment.shots``: the per-shot sub-pipeline runs in a
ParallelFor and every evaluation feeds one report, so a whole paper table is one pipeline run.
Each iteration item carries its key (``shots-K``, the artifact prefix segment) and each stage's
own view of the config (:func:`vrft.components.runtime.stage_config_json`), so a task's inputs,
and so its cache key, change only with what that stage reads. The same DAG compiles to Kubeflow
IR YAML for a cluster (checked first by :mod:`vrft.pipelines.validate`) and runs locally with
kfp's local runner.
"""

from pathlib import Path
from typing import Literal

from kfp import compiler, dsl
from kfp.dsl import HTML, Metrics

from vrft.components import dataset as dataset_component
from vrft.components import evaluate as evaluate_component
from vrft.components import report as report_component
from vrft.components import train as train_components
from vrft.components.runtime import (
    IMAGE_ENV,
    RUN_ID_ENV,
    STAGE_SECTIONS,
    WORK_DIR_ENV,
    iteration_key,
    stage_config_json,
)
from vrft.experiment import ExperimentConfig, PipelineConfig, Resources, load_experiment
from vrft.pipelines.kfp_client import (
    CLIENT_POD_LABEL,
    GPU_NODE_SELECTOR,
    GPU_TOLERATIONS,
    config_map_env_spec,
    image_refs,
    secret_env_spec,
)
from vrft.pipelines.pytorchjob import POD_NAME_ENV, POD_UID_ENV
from vrft.pipelines.resources import CACHE_ENV, POD_USER, SCRATCH_MOUNT, requests_for

Target = Literal["local", "cluster"]

#: Where a cluster pod finds its pipeline run's id: KFP labels every pod of a run with it. Read
#: through the downward API it stays out of the task inputs, and so out of KFP's cache key.
RUN_ID_FIELD_PATH = "metadata.labels['pipeline/runid']"
SHM_MOUNT = "/dev/shm"
SCRATCH_VOLUME = "scratch"


def sweep_configs(config: ExperimentConfig) -> list[ExperimentConfig]:
    """One config per shot count of ``experiment.shots`` and training seed of ``experiment.seeds``
    (each alone when empty), or the config itself."""
    by_shots = (
        [config.with_shots(k) for k in config.experiment.shots] if config.experiment.shots else [config]
    )
    if not config.experiment.seeds:
        return by_shots
    return [c.with_seed(seed) for c in by_shots for seed in config.experiment.seeds]


def needs_base_gate(config: ExperimentConfig) -> bool:
    """Whether SFT and RFT are evaluated through the base model's existence gate (so base must run)."""
    return config.evaluate.detection_mode == "existence_gated" and config.evaluate.gate_source == "base_model"


def sweep_items(config: ExperimentConfig) -> list[dict[str, str]]:
    """The ParallelFor items: per iteration its key (artifact prefix segment) and each stage's config view."""
    return [
        {"iteration": iteration_key(c), **{stage: stage_config_json(c, stage) for stage in STAGE_SECTIONS}}
        for c in sweep_configs(config)
    ]


def _place(
    task: dsl.PipelineTask,
    resources: Resources,
    *,
    target: Target,
    stage: str,
    pipeline: PipelineConfig,
    retries: int = 0,
) -> dsl.PipelineTask:
    """Resources, retries, caching and (on a cluster) run id, secrets, security context, timeout, GPU
    scheduling, the volumes PyTorch needs on GPU nodes and the source data volume, for one task.

    ``stage`` is the task's kind (``dataset``, ``grpo``, ``sft``, ``evaluate``, ``report`` or
    ``collect``): it decides which secrets the pod gets and its timeout. GRPO/SFT tasks get
    ``pipeline.train_retries`` retries on a cluster (they resume from their uploaded checkpoints).
    """
    cpu_request, memory_request = requests_for(
        resources.cpu, resources.memory, resources.cpu_request, resources.memory_request
    )
    task.set_cpu_limit(resources.cpu).set_memory_limit(resources.memory)
    task.set_cpu_request(cpu_request).set_memory_request(memory_request)
    if resources.gpus:
        task.set_accelerator_type(resources.accelerator).set_accelerator_limit(resources.gpus)
    if stage in TRAIN_STAGES:
        retries = pipeline.train_retries
    if retries and target == "cluster":  # locally a deterministic failure would only wait and fail again
        task.set_retry(num_retries=retries, backoff_duration="60s", backoff_factor=2.0)
    task.set_caching_options(pipeline.caching)
    if target == "cluster":
        _place_on_cluster(task, resources, stage=stage, pipeline=pipeline)
    return task


TRAIN_STAGES = ("grpo", "sft")


def _place_on_cluster(task: dsl.PipelineTask, resources: Resources, *, stage: str, pipeline: PipelineConfig):
    from kfp import kubernetes

    from vrft.components.train import UPLOAD_CHECKPOINTS_ENV

    kubernetes.add_pod_label(task, *CLIENT_POD_LABEL)  # admitted to S3 and MLflow (k8s NetworkPolicies)
    task.set_env_variable(IMAGE_ENV, task.component_spec.implementation.container.image)
    kubernetes.use_field_path_as_env(task, env_name=RUN_ID_ENV, field_path=RUN_ID_FIELD_PATH)
    for secret, keys in secret_env_spec(stage).items():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=keys)
    if stage != "collect":  # it reads no store and logs no run
        for config_map, keys in config_map_env_spec().items():
            kubernetes.use_config_map_as_env(task, config_map_name=config_map, config_map_key_to_env=keys)
    # Non-root as the images' own user; the backend adds no privilege escalation, no capabilities
    # and the RuntimeDefault seccomp profile (KFP >= 2.16, see vrft.pipelines.backend_version).
    kubernetes.set_security_context(task, run_as_user=POD_USER, run_as_group=POD_USER, run_as_non_root=True)
    timeout = pipeline.timeout_s("report" if stage == "collect" else stage)
    if timeout:
        kubernetes.set_timeout(task, timeout)
    if resources.gpus:  # the same selector and toleration as k8s/components/gpu
        for label, value in GPU_NODE_SELECTOR.items():
            kubernetes.add_node_selector(task, label_key=label, label_value=value)
        for toleration in GPU_TOLERATIONS:
            kubernetes.add_toleration(task, **toleration)
        # The container default /dev/shm is 64 MiB: DataLoader workers and NCCL need more.
        kubernetes.empty_dir_mount(
            task, volume_name="dshm", mount_path=SHM_MOUNT, medium="Memory", size_limit=pipeline.shm_size
        )
    if resources.gpus or stage == "dataset":
        # Checkpoints, downloads and caches go to a sized scratch volume, not the container's root fs.
        kubernetes.add_ephemeral_volume(
            task,
            volume_name=SCRATCH_VOLUME,
            mount_path=SCRATCH_MOUNT,
            access_modes=["ReadWriteOnce"],
            size=pipeline.dataset_scratch_size if stage == "dataset" else pipeline.scratch_size,
            storage_class_name=pipeline.scratch_storage_class or None,
        )
        task.set_env_variable(WORK_DIR_ENV, SCRATCH_MOUNT)
        for name, value in CACHE_ENV.items():
            task.set_env_variable(name, value)
    if stage == "dataset" and pipeline.data_pvc:
        # Read-only by the claim's access mode (ReadOnlyMany) or the volume: KFP's PVC mount has no
        # readOnly field (kfp-kubernetes 2.17); the dataset stage only reads sources.
        kubernetes.mount_pvc(task, pvc_name=pipeline.data_pvc, mount_path=pipeline.data_mount)
    if stage in TRAIN_STAGES:
        task.set_env_variable(UPLOAD_CHECKPOINTS_ENV, "1")


def build_pipeline(
    config: ExperimentConfig, *, target: Target = "local", images: dict[str, str] | None = None
):
    """The pipeline function for ``config``; call it under ``kfp.local.init`` or compile it.

    ``images``: stage -> image, instead of the config's (``vrft run --runner docker`` runs every stage
    in the CPU image).
    """
    images = images or image_refs(config.pipeline.image_registry, config.pipeline.image_tag)
    make_dataset = dataset_component.component(images["dataset"])
    train_rft = train_components.grpo_component(images["grpo"])
    train_sft = train_components.sft_component(images["sft"])
    evaluate = evaluate_component.component(images["evaluate"])
    collect = evaluate_component.collect_component(images["report"])
    report = report_component.component(images["report"])

    p = config.pipeline
    # Multi-node: the training task only launches and waits for a PyTorchJob, so it needs no GPU
    # itself, but it mounts the shared volume the job writes to and names itself the job's owner.
    multi_node = p.train_nodes > 1
    launcher = Resources(cpu="1", memory="4Gi")

    def place(task, resources, stage, retries=0):
        if multi_node and stage in ("grpo", "sft"):
            resources = launcher
            if target == "cluster":
                from kfp import kubernetes

                kubernetes.mount_pvc(task, pvc_name=p.shared_pvc, mount_path=p.shared_mount)
                kubernetes.use_field_path_as_env(task, env_name=POD_NAME_ENV, field_path="metadata.name")
                kubernetes.use_field_path_as_env(task, env_name=POD_UID_ENV, field_path="metadata.uid")
        return _place(task, resources, target=target, stage=stage, pipeline=p, retries=retries)

    gated = needs_base_gate(config)

    @dsl.pipeline(
        name=f"vrft-{config.experiment.name}-shots",
        description="One shot count: data, RFT and SFT, evaluations.",
    )
    def experiment(
        iteration: str, dataset_config: str, grpo_config: str, sft_config: str, evaluate_config: str
    ) -> Metrics:
        data = place(
            make_dataset(config_json=dataset_config, iteration=iteration),
            p.dataset_resources,
            "dataset",
            p.retries,
        )
        data.set_display_name("Few-shot dataset")
        dataset = data.outputs["dataset"]

        rft = place(
            train_rft(config_json=grpo_config, iteration=iteration, dataset=dataset),
            p.train_resources,
            "grpo",
        )
        rft.set_display_name("GRPO with verifiable rewards (RFT)")
        sft = place(
            train_sft(config_json=sft_config, iteration=iteration, dataset=dataset), p.train_resources, "sft"
        )
        sft.set_display_name("SFT baseline (same data and steps)")

        # In existence_gated mode the base evaluation's gate.json is the one gate every checkpoint
        # shares, so the base model is evaluated then whatever pipeline.evaluate_base says.
        base = {}
        if p.evaluate_base or gated:
            base_eval = evaluate(
                config_json=evaluate_config, iteration=iteration, label="base", dataset=dataset
            )
            place(base_eval, p.evaluate_resources, "evaluate", p.retries).set_display_name(
                "Evaluate base model"
            )
            base = {"base": base_eval.outputs["evaluation"]}
        gate = {"gate": base_eval.outputs["evaluation"]} if gated else {}
        sft_eval = evaluate(
            config_json=evaluate_config,
            iteration=iteration,
            label="sft",
            dataset=dataset,
            checkpoint=sft.outputs["checkpoint"],
            **gate,
        )
        place(sft_eval, p.evaluate_resources, "evaluate", p.retries).set_display_name("Evaluate SFT")
        rft_eval = evaluate(
            config_json=evaluate_config,
            iteration=iteration,
            label="rft",
            dataset=dataset,
            checkpoint=rft.outputs["checkpoint"],
            **gate,
        )
        place(rft_eval, p.evaluate_resources, "evaluate", p.retries).set_display_name("Evaluate RFT")
        collected = collect(sft=sft_eval.outputs["evaluation"], rft=rft_eval.outputs["evaluation"], **base)
        _place(collected, p.report_resources, target=target, stage="collect", pipeline=p)
        collected.set_display_name("This run's evaluations")
        return collected.outputs["evaluations"]

    items = sweep_items(config)

    @dsl.pipeline(
        name=f"vrft-{config.experiment.name}",
        description=config.experiment.description or "Visual-RFT vs SFT",
    )
    def visual_rft(report_config_json: str = config.to_json()) -> HTML:
        with dsl.ParallelFor(items=items, parallelism=1 if target == "local" else 0) as item:
            per_shots = experiment(
                iteration=item.iteration,
                dataset_config=item.dataset,
                grpo_config=item.grpo,
                sft_config=item.sft,
                evaluate_config=item.evaluate,
            )
            per_shots.set_display_name("Data, RFT, SFT and evaluations")
        # The run id reaches the report as $VRFT_RUN_ID too (see vrft.components.runtime).
        final = report(config_json=report_config_json, run_id="", evaluations=dsl.Collected(per_shots.output))
        place(final, p.report_resources, "report", p.retries).set_display_name("Report: RFT vs SFT")
        return final.outputs["report"]

    return visual_rft


def compile_pipeline(
    config_path: str | Path,
    output_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    target: Target = "cluster",
) -> Path:
    """Write the Kubeflow IR YAML of ``config_path``'s pipeline to ``output_path`` (atomically).

    For the cluster target the config is checked first (:func:`vrft.pipelines.validate.check_for_cluster`):
    a config that cannot run there raises a one-line ConfigError and nothing is written.
    """
    from vrft.io import atomic_write_text

    config = load_experiment(config_path, overrides)
    if target == "cluster":
        from vrft.pipelines.validate import check_for_cluster

        check_for_cluster(config)
    output_path = Path(output_path)
    tmp = output_path.with_name(f".{output_path.name}.compiling.yaml")
    try:
        compiler.Compiler().compile(build_pipeline(config, target=target), str(tmp))
        atomic_write_text(output_path, tmp.read_text())
    finally:
        tmp.unlink(missing_ok=True)
    return output_path
