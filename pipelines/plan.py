"""The task plan: what one pipeline run of an experiment does, for every backend.

An experiment config becomes a list of tasks known before anything runs: for each sweep iteration
(each shot count of ``experiment.shots`` times each seed of ``experiment.seeds``, keyed by
:func:`~vrft.components.runtime.iteration_key`) the few-shot dataset, GRPO and SFT on it, the
evaluations of the base model (when needed), of SFT and of RFT, and a ``collect`` task that appends
this iteration's evaluation references to the previous iteration's list; then one report over the
last list::

    shots-1/dataset ─► grpo ─► evaluate-rft ─┐
                    ├► sft ──► evaluate-sft ─┼► collect ─┐
                    └────────► evaluate-base ┘           │
    shots-2/dataset ─► ...                   ──► collect ┴► ... ─► report

Each :class:`Task` names its stage, its parameters (the stage's own view of the config,
:func:`~vrft.components.runtime.stage_config_json`, so a task's inputs change only with what its
stage reads), its upstream inputs (input name -> producing task and output), its display name,
pod resources, the GPUs it holds while it runs, retries, timeout and whether its result may be
reused. Three backends walk the same plan: the Kubeflow DAG (:mod:`vrft.pipelines.dag`, one flat
set of tasks per iteration), the local runner (:mod:`vrft.pipelines.local.runner`, task after
task) and anything else that schedules tasks; :meth:`Plan.graph` is what two of them are compared
by.

``pipeline.max_parallel_iterations`` (k) bounds how many iterations hold GPUs at once: iteration
i's first task runs only after iteration i − k's last GPU tasks (:attr:`Task.after`), so the
iterations form k chains. :func:`peak_gpus` says how many GPUs a run can ask for at once.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from vrft.components.runtime import iteration_key, stage_config_json
from vrft.experiment import ExperimentConfig, Resources

#: The stages a task can run, in the order an iteration runs them.
TASK_STAGES = ("dataset", "grpo", "sft", "evaluate", "collect", "report")
#: The report task's id; it is the only task outside an iteration.
REPORT = "report"
#: Pod resources of a multi-node training task: it only launches and waits for its PyTorchJob.
LAUNCHER_RESOURCES = Resources(cpu="1", memory="4Gi")


@dataclass(frozen=True)
class Upstream:
    """Where an input comes from: output ``output`` of task ``task``."""

    task: str
    output: str


@dataclass(frozen=True)
class Task:
    """One task of a run: a stage with its parameters and inputs, and how it is scheduled."""

    id: str  # "shots-4/grpo", "shots-4-seed-7/evaluate-sft", "report"
    stage: str  # one of TASK_STAGES
    iteration: str  # the sweep iteration ("sweep" for the report)
    display_name: str  # unique in the plan: what the Kubeflow UI and the console show
    params: Mapping[str, str]  # the stage function's parameters: config_json, iteration, label, ...
    inputs: Mapping[str, Upstream]  # input name -> producing task and output
    outputs: tuple[str, ...]
    resources: Resources  # the task's own pod
    gpus: int  # GPUs held while it runs: its pod's, or the PyTorchJob it launches
    retries: int
    timeout_s: int  # 0: no limit
    cacheable: bool  # whether a result of an earlier run with the same inputs may be reused
    after: tuple[str, ...] = ()  # tasks it must wait for without reading their outputs

    @property
    def upstream(self) -> tuple[str, ...]:
        """Every task this one waits for (data inputs and :attr:`after`), sorted."""
        return tuple(sorted({u.task for u in self.inputs.values()} | set(self.after)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stage": self.stage,
            "iteration": self.iteration,
            "display_name": self.display_name,
            "params": dict(self.params),
            "inputs": {name: {"task": u.task, "output": u.output} for name, u in self.inputs.items()},
            "outputs": list(self.outputs),
            "resources": {
                "cpu": self.resources.cpu,
                "memory": self.resources.memory,
                "gpus": self.resources.gpus,
                "accelerator": self.resources.accelerator,
            },
            "gpus": self.gpus,
            "retries": self.retries,
            "timeout_s": self.timeout_s,
            "cacheable": self.cacheable,
            "after": list(self.after),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        return cls(
            id=data["id"],
            stage=data["stage"],
            iteration=data["iteration"],
            display_name=data["display_name"],
            params=dict(data["params"]),
            inputs={name: Upstream(**u) for name, u in data["inputs"].items()},
            outputs=tuple(data["outputs"]),
            resources=Resources(**data["resources"]),
            gpus=data["gpus"],
            retries=data["retries"],
            timeout_s=data["timeout_s"],
            cacheable=data["cacheable"],
            after=tuple(data.get("after", ())),
        )


@dataclass(frozen=True)
class Plan:
    """Every task of one run, in an order that runs each after all it waits for."""

    name: str  # the pipeline's name, vrft-<experiment>
    description: str
    tasks: tuple[Task, ...]
    iterations: tuple[str, ...]  # sweep iterations, in order
    max_parallel_iterations: int = 0  # 0: no bound
    _by_id: dict[str, Task] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_id.update({t.id: t for t in self.tasks})
        seen: set[str] = set()
        for t in self.tasks:
            missing = [u for u in t.upstream if u not in seen]
            if missing:
                raise ValueError(f"plan {self.name}: task {t.id} comes before {', '.join(missing)}")
            seen.add(t.id)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def task(self, task_id: str) -> Task:
        return self._by_id[task_id]

    def of_iteration(self, iteration: str) -> list[Task]:
        return [t for t in self.tasks if t.iteration == iteration]

    def graph(self) -> dict[str, tuple[str, ...]]:
        """Display name -> the display names of the tasks it waits for: the shape two backends'
        graphs are compared by (display names are unique and what both UIs show)."""
        return {
            t.display_name: tuple(sorted(self._by_id[u].display_name for u in t.upstream)) for t in self.tasks
        }

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "description": self.description,
                "iterations": list(self.iterations),
                "max_parallel_iterations": self.max_parallel_iterations,
                "tasks": [t.to_dict() for t in self.tasks],
            },
            sort_keys=True,
        )


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


def iteration_label(config: ExperimentConfig) -> str:
    """How display names say which iteration a task belongs to: ``4 shots``, ``4 shots, seed 7``.

    >>> from vrft.experiment import load_experiment
    >>> iteration_label(load_experiment("configs/default.yaml", ["dataset.shots=4"]).with_seed(7))
    '4 shots, seed 7'
    """
    shots = config.dataset.shots
    label = "all shots" if shots is None else f"{shots} shot" + ("" if shots == 1 else "s")
    seeds = config.experiment.seeds
    return f"{label}, seed {seeds[0]}" if len(seeds) == 1 else label


def build_plan(config: ExperimentConfig) -> Plan:
    """The tasks of one run of ``config``; see the module docstring."""
    p = config.pipeline
    k = p.max_parallel_iterations
    tasks: list[Task] = []
    iterations: list[str] = []
    gpu_sinks: list[tuple[str, ...]] = []  # per iteration: its GPU tasks no other GPU task waits for
    previous_collect = ""
    for n, per_iteration in enumerate(sweep_configs(config)):
        after = gpu_sinks[n - k] if k and n >= k else ()
        iteration = _iteration_tasks(per_iteration, after=after, previous_collect=previous_collect)
        tasks += iteration
        iterations.append(iteration[0].iteration)
        gpu_sinks.append(_gpu_sinks(iteration))
        previous_collect = iteration[-1].id
    tasks.append(
        Task(
            id=REPORT,
            stage="report",
            iteration="sweep",
            display_name="Report: RFT vs SFT",
            params={"config_json": config.to_json(), "run_id": ""},
            inputs={"evaluations": Upstream(previous_collect, "evaluations")},
            outputs=("report",),
            resources=p.report_resources,
            gpus=p.report_resources.gpus,
            retries=p.retries,
            timeout_s=p.timeout_s("report"),
            cacheable=False,  # it compares with the previous run: always run
        )
    )
    return Plan(
        name=f"vrft-{config.experiment.name}",
        description=config.experiment.description or "Visual-RFT vs SFT",
        tasks=tuple(tasks),
        iterations=tuple(iterations),
        max_parallel_iterations=k,
    )


def _iteration_tasks(
    config: ExperimentConfig, *, after: tuple[str, ...], previous_collect: str
) -> list[Task]:
    """One sweep iteration's tasks (``config`` is its own config), its collect task last."""
    p = config.pipeline
    key, label = iteration_key(config), iteration_label(config)
    train_pod = LAUNCHER_RESOURCES if p.train_nodes > 1 else p.train_resources
    tasks: list[Task] = []

    def task(name: str, stage: str, title: str, params: dict[str, str], **kwargs: Any) -> Task:
        if stage in ("dataset", "grpo", "sft", "evaluate"):
            params = {"config_json": stage_config_json(config, stage), "iteration": key, **params}
        tasks.append(
            Task(
                id=f"{key}/{name}",
                stage=stage,
                iteration=key,
                display_name=f"{title} ({label})",
                params=params,
                **kwargs,
            )
        )
        return tasks[-1]

    dataset = task(
        "dataset",
        "dataset",
        "Few-shot dataset",
        {},
        inputs={},
        outputs=("dataset",),
        resources=p.dataset_resources,
        gpus=p.dataset_resources.gpus,
        retries=p.retries,
        timeout_s=p.timeout_s("dataset"),
        cacheable=p.caching,
        after=after,
    )
    data = {"dataset": Upstream(dataset.id, "dataset")}
    trained = {
        method: task(
            method,
            method,
            title,
            {},
            inputs=data,
            outputs=("checkpoint",),
            resources=train_pod,
            gpus=p.train_nodes * p.train_resources.gpus,
            retries=p.train_retries,  # a retry resumes from the checkpoints the stage uploaded
            timeout_s=p.timeout_s(method),
            cacheable=p.caching,
        )
        for method, title in (("grpo", "GRPO with verifiable rewards (RFT)"), ("sft", "SFT baseline"))
    }
    evaluations: dict[str, Task] = {}
    # In existence_gated mode the base evaluation's gate.json is the one gate every checkpoint
    # shares, so the base model is evaluated then whatever pipeline.evaluate_base says.
    gated = needs_base_gate(config)
    for method, title, checkpoint in (
        ("base", "Evaluate base model", None),
        ("sft", "Evaluate SFT", trained["sft"]),
        ("rft", "Evaluate RFT", trained["grpo"]),
    ):
        if method == "base" and not (p.evaluate_base or gated):
            continue
        inputs = dict(data)
        if checkpoint is not None:
            inputs["checkpoint"] = Upstream(checkpoint.id, "checkpoint")
            if gated:
                inputs["gate"] = Upstream(evaluations["base"].id, "evaluation")
        evaluations[method] = task(
            f"evaluate-{method}",
            "evaluate",
            title,
            {"label": method},
            inputs=inputs,
            outputs=("evaluation",),
            resources=p.evaluate_resources,
            gpus=p.evaluate_resources.gpus,
            retries=p.retries,
            timeout_s=p.timeout_s("evaluate"),
            cacheable=p.caching,
        )
    refs = {method: Upstream(t.id, "evaluation") for method, t in evaluations.items()}
    if previous_collect:
        refs["previous"] = Upstream(previous_collect, "evaluations")
    task(
        "collect",
        "collect",
        "This run's evaluations",
        {},
        inputs=refs,
        outputs=("evaluations",),
        resources=p.report_resources,
        gpus=0,
        retries=0,
        timeout_s=p.timeout_s("report"),
        cacheable=False,  # it lists this run's evaluations: always run
    )
    return tasks


def _gpu_sinks(tasks: list[Task]) -> tuple[str, ...]:
    """The GPU tasks of one iteration that no other GPU task of it waits for (directly or not)."""
    gpu = [t for t in tasks if t.gpus > 0]
    below = _reachable(tasks)
    return tuple(t.id for t in gpu if not any(t.id in below[o.id] for o in gpu if o.id != t.id))


def _reachable(tasks: list[Task]) -> dict[str, set[str]]:
    """Task id -> every task it waits for, directly or through others (within ``tasks``)."""
    ids = {t.id for t in tasks}
    found: dict[str, set[str]] = {}
    for t in tasks:  # in plan order: upstream tasks come first
        found[t.id] = set()
        for u in t.upstream:
            if u in ids:
                found[t.id] |= {u} | found[u]
    return found


def iteration_peak(tasks: list[Task]) -> tuple[int, tuple[Task, ...]]:
    """The most GPUs one iteration's tasks hold at once, and those tasks: the heaviest set of its GPU
    tasks none of which waits for another (an iteration has at most a handful of GPU tasks: all sets
    are tried)."""
    gpu = [t for t in tasks if t.gpus > 0]
    below = _reachable(tasks)
    best: tuple[int, tuple[Task, ...]] = (0, ())
    for size in range(1, len(gpu) + 1):
        for group in itertools.combinations(gpu, size):
            if all(
                a.id not in below[b.id] and b.id not in below[a.id]
                for a, b in itertools.combinations(group, 2)
            ):
                total = sum(t.gpus for t in group)
                if total > best[0]:
                    best = (total, group)
    return best


def iteration_peak_gpus(tasks: list[Task]) -> int:
    """The most GPUs one iteration's tasks hold at once (:func:`iteration_peak`)."""
    return iteration_peak(tasks)[0]


def peak_gpus(plan: Plan) -> int:
    """The most GPUs a run of ``plan`` can ask for at once (requests that wait for free GPUs included).

    With ``max_parallel_iterations`` k the iterations form k chains (iteration i waits for i − k),
    and iterations of different chains can run at once: the peak is, over the chains, the sum of
    each chain's largest iteration peak. Without a bound every iteration can run at once.
    """
    peaks = [iteration_peak_gpus(plan.of_iteration(key)) for key in plan.iterations]
    k = plan.max_parallel_iterations
    outside = max((t.gpus for t in plan.tasks if t.iteration not in plan.iterations), default=0)
    if not k or k >= len(peaks):
        return max(sum(peaks), outside)
    chains = [max(peaks[start::k], default=0) for start in range(k)]
    return max(sum(chains), outside)
