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
from vrft.components.cluster import image_refs
from vrft.components.resources import CACHE_ENV, SCRATCH_MOUNT  # noqa: F401  (re-exported: tests, docs)
from vrft.experiment import ExperimentConfig, PipelineConfig, load_experiment
from vrft.pipelines.cluster_settings import (  # noqa: F401  (SHM_MOUNT, SCRATCH_VOLUME re-exported)
    RETRY_BACKOFF_FACTOR,
    RETRY_BACKOFF_S,
    SCRATCH_VOLUME,
    SHM_MOUNT,
    PodSettings,
    pod_settings,
)
from vrft.pipelines.plan import Plan, Task, build_plan
from vrft.stage import RUN_ID_ENV

Target = Literal["local", "cluster"]

#: Where a cluster pod finds its pipeline run's id: KFP labels every pod of a run with it. Read
#: through the downward API it stays out of the task inputs, and so out of KFP's cache key.
RUN_ID_FIELD_PATH = "metadata.labels['pipeline/runid']"
#: The pipeline parameter that carries the report's config (the whole experiment, one JSON line).
REPORT_CONFIG_PARAMETER = "report_config_json"
#: `vrft schedule --fresh`: every night retrains and re-evaluates (no task's result is reused).
FRESH_OVERRIDES = ("pipeline.caching=false",)


def _place(
    task: dsl.PipelineTask,
    planned: Task,
    *,
    target: Target,
    pipeline: PipelineConfig,
    image: str,
) -> dsl.PipelineTask:
    """Resources, retries, caching and (on a cluster) everything else of the planned task's pod
    (:func:`vrft.pipelines.cluster_settings.pod_settings`: run id, secrets, security context,
    timeout, GPU scheduling, the volumes PyTorch needs on GPU nodes, the source data volume).

    Retries apply on a cluster only (the plan gives GRPO/SFT ``pipeline.train_retries``: they resume
    from their uploaded checkpoints); locally a deterministic failure would only wait and fail again.
    """
    settings = pod_settings(planned, pipeline, image)
    task.set_cpu_limit(settings.cpu_limit).set_memory_limit(settings.memory_limit)
    task.set_cpu_request(settings.cpu_request).set_memory_request(settings.memory_request)
    if settings.gpus:
        task.set_accelerator_type(settings.accelerator).set_accelerator_limit(settings.gpus)
    if settings.retries and target == "cluster":
        task.set_retry(
            num_retries=settings.retries,
            backoff_duration=f"{RETRY_BACKOFF_S}s",
            backoff_factor=RETRY_BACKOFF_FACTOR,
        )
    task.set_caching_options(pipeline.caching)
    if target == "cluster":
        _place_on_cluster(task, settings)
    return task


def _place_on_cluster(task: dsl.PipelineTask, settings: PodSettings) -> None:
    """Apply a task's :class:`~vrft.pipelines.cluster_settings.PodSettings` with kfp-kubernetes."""
    from kfp import kubernetes

    for label, value in settings.labels.items():
        kubernetes.add_pod_label(task, label, value)
    for volume in settings.volumes:
        if volume.kind == "pvc":
            # KFP's PVC mount has no readOnly field (kfp-kubernetes 2.17): read-only by the claim's
            # access mode or the volume.
            kubernetes.mount_pvc(task, pvc_name=volume.claim, mount_path=volume.mount_path)
    for name, path in settings.field_env.items():
        kubernetes.use_field_path_as_env(task, env_name=name, field_path=path)
    kubernetes.use_field_path_as_env(task, env_name=RUN_ID_ENV, field_path=RUN_ID_FIELD_PATH)
    for secret, keys in settings.secret_env.items():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=keys)
    for config_map, keys in settings.config_map_env.items():
        kubernetes.use_config_map_as_env(task, config_map_name=config_map, config_map_key_to_env=keys)
    # The backend adds no privilege escalation, no capabilities and the RuntimeDefault seccomp
    # profile (KFP >= 2.16, see vrft.pipelines.backend_version).
    kubernetes.set_security_context(
        task,
        run_as_user=settings.run_as_user,
        run_as_group=settings.run_as_group,
        run_as_non_root=settings.run_as_non_root,
    )
    if settings.timeout_s:
        kubernetes.set_timeout(task, settings.timeout_s)
    for label, value in settings.node_selector.items():
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    for toleration in settings.tolerations:
        kubernetes.add_toleration(task, **toleration)
    for volume in settings.volumes:
        if volume.kind == "memory":
            kubernetes.empty_dir_mount(
                task,
                volume_name=volume.name,
                mount_path=volume.mount_path,
                medium="Memory",
                size_limit=volume.size,
            )
        elif volume.kind == "ephemeral":
            kubernetes.add_ephemeral_volume(
                task,
                volume_name=volume.name,
                mount_path=volume.mount_path,
                access_modes=["ReadWriteOnce"],
                size=volume.size,
                storage_class_name=volume.storage_class or None,
            )
    for name, value in settings.env.items():
        task.set_env_variable(name, value)


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

    def place(task: dsl.PipelineTask, planned: Task) -> dsl.PipelineTask:
        image = images["report" if planned.stage == "collect" else planned.stage]
        _place(task, planned, target=target, pipeline=p, image=image)
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
