"""What a cluster run needs, checked when the pipeline is compiled instead of an hour into the run.

:func:`check_for_cluster` refuses a config whose stages would fail on the cluster for reasons
known before anything runs: no artifact root (the pods share nothing else), the images' registry
still a placeholder (every pod would sit in ``ImagePullBackOff``), source data at paths no pod
can read (relative, or local outside the data volume), requests above limits, or a GRPO/SFT stage whose own
preflight would fail with the number of processes its pod will launch: the batch arithmetic of
trl (:func:`vrft.train.config.check_batch_divisibility`), the DeepSpeed file, and whether the
train split, whose size follows from the dataset config (k shots × categories), can fill one
step's prompts (:func:`vrft.train.config.check_prompts_per_step`). Each sweep iteration is
checked with its own shot count. The problems come back as one line.
"""

from __future__ import annotations

from vrft.config import ConfigError
from vrft.data.config import DatasetConfig
from vrft.experiment import ExperimentConfig
from vrft.pipelines.plan import sweep_configs

#: Registries that no real cluster pulls vrft's images from: the default and the docs' example.
PLACEHOLDER_REGISTRIES = ("ghcr.io/vrft",)
_EXAMPLE_DOMAINS = ("example.com", "example.org", "example.net")


def placeholder_registry(registry: str) -> bool:
    """Whether ``registry`` is the default or a documentation example rather than a real one.

    >>> placeholder_registry("registry.example.com/ml"), placeholder_registry("ghcr.io/my-lab")
    (True, False)
    """
    registry = registry.strip().rstrip("/")
    host = registry.split("/", 1)[0].split(":", 1)[0]
    return registry in PLACEHOLDER_REGISTRIES or any(
        host == d or host.endswith("." + d) for d in _EXAMPLE_DOMAINS
    )


def expected_train_rows(dataset: DatasetConfig) -> int | None:
    """The train split's size as the dataset config fixes it, or None where only the data can tell.

    k-shot detection and classification take ``shots`` images per category/class (one row each),
    grounding ``shots`` rows in total; ``shots: null`` and open-vocabulary sampling depend on the
    source.

    >>> from vrft.config import from_dict
    >>> expected_train_rows(from_dict(DatasetConfig, {"preset": "coco_8", "shots": 2,
    ...     "train": {"kind": "coco", "annotations": "a.json", "images": "img"}}))
    16
    """
    from vrft.data.build import resolve_plan

    if dataset.shots is None:
        return None
    plan = resolve_plan(dataset)
    if plan.task == "grounding":
        return dataset.shots
    if plan.mode != "k_shot" or not plan.categories:
        return None
    return dataset.shots * len(plan.categories)


def training_problems(config: ExperimentConfig) -> list[str]:
    """The GRPO/SFT preflight with the processes the training pod launches, for one per-shot config."""
    from vrft.train.config import check_batch_divisibility, check_prompts_per_step, deepspeed_config_path

    processes = config.pipeline.training_processes()
    rows = expected_train_rows(config.dataset)
    where = f"shots {config.dataset.shots}" if config.dataset.shots is not None else "all shots"
    problems = []
    for method in ("grpo", "sft"):
        stage = getattr(config, method)
        try:
            deepspeed_config_path(stage, launched=False)
            if method == "grpo":
                check_batch_divisibility(stage, processes)
                if rows is not None:
                    check_prompts_per_step(stage, processes, rows)
        except ConfigError as exc:
            problems.append(f"{where}, {processes} training process(es): {exc}")
    return problems


def source_problems(config: ExperimentConfig) -> list[str]:
    """Source paths no cluster pod can read: relative paths, and local paths outside the data volume.

    A pod sees ``s3://`` objects (through the store's credentials) and, when ``pipeline.data_pvc``
    is set, the files under ``pipeline.data_mount``; nothing of the machine that compiled the run.
    """
    import posixpath

    from vrft.data.remote import is_remote

    p = config.pipeline
    mount = posixpath.normpath(p.data_mount)
    hint = (
        f"use s3://bucket/key, or a path under pipeline.data_mount ({mount}/...)"
        if p.data_pvc
        else "use s3://bucket/key, or set pipeline.data_pvc (a PersistentVolumeClaim with the data) "
        f"and a path under pipeline.data_mount ({mount}/...)"
    )
    problems = []
    for where, source in (("train", config.dataset.train), ("eval", config.dataset.eval)):
        if source is None:
            continue
        if source.kind in ("shapes", "shapes_classification"):  # generated: its path is an output
            if source.path and not source.path.startswith("/"):
                problems.append(
                    f"dataset.{where}.path {source.path!r} is relative: leave it empty on a cluster "
                    "(the files are generated into the pod's scratch volume)"
                )
            continue
        for key in ("annotations", "images", "path"):
            value = getattr(source, key)
            if not value or is_remote(value):
                continue
            if not value.startswith("/"):
                problems.append(f"dataset.{where}.{key} {value!r} is a relative path no pod has: {hint}")
            elif not (p.data_pvc and posixpath.normpath(value).startswith(mount + "/")):
                problems.append(
                    f"dataset.{where}.{key} {value!r} is a local path no pod mounts"
                    + (f" (the data volume is at {mount})" if p.data_pvc else "")
                    + f": {hint}"
                )
    return problems


def resource_problems(config: ExperimentConfig) -> list[str]:
    """Requests above limits, or quantities Kubernetes would reject."""
    from vrft.components.resources import request_problems

    p = config.pipeline
    problems = []
    for name in ("dataset_resources", "train_resources", "evaluate_resources", "report_resources"):
        r = getattr(p, name)
        problems += request_problems(name, r.cpu, r.memory, r.cpu_request, r.memory_request)
    return problems


def cluster_problems(config: ExperimentConfig) -> list[str]:
    """Everything :func:`check_for_cluster` would refuse, one sentence each."""
    p = config.pipeline
    problems = []
    if not p.artifact_root:
        problems.append(
            "pipeline.artifact_root is empty: a cluster run needs a store every pod can reach "
            "(s3://bucket/prefix)"
        )
    elif p.artifact_root.startswith("file://"):
        problems.append(
            f"pipeline.artifact_root {p.artifact_root} is a file:// path: the pods of a cluster run "
            "share no file system; use s3://bucket/prefix"
        )
    if placeholder_registry(p.image_registry):
        problems.append(
            f"pipeline.image_registry {p.image_registry!r} is a placeholder: set the registry "
            "`make images VRFT_REGISTRY=...` pushed to"
        )
    problems += source_problems(config)
    problems += resource_problems(config)
    for per_shot in sweep_configs(config):
        problems += training_problems(per_shot)
    return problems


def check_for_cluster(config: ExperimentConfig) -> None:
    """Raise one-line :class:`ConfigError` naming every problem of ``config`` for a cluster run."""
    problems = cluster_problems(config)
    if problems:
        raise ConfigError(f"{config.experiment.name}: not runnable on a cluster: " + "; ".join(problems))
