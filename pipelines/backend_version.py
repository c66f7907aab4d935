"""Which Kubeflow Pipelines backend a compiled vrft pipeline needs, read from the pipeline itself.

The SDK (kfp / kfp-kubernetes 2.17) writes features into the IR that older backends either reject
or silently drop. Each :class:`Requirement` names one such feature, the first backend release whose
driver or Argo compiler handles it, and where in kubeflow/pipelines that is decided (files and
commits as of the release tags). :func:`requirements` finds the features a compiled package uses;
:func:`check_backend` compares them with the version the API server reports on
``/apis/v2beta1/healthz`` (``tag_name``, set from the deployment's ``TAG_NAME``).

Hard requirements make a run fail (or hand a task the wrong inputs) on older backends: submitting
there is refused in one line. Soft ones are dropped without failing (the older driver ignores the
field): the run works without the feature, and a warning says what is lost.

>>> parse_version("2.5.0"), parse_version("v2.16.1"), parse_version("2.17.0-rc.1"), parse_version("dev")
((2, 5, 0), (2, 16, 1), (2, 17, 0), None)
>>> format_version((2, 4, 1))
'2.4.1'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Version = tuple[int, int, int]

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Requirement:
    """A feature of the compiled pipeline and the first backend release that supports it."""

    feature: str
    version: Version
    source: str  # where kubeflow/pipelines decides it (file, pull request, commit)
    hard: bool = True


KUBERNETES_CONFIG = Requirement(
    "the Kubernetes task settings as kfp-kubernetes 2.17 writes them (secretNameParameter, "
    "configMapNameParameter, pvcNameParameter, optional)",
    (2, 4, 1),
    "backend/src/v2/cmd/driver/main.go: 2.4.0 decodes --kubernetes_config with jsonpb.UnmarshalString, "
    "which rejects fields its proto lacks; 2.4.1 uses util.UnmarshalString with AllowUnknownFields "
    "(kubeflow/pipelines#11662, cherry-picked in 78fab71ef1)",
)
ROOT_RETRIES = Requirement(
    "task retries (retryPolicy) on tasks of the root DAG",
    (2, 4, 1),
    "backend/src/v2/compiler/argocompiler/container.go getTaskRetryStrategy reads the root DAG's "
    "tasks only; execution-level retry fixed in 2.4.1 (kubeflow/pipelines#11673, in 78fab71ef1)",
)
NESTED_RETRIES = Requirement(
    "task retries inside a ParallelFor or a nested pipeline",
    (2, 14, 0),
    "retryStrategy for nested pipelines (kubeflow/pipelines#11908, beae62fb52); before it "
    "getTaskRetryPolicySpec looked the task up in the root DAG and found nothing",
)
ITERATOR_OUTPUTS = Requirement(
    "outputs of a ParallelFor or nested pipeline (dsl.Collected)",
    (2, 14, 0),
    "dsl.Collected for parameters and artifacts (kubeflow/pipelines#11725, ed828b513a); up to 2.5.0 "
    "the driver does not resolve a loop's outputs for its consumers",
)
EMPTY_DIR = Requirement(
    "emptyDir mounts (/dev/shm)",
    (2, 3, 0),
    "backend/src/v2/driver/driver.go reads GetEmptyDirMounts from 2.3.0",
)
SECURITY_CONTEXT = Requirement(
    "the tasks' securityContext (runAsUser/runAsGroup/runAsNonRoot) and the compiler's hardened "
    "defaults (allowPrivilegeEscalation: false, capabilities dropped, RuntimeDefault seccomp)",
    (2, 16, 0),
    "backend/src/v2/driver/k8s.go applies KubernetesExecutorConfig.securityContext and "
    "backend/src/v2/compiler/argocompiler/security_context.go hardens every container "
    "(kubeflow/pipelines#12782, 07f35fc003); older drivers ignore the field",
    hard=False,
)

#: The oldest backend any compiled vrft pipeline can run on (every package carries Kubernetes settings).
MIN_BACKEND = KUBERNETES_CONFIG.version


def parse_version(tag: str) -> Version | None:
    """``(major, minor, patch)`` of a release tag (``2.5.0``, ``v2.5.0``, ``2.17.0-rc.1``), else None.

    A pre-release counts as its release: a backend built from a release branch already has its
    features.
    """
    match = _VERSION.match(tag.strip())
    if not match:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def format_version(version: Version) -> str:
    return ".".join(str(part) for part in version)


def load_package(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline spec and the platform spec (empty if absent) of a compiled IR YAML."""
    import yaml

    documents = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]
    spec = documents[0] if documents else {}
    platform = documents[1] if len(documents) > 1 else {}
    return spec, platform


def _dags(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(name, dag)`` of the root DAG (``""``) and every component that is a DAG."""
    root = spec.get("root", {}).get("dag")
    if root:
        yield "", root
    for name, component in (spec.get("components") or {}).items():
        if component.get("dag"):
            yield name, component["dag"]


def requirements(spec: Mapping[str, Any], platform: Mapping[str, Any]) -> list[Requirement]:
    """The backend features the compiled pipeline ``spec`` (with its ``platform`` spec) uses."""
    found: list[Requirement] = []
    executors = (
        platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors") or {}
    )
    if executors:
        found.append(KUBERNETES_CONFIG)
    if any(config.get("emptyDirMounts") for config in executors.values()):
        found.append(EMPTY_DIR)
    if any(config.get("securityContext") for config in executors.values()):
        found.append(SECURITY_CONTEXT)
    dag_components = {name for name, _ in _dags(spec) if name}
    for name, dag in _dags(spec):
        tasks = dag.get("tasks") or {}
        if any(task.get("retryPolicy") for task in tasks.values()):
            found.append(ROOT_RETRIES if name == "" else NESTED_RETRIES)
        for task in tasks.values():
            # A sub-DAG (loop body or nested pipeline) whose outputs someone consumes.
            component = task.get("componentRef", {}).get("name", "")
            outputs = (spec.get("components") or {}).get(component, {}).get("dag", {}).get("outputs")
            if component in dag_components and outputs:
                found.append(ITERATOR_OUTPUTS)
    unique = {r.feature: r for r in found}
    return sorted(unique.values(), key=lambda r: (r.version, r.feature))


def needed_version(found: Iterable[Requirement]) -> Version:
    """The oldest backend that runs a pipeline with the ``found`` hard requirements."""
    return max([r.version for r in found if r.hard], default=MIN_BACKEND)


@dataclass(frozen=True)
class BackendCheck:
    """What :func:`check_backend` concluded: refuse (``problem``) and/or warn (``warnings``)."""

    problem: str
    warnings: tuple[str, ...]


def check_backend(tag: str, found: Iterable[Requirement], *, host: str) -> BackendCheck:
    """Compare the backend's ``tag`` (healthz ``tag_name``) with what the pipeline ``found`` needs.

    An unknown or unparsable tag is a problem too: the version cannot be checked, and a run on a
    backend that is too old fails only after its first tasks ran (on GPUs).
    """
    found = list(found)
    need = needed_version(found)
    version = parse_version(tag or "")
    if version is None:
        return BackendCheck(
            f"Kubeflow Pipelines at {host} does not report its version (healthz tag_name {tag or 'missing'!r}): "
            f"this pipeline needs backend {format_version(need)} or later; if it has that, pass "
            "--backend-version VERSION to skip the check",
            (),
        )
    hard = [r for r in found if r.hard and version < r.version]
    if hard:
        first = max(hard, key=lambda r: r.version)
        return BackendCheck(
            f"Kubeflow Pipelines at {host} runs backend {tag}, but this pipeline needs "
            f"{format_version(need)} or later for {first.feature} ({first.source})",
            (),
        )
    soft = tuple(
        f"Kubeflow Pipelines at {host} runs backend {tag}, which ignores {r.feature} "
        f"(from {format_version(r.version)}): the run proceeds without it"
        for r in found
        if not r.hard and version < r.version
    )
    return BackendCheck("", soft)
