"""One Airflow task of the pipeline, wherever it runs: ``python -m vrft.pipelines.airflow.task``.

Every executor (a process on the worker, a DockerOperator container, a KubernetesPodOperator pod)
runs this same entry point. It gets its task spec in ``$VRFT_TASK_SPEC`` (base64 of JSON: the
planned task, the metadata of each input, i.e. the artifact URI and manifest SHA-256 its upstream
task pushed to XCom, the pipeline run's id and its MLflow parent run), writes it as the local
runner's ``spec.json`` and runs it with the local runner's task entry point
(:func:`vrft.pipelines.local.task.main`: the same stage function a Kubeflow component calls). The
outputs' metadata (never data) is printed as the last line of stdout (what DockerOperator pushes
to XCom) and, with ``--xcom-file``, written where KubernetesPodOperator's sidecar reads it.

The MLflow parent run of the pipeline run (``pipeline-<run id>``, tagged like ``vrft run``'s) is
found by name or created by the first task; every stage run nests under it; the report task ends it
FINISHED, a failing task ends it FAILED (a retry that succeeds and the report set it right again).

This module imports no Airflow: the stage images do not install it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vrft.pipelines.local.task import ERROR_FILE, OUTPUTS_FILE, SPEC_FILE
from vrft.pipelines.plan import Plan, Task
from vrft.stage import RUN_ID_ENV, WORK_DIR_ENV
from vrft.tracking import PARENT_RUN_ENV, Tracker

#: The task spec, base64 of JSON (no braces, so no template engine ever reads it as markup).
SPEC_ENV = "VRFT_TASK_SPEC"
#: Where local-process and container tasks keep their specs and outputs (and the stage cache).
STATE_DIR_ENV = "VRFT_STATE_DIR"
#: Where KubernetesPodOperator's sidecar reads a pod's XCom value.
KUBERNETES_XCOM_FILE = "/airflow/xcom/return.json"


def airflow_task_id(task_id: str) -> str:
    """The Airflow task id of a planned task (``shots-4/grpo`` -> ``shots-4.grpo``: no ``/`` allowed)."""
    return task_id.replace("/", ".")


def task_dir(state_dir: Path, run_id: str, task_id: str) -> Path:
    """A task's directory under a state directory, as the local runner lays them out."""
    return Path(state_dir) / "runs" / run_id / "tasks" / task_id.replace("/", "-")


def pipeline_run_id(airflow_run_id: str) -> str:
    """The pipeline run's id for an Airflow DAG run: one safe path segment of the artifact prefixes.

    >>> pipeline_run_id("scheduled__2026-12-04T02:00:00+00:00")
    'airflow-scheduled-2026-12-04T02-00-00-00-00'
    """
    return "airflow-" + re.sub(r"[^A-Za-z0-9]+", "-", airflow_run_id).strip("-")


def parent_run_name(run_id: str) -> str:
    return f"pipeline-{run_id}"


def task_spec(plan: Plan, task_id: str, upstream_outputs: Mapping[str, Any], airflow_run_id: str) -> dict:
    """The spec of planned task ``task_id``: the task, its inputs' metadata taken from its upstream
    tasks' outputs (``upstream_outputs``: Airflow task id -> what it pushed to XCom, a mapping or
    its JSON), the pipeline run's id and its parent run."""
    task = plan.task(task_id)
    pushed = {name: _as_mapping(value, name) for name, value in upstream_outputs.items()}
    inputs = {}
    for name, up in task.inputs.items():
        outputs = pushed.get(airflow_task_id(up.task))
        if outputs is None or up.output not in outputs:
            raise ValueError(f"task {task_id}: input {name!r}: task {up.task} pushed no output {up.output!r}")
        inputs[name] = outputs[up.output]
    report = plan.task("report")
    config = json.loads(report.params["config_json"])
    run_id = pipeline_run_id(airflow_run_id)
    return {
        "task": task.to_dict(),
        "inputs": inputs,
        "run_id": run_id,
        "parent": {
            "experiment": config["experiment"]["name"],
            "tracking_uri": config["pipeline"]["tracking_uri"],
            "tags": {
                "run_id": run_id,
                "config": config["experiment"]["name"],
                "config_sha256": plan_digest(plan),
            },
        },
    }


def plan_digest(plan: Plan) -> str:
    """The experiment config's digest (what ``vrft run`` tags its parent run with)."""
    from vrft.experiment import experiment_from_json

    return experiment_from_json(plan.task("report").params["config_json"], source="report config").digest()


def encode_spec(spec: Mapping[str, Any]) -> str:
    return base64.b64encode(json.dumps(spec, sort_keys=True).encode()).decode()


def decode_spec(text: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(text.encode(), validate=True))


def _as_mapping(value: Any, name: str) -> Mapping[str, Any]:
    """An XCom value as pushed: a mapping (local process, pod) or a container's output lines, whose
    last JSON object is its outputs' metadata (anything the container printed after it is ignored)."""
    if isinstance(value, Mapping):
        return value
    lines = value.splitlines() if isinstance(value, str) else value if isinstance(value, list) else []
    for line in reversed(lines):
        line = str(line).strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, Mapping):
                return parsed
    raise ValueError(f"task {name} pushed no outputs' metadata (got {type(value).__name__})")


def ensure_parent_run(spec: Mapping[str, Any]) -> str | None:
    """The id of the pipeline run's MLflow parent run: found by name, else created (not active)."""
    parent = spec["parent"]
    tracker = Tracker(parent["tracking_uri"] or None)
    if not tracker.enabled:
        return None
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracker.tracking_uri)
    name = parent_run_name(spec["run_id"])
    experiment = client.get_experiment_by_name(parent["experiment"])
    if experiment is not None:
        found = client.search_runs(
            [experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'", max_results=10
        )
        found = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
        if found:  # the oldest, should two first tasks have raced
            return min(found, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id
    return tracker.create_run(parent["experiment"], name, parent["tags"])


def run_spec(spec: Mapping[str, Any], task_dir: Path) -> dict[str, dict[str, Any]]:
    """Run the task ``spec`` describes in ``task_dir`` under its parent run; return its outputs'
    metadata. Raises RuntimeError with the task's one-line reason when it fails."""
    from vrft.pipelines.local import task as local_task

    task = Task.from_dict(spec["task"])
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / SPEC_FILE).write_text(json.dumps({"task": spec["task"], "inputs": spec["inputs"]}) + "\n")
    parent_id = ensure_parent_run(spec)
    os.environ[RUN_ID_ENV] = spec["run_id"]
    if parent_id:
        os.environ[PARENT_RUN_ENV] = parent_id
    tracker = Tracker(spec["parent"]["tracking_uri"] or None)
    code = local_task.main([str(task_dir / SPEC_FILE)])
    if code != 0 or not (task_dir / OUTPUTS_FILE).is_file():
        try:
            reason = (task_dir / ERROR_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            reason = f"exit status {code}"
        error = RuntimeError(f"task {task.id} ({task.display_name}) failed: {reason}")
        if parent_id:
            tracker.end_run(parent_id, error=error)
        raise error
    if parent_id and task.stage == "report":  # the last task: the pipeline run is done
        tracker.end_run(parent_id)
    return json.loads((task_dir / OUTPUTS_FILE).read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vrft.pipelines.airflow.task", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--work-dir", help="where the spec and outputs go (default: a new temporary directory)"
    )
    parser.add_argument(
        "--xcom-file", help=f"also write the outputs there (KubernetesPodOperator: {KUBERNETES_XCOM_FILE})"
    )
    args = parser.parse_args(argv)
    if not os.environ.get(SPEC_ENV):
        print(f"vrft.pipelines.airflow.task: ${SPEC_ENV} is not set", file=sys.stderr)
        return 2
    spec = decode_spec(os.environ[SPEC_ENV])
    if args.work_dir:
        base = Path(args.work_dir)
    elif os.environ.get(STATE_DIR_ENV):
        base = task_dir(Path(os.environ[STATE_DIR_ENV]), spec["run_id"], spec["task"]["id"])
    else:  # a pod: its scratch volume when it has one
        base = Path(tempfile.mkdtemp(prefix="vrft-task-", dir=os.environ.get(WORK_DIR_ENV) or None))
    try:
        outputs = run_spec(spec, base)
    except RuntimeError as exc:
        print(f"vrft: {exc}", file=sys.stderr)
        return 1
    line = json.dumps(outputs, sort_keys=True)
    if args.xcom_file:
        Path(args.xcom_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.xcom_file).write_text(line)
    sys.stdout.flush()
    print(line, flush=True)  # the last line: DockerOperator's XCom value
    return 0


if __name__ == "__main__":
    sys.exit(main())
