"""The task plan: the tasks of a run per sweep iteration, their inputs and order, the iteration bound,
and the peak GPUs it can ask for (checked against every set of tasks that can run at once)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from vrft.components.runtime import stage_config_json
from vrft.experiment import load_experiment
from vrft.pipelines.plan import Plan, Task, build_plan, iteration_peak_gpus, peak_gpus, sweep_configs

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "configs" / "default.yaml"


def plan_of(*overrides: str) -> Plan:
    return build_plan(load_experiment(DEFAULT, list(overrides)))


def test_one_set_of_tasks_per_iteration_then_the_report():
    plan = plan_of("experiment.shots=[1,2]", "experiment.seeds=[3,4]")
    assert plan.iterations == ("shots-1-seed-3", "shots-1-seed-4", "shots-2-seed-3", "shots-2-seed-4")
    per_iteration = ["dataset", "grpo", "sft", "evaluate-base", "evaluate-sft", "evaluate-rft", "collect"]
    assert [t.id for t in plan] == [f"{k}/{name}" for k in plan.iterations for name in per_iteration] + [
        "report"
    ]
    assert len({t.display_name for t in plan}) == len(plan)  # unique: what both UIs show
    assert (
        plan.task("shots-2-seed-4/grpo").display_name
        == "GRPO with verifiable rewards (RFT) (2 shots, seed 4)"
    )
    config = sweep_configs(load_experiment(DEFAULT, ["experiment.shots=[1,2]", "experiment.seeds=[3,4]"]))[3]
    assert plan.task("shots-2-seed-4/grpo").params == {
        "config_json": stage_config_json(config, "grpo"),
        "iteration": "shots-2-seed-4",
    }
    assert plan.task("shots-2-seed-4/evaluate-sft").params["label"] == "sft"


def test_inputs_chain_the_collects_and_the_report_reads_the_last():
    plan = plan_of("experiment.shots=[1,2,4]")
    first, second = plan.task("shots-1/collect"), plan.task("shots-2/collect")
    assert "previous" not in first.inputs and second.inputs["previous"].task == "shots-1/collect"
    assert set(second.inputs) == {"base", "sft", "rft", "previous"}
    assert plan.task("report").inputs["evaluations"].task == "shots-4/collect"
    rft = plan.task("shots-2/evaluate-rft")
    assert rft.inputs["checkpoint"].task == "shots-2/grpo" and rft.inputs["dataset"].task == "shots-2/dataset"
    assert not plan.task("report").cacheable and not first.cacheable and plan.task("shots-1/sft").cacheable


def test_the_base_evaluation_only_when_asked_or_needed_as_the_gate():
    plan = plan_of("pipeline.evaluate_base=false", "evaluate.detection_mode=all_categories")
    assert "shots-4/evaluate-base" not in {t.id for t in plan}
    assert set(plan.task("shots-4/collect").inputs) == {"sft", "rft"}
    gated = plan_of("pipeline.evaluate_base=false")  # the default evaluates through the base model's gate
    assert gated.task("shots-4/evaluate-sft").inputs["gate"].task == "shots-4/evaluate-base"


def test_an_iteration_waits_for_the_gpus_of_the_one_k_before_it():
    plan = plan_of("experiment.shots=[1,2,4,8]", "pipeline.max_parallel_iterations=2")
    assert plan.task("shots-1/dataset").after == plan.task("shots-2/dataset").after == ()
    assert plan.task("shots-4/dataset").after == ("shots-1/evaluate-sft", "shots-1/evaluate-rft")
    assert plan.task("shots-8/dataset").after == ("shots-2/evaluate-sft", "shots-2/evaluate-rft")
    unbounded = plan_of("experiment.shots=[1,2,4,8]", "pipeline.max_parallel_iterations=0")
    assert all(not t.after for t in unbounded)


def test_every_task_comes_after_what_it_waits_for_and_survives_json():
    plan = plan_of("experiment.shots=[1,2,4]")
    seen: set[str] = set()
    for task in plan:
        assert set(task.upstream) <= seen
        seen.add(task.id)
        assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    with pytest.raises(ValueError, match="comes before"):
        Plan("p", "", tuple(reversed(plan.tasks)), plan.iterations)


def _reachable(plan: Plan) -> dict[str, set[str]]:
    below: dict[str, set[str]] = {}
    for task in plan:
        below[task.id] = set()
        for up in task.upstream:
            below[task.id] |= {up} | below[up]
    return below


def brute_force_peak(plan: Plan) -> int:
    """The heaviest set of GPU tasks none of which waits for another, over all such sets."""
    below = _reachable(plan)
    gpu = [t for t in plan if t.gpus]
    best = 0
    for size in range(1, len(gpu) + 1):
        for group in itertools.combinations(gpu, size):
            if all(
                a.id not in below[b.id] and b.id not in below[a.id]
                for a, b in itertools.combinations(group, 2)
            ):
                best = max(best, sum(t.gpus for t in group))
    return best


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_peak_gpus_is_the_largest_set_of_tasks_that_can_run_at_once(k):
    plan = plan_of(
        "experiment.shots=[1,2,4]",
        f"pipeline.max_parallel_iterations={k}",
        "pipeline.train_resources.gpus=4",
        "pipeline.evaluate_resources.gpus=1",
    )
    assert peak_gpus(plan) == brute_force_peak(plan)
    per_iteration = iteration_peak_gpus(plan.of_iteration("shots-1"))
    assert per_iteration == 4 + 4 + 1  # GRPO, SFT and the base evaluation side by side
    assert peak_gpus(plan) == per_iteration * (min(k, 3) if k else 3)


def test_peak_gpus_of_the_paper_table_with_the_default_bound():
    config = load_experiment(ROOT / "configs" / "coco_8cat.yaml")
    assert peak_gpus(build_plan(config)) == 2 * config.pipeline.train_resources.gpus + 1
    multi_node = load_experiment(
        DEFAULT,
        ["pipeline.train_nodes=2", "pipeline.shared_pvc=shared", "pipeline.train_resources.gpus=8"],
    )
    plan = build_plan(multi_node)
    assert plan.task("shots-4/grpo").gpus == 16 and plan.task("shots-4/grpo").resources.gpus == 0
    assert peak_gpus(plan) == 16 + 16 + 1
