"""`vrft airflow dag` writes a self-contained DAG file; `vrft airflow test` (``airflow dags test`` of
the default, local-process tasks) really runs every stage and reports the numbers `vrft run` does."""

import ast
import json
from pathlib import Path

import pytest

from tests.pipelines.local_sweep import DEFAULT, SWEEP
from vrft.cli import main
from vrft.experiment import experiment_from_json, load_experiment
from vrft.pipelines.airflow.local import run_airflow_test


def test_the_dag_file_embeds_the_experiment_and_imports_only_vrft(tmp_path, capsys):
    out = tmp_path / "dags" / "nightly.py"
    assert main(["airflow", "dag", str(DEFAULT), *SWEEP, "-o", str(out), "--cron", "0 2 * * *"]) == 0
    tree = ast.parse(out.read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {name.split(".")[0] for name in imported} == {"vrft"}
    (embedded,) = [
        n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "EXPERIMENT_JSON"
    ]
    config = experiment_from_json(embedded)
    assert (
        config.to_json()
        == load_experiment(DEFAULT, [*SWEEP, "pipeline.airflow.schedule='0 2 * * *'"]).to_json()
    )
    assert config.pipeline.airflow.schedule == "0 2 * * *"


def test_a_dag_file_must_be_a_python_module(tmp_path, capsys):
    assert main(["airflow", "dag", str(DEFAULT), "-o", str(tmp_path / "dag.yaml")]) != 0
    err = capsys.readouterr().err
    assert "dag.yaml" in err and "*.py" in err and "Traceback" not in err
    assert not (tmp_path / "dag.yaml").exists()


#: Metrics that measure the machine, not the stage's result.
TIMING = ("step_time", "timing/", "_runtime", "_per_second")


def stage_metrics(tracking_uri: str) -> dict:
    """(stage run, shots) -> its metrics, without timings, for every stage run of a store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("default").experiment_id], max_results=100)
    return {
        (r.info.run_name, r.data.tags.get("shots")): {
            k: v for k, v in r.data.metrics.items() if not any(t in k for t in TIMING)
        }
        for r in runs
        if "mlflow.parentRunId" in r.data.tags
    }


def numbers(report_dir: Path, shots: int | None = None) -> list:
    """Every table's rows (if ``shots`` is given: the base's and those of ``shots``): method, shots
    and metric values (what the report says, not where from)."""
    tables = json.loads((report_dir / "tables.json").read_text())
    return [
        sorted(
            (row["method"], row["shots"], sorted(row["values"].items()))
            for row in table["rows"]
            if shots is None or row["shots"] in (None, shots)  # the base row has no shot count
        )
        for table in tables
    ]


#: The shared run's sweep with its first shot count only: an iteration depends on its own shot count,
#: never on the others, so this run must reproduce the shared run's 1-shot rows and stage metrics at
#: half the cost of the whole sweep.
ONE_SHOT = [("experiment.shots=[1]" if o.startswith("experiment.shots=") else o) for o in SWEEP]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_airflow_dags_test_reports_the_numbers_of_vrft_run(local_sweep_run, tmp_path, short_tmp_path):
    import psutil
    from mlflow.tracking import MlflowClient

    from vrft.pipelines.local.services import LocalServices

    state = short_tmp_path / "state"
    result = run_airflow_test(DEFAULT, ONE_SHOT, state_dir=state, output_dir=tmp_path / "report")
    assert numbers(result.report_dir) == numbers(local_sweep_run.result.report_dir, shots=1)
    assert all(numbers(result.report_dir))  # rows were compared, in every table
    # Beyond the report: every stage (training losses, rewards, evaluation metrics) computed the same.
    ours = stage_metrics(LocalServices(state / "services").tracking_uri)
    theirs = stage_metrics(local_sweep_run.env["MLFLOW_TRACKING_URI"])
    one_shot = {key: value for key, value in theirs.items() if key[1] == "1"}
    assert {key: value for key, value in ours.items() if key[1] == "1"} == one_shot
    assert ours[("grpo", "1")]["train_loss"] is not None and len(one_shot) == 6 and len(ours) == 7
    # Every stage really ran in this run (a fresh state: nothing could be reused), under its run id.
    tables = json.loads((result.report_dir / "tables.json").read_text())
    sources = [s for table in tables for row in table["rows"] for s in row["sources"]]
    assert sources and all(s.startswith(f"s3://vrft/runs/{result.run_id}/shots-") for s in sources)
    assert result.run_id.startswith("airflow-manual")
    # The `airflow dags test` process forked its dataset, training and evaluation tasks from one fork
    # server, as `vrft run` does.
    assert result.log_file.read_text().count("tasks are forked from it") == 1
    # The same MLflow parent and child runs as `vrft run`, the parent ended by the report.
    services = LocalServices(state / "services")
    client = MlflowClient(tracking_uri=services.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("default").experiment_id], max_results=100)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_name == f"pipeline-{result.run_id}" and parent.info.status == "FINISHED"
    assert parent.data.tags["run_id"] == result.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    per_iteration = ["dataset", "evaluate-base", "evaluate-rft", "evaluate-sft", "grpo", "sft"]
    assert sorted(r.info.run_name for r in children) == sorted([*per_iteration, "report"])
    assert all(r.info.status == "FINISHED" for r in children) and len(runs) == len(children) + 1
    # Nothing is left running: the services stopped, the DAG run's processes ended with it.
    assert services.status() == "stopped"
    left = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(state) in part or str(tmp_path) in part for part in process.info["cmdline"] or ()):
            left.append(process)
    assert not left, left
