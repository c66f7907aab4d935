"""The Visual-RFT pipeline as a Kubeflow DAG, top to bottom like the paper's Figure 3.

    few-shot dataset ──► GRPO with verifiable rewards (RFT) ──► evaluate RFT ─┐
                     ├─► SFT baseline (same data, same steps) ─► evaluate SFT ├─► collect ─► report
                     └────────────────────────────────────────► evaluate base ┘

The DAG is the task plan (:mod:`vrft.pipelines.plan`) written out flat: one set of tasks per sweep
iteration (shot count × seed), display names saying which, no ``ParallelFor``, nested pipelines or
``dsl.Collected``. The plan is known at compile time, and flat it runs on the Kubeflow people have:
up to backend 2.5.0 (Kubeflow 1.10) the driver skips ParallelFor outputs, and collecting artifacts
or retrying inside nested pipelines needs 2.14. Each iteration's ``collect`` task extends the
previous one's list of evaluation references (URI + manifest hash), and the report reads the last
list. ``pipeline.max_parallel_iterations`` becomes ``.after()`` edges: iteration i's dataset task
waits for iteration i − k's last GPU tasks. Each task gets only its stage's view of the config, so a
task's inputs, and so its cache key, change only with what that stage reads; the collect and
report tasks are never cached. The IR YAML for a cluster is checked first by
:mod:`vrft.pipelines.validate`.
"""

from pathlib import Path
from typing import Literal

from kfp import compiler, dsl
from kfp.dsl import HTML

from vrft.components import dataset as dataset_component
from vrft.components import evaluate as evaluate_component
from vrft.components import report as report_component
from vrft.components import train as train_components
from vrft.components.cluster import (
    CLIENT_POD_LABEL,
    GPU_NODE_SELECTOR,
    GPU_TOLERATIONS,
    config_map_env_spec,
    image_refs,
    secret_env_spec,
)
from vrft.components.pytorchjob import POD_NAME_ENV, POD_UID_ENV
from vrft.components.resources import CACHE_ENV, POD_USER, SCRATCH_MOUNT, requests_for
from vrft.experiment import ExperimentConfig, PipelineConfig, Resources, load_experiment
from vrft.pipelines.plan import Plan, build_plan
from vrft.stage import IMAGE_ENV, RUN_ID_ENV, WORK_DIR_ENV

Target = Literal["local", "cluster"]

#: Where a cluster pod finds its pipeline run's id: KFP labels every pod of a run with it. Read
#: through the downward API it stays out of the task inputs, and so out of KFP's cache key.
RUN_ID_FIELD_PATH = "metadata.labels['pipeline/runid']"
SHM_MOUNT = "/dev/shm"
SCRATCH_VOLUME = "scratch"
#: The pipeline parameter that carries the report's config (the whole experiment, one JSON line).
REPORT_CONFIG_PARAMETER = "report_config_json"
#: `vrft schedule --fresh`: every night retrains and re-evaluates (no task's result is reused).
FRESH_OVERRIDES = ("pipeline.caching=false",)


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
    ``collect``): it decides which secrets the pod gets and its timeout. ``retries`` apply on a cluster
    only (the plan gives GRPO/SFT ``pipeline.train_retries``: they resume from their uploaded
    checkpoints).
    """
    cpu_request, memory_request = requests_for(
        resources.cpu, resources.memory, resources.cpu_request, resources.memory_request
    )
    task.set_cpu_limit(resources.cpu).set_memory_limit(resources.memory)
    task.set_cpu_request(cpu_request).set_memory_request(memory_request)
    if resources.gpus:
        task.set_accelerator_type(resources.accelerator).set_accelerator_limit(resources.gpus)
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
    config: ExperimentConfig,
    *,
    target: Target = "local",
    images: dict[str, str] | None = None,
    plan: Plan | None = None,
):
    """The pipeline function for ``config``'s task plan, to compile.

    ``images``: stage -> image, instead of the config's.
    """
    plan = plan or build_plan(config)
    images = images or image_refs(
        config.pipeline.image_registry, config.pipeline.image_tag, config.pipeline.image_digests
    )
    components = {
        "dataset": dataset_component.component(images["dataset"]),
        "grpo": train_components.grpo_component(images["grpo"]),
        "sft": train_components.sft_component(images["sft"]),
        "evaluate": evaluate_component.component(images["evaluate"]),
        "collect": evaluate_component.collect_component(images["report"]),
        "report": report_component.component(images["report"]),
    }
    p = config.pipeline
    # Multi-node: the training task only launches and waits for a PyTorchJob (its plan resources say
    # so), but it mounts the shared volume the job writes to and names itself the job's owner.
    multi_node = p.train_nodes > 1

    def place(task: dsl.PipelineTask, planned) -> dsl.PipelineTask:
        if multi_node and planned.stage in ("grpo", "sft") and target == "cluster":
            from kfp import kubernetes

            kubernetes.mount_pvc(task, pvc_name=p.shared_pvc, mount_path=p.shared_mount)
            kubernetes.use_field_path_as_env(task, env_name=POD_NAME_ENV, field_path="metadata.name")
            kubernetes.use_field_path_as_env(task, env_name=POD_UID_ENV, field_path="metadata.uid")
        _place(
            task, planned.resources, target=target, stage=planned.stage, pipeline=p, retries=planned.retries
        )
        task.set_caching_options(p.caching and planned.cacheable)
        return task.set_display_name(planned.display_name)

    @dsl.pipeline(name=plan.name, description=plan.description)
    def visual_rft(report_config_json: str = plan.task("report").params["config_json"]) -> HTML:
        created: dict[str, dsl.PipelineTask] = {}
        for planned in plan:
            arguments = {name: created[up.task].outputs[up.output] for name, up in planned.inputs.items()}
            params = dict(planned.params)
            if planned.stage == "report":  # a pipeline parameter: overridable when a run is submitted
                params["config_json"] = report_config_json
            task = components[planned.stage](**params, **arguments)
            if planned.after:
                task.after(*(created[name] for name in planned.after))
            created[planned.id] = place(task, planned)
        return created["report"].outputs["report"]

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
