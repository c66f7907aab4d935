"""End to end: the whole task plan on the tiny model with vrft's local runner, real S3 (SeaweedFS) and MLflow.

One pipeline run (module fixture: the default experiment as a two-shot sweep, few steps and images)
is inspected from several sides: the report, the MLflow runs, the S3 objects and their manifests per
sweep iteration, secret hygiene, the cache on a second run and after a training-only change, a
prefix swapped for another iteration's, what happens when an artifact is corrupted (in a later stage's
input or in the cache) or a stage fails,
and that a deliberately broken stage trips the regression check and its notice. (One run shared by
all: each pipeline run costs minutes on a 2-core machine.)
"""

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from tests.pipelines.local_sweep import DEFAULT, SWEEP
from vrft.components import evaluate as evaluate_component
from vrft.components.runtime import stage_config_json
from vrft.experiment import load_experiment
from vrft.pipelines.local import run_local
from vrft.storage import ArtifactIntegrityError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

STAGES = (
    "dataset/dataset",
    "grpo/grpo",
    "sft/sft",
    "evaluate-base/evaluation-base",
    "evaluate-sft/evaluation-sft",
    "evaluate-rft/evaluation-rft",
)


@pytest.fixture(scope="module")
def state(local_sweep_run):
    """The suite's shared run of the sweep (tests/pipelines/conftest.py), with its services' environment
    set while this module's tests run."""
    env_before = dict(os.environ)
    os.environ.update(local_sweep_run.env)
    try:
        yield local_sweep_run
    finally:
        os.environ.clear()
        os.environ.update(env_before)


def keys(state, prefix: str) -> list[str]:
    pages = state.s3.get_paginator("list_objects_v2").paginate(Bucket="vrft", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def manifest_sha(state, prefix: str) -> str:
    body = state.s3.get_object(Bucket="vrft", Key=f"{prefix}manifest.json")["Body"].read()
    return hashlib.sha256(body).hexdigest()


def mlflow_runs(state):
    client = MlflowClient(tracking_uri=state.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("default")
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def test_report_has_base_sft_rft_rows(state):
    report = (state.result.report_dir / "report.md").read_text()
    for row in ("| Base |", "| SFT |", "| RFT |", "| Δ (RFT − SFT) |"):
        assert row in report
    assert (state.result.report_dir / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert list((state.result.report_dir / "plots").glob("*.png"))


def test_the_report_has_both_shot_counts(state):
    tables = json.loads((state.result.report_dir / "tables.json").read_text())
    rows = {(row["method"], row["shots"]) for table in tables for row in table["rows"]}
    assert {(m, k) for m in ("sft", "rft", "delta") for k in (1, 2)} <= rows
    assert any(method == "base" for method, _ in rows)  # the base model's row does not depend on shots
    # Each row cites the evaluation artifacts of this run it was built from, not the report stage's copies.
    sources = [source for table in tables for row in table["rows"] for source in row["sources"]]
    assert sources and all(s.startswith(f"s3://vrft/runs/{state.result.run_id}/shots-") for s in sources), (
        sources
    )


def test_mlflow_holds_the_parent_and_every_stage_run(state):
    _, runs = mlflow_runs(state)
    parent = [r for r in runs if r.info.run_id == state.result.mlflow_parent_run_id]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == state.result.mlflow_parent_run_id]
    per_iteration = ["dataset", "evaluate-base", "evaluate-rft", "evaluate-sft", "grpo", "sft"]
    assert sorted(r.info.run_name for r in children) == sorted([*per_iteration, *per_iteration, "report"])
    assert all(r.info.status == "FINISHED" for r in children)
    grpo = [r for r in children if r.info.run_name == "grpo"]
    sft = [r for r in children if r.info.run_name == "sft"]
    assert {r.data.tags["method"] for r in grpo} == {"rft"} and {r.data.tags["method"] for r in sft} == {
        "sft"
    }
    assert sorted(r.data.tags["shots"] for r in grpo) == ["1", "2"]
    assert all("rewards/classification_accuracy/mean" in r.data.metrics for r in grpo)
    assert all(r.data.params["grpo.max_steps"] == "2" for r in grpo)
    assert all("accuracy" in r.data.metrics for r in children if r.info.run_name == "evaluate-rft")
    # Evaluations say what was evaluated once, as `method` (no `label` tag with the same value).
    evaluations = [r for r in children if r.data.tags["stage"] == "evaluate"]
    assert {r.data.tags["method"] for r in evaluations} == {"base", "sft", "rft"}
    assert not any("label" in r.data.tags for r in evaluations)


def test_the_pipeline_run_carries_rft_vs_sft_and_the_report_in_mlflow(state):
    client, runs = mlflow_runs(state)
    parent = client.get_run(state.result.mlflow_parent_run_id)
    assert parent.data.tags["stage"] == "pipeline"
    tables = json.loads((state.result.report_dir / "tables.json").read_text())
    values = {(r["method"], r["shots"]): r["values"]["accuracy"] for t in tables for r in t["rows"]}
    for shots in (1, 2):
        for method, name in (("sft", "sft"), ("rft", "rft"), ("delta", "rft_minus_sft")):
            metric = parent.data.metrics[f"shots-{shots}/accuracy/{name}"]
            assert metric == pytest.approx(values[(method, shots)], abs=1e-3)
        assert f"shots-{shots}/accuracy/base" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.md"} <= artifacts
    experiment = client.get_experiment_by_name("default")
    assert experiment.tags["mlflow.experimentKind"] == "finetuning"  # MLflow's UI opens on the runs
    assert f"#/experiments/{experiment.experiment_id}/runs?" in state.result.comparison_url
    first = json.loads((state.result.report_dir / "regression.json").read_text())
    assert {r["status"] for r in first["runs"]} == {"no_previous"}


# The browser test: Debian's headless Chromium and its chromedriver (`make test` installs them).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=3200,1000",  # wide enough that the grid renders every metric column
)
# Where the screenshots go (default: the test's temporary directory); docs/images/ holds one.
SCREENSHOTS_ENV = "VRFT_SCREENSHOT_DIR"


def _browser_prerequisites() -> tuple[str, str]:
    """Chromium and chromedriver, or the test fails with one line naming what is missing."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", browser), ("chromium-driver", driver)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the dev extra: make setup)")
    if missing:
        pytest.fail(
            f"browser test: {', '.join(missing)} not installed (make test installs them: "
            "apt-get install chromium chromium-driver)",
            pytrace=False,
        )
    return browser, driver


@pytest.fixture
def mlflow_ui(state, tmp_path):
    """`mlflow server` on the run's store (artifacts from its S3), on a free loopback port."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, **state.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(tmp_path / "mlflow-server.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            state.env["MLFLOW_TRACKING_URI"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mlflow server did not start: {(tmp_path / 'mlflow-server.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


@pytest.mark.timeout(600)
def test_mlflow_ui_in_a_real_browser_opens_on_runs_with_rft_vs_sft_and_the_report(state, mlflow_ui, tmp_path):
    browser, driver_path = _browser_prerequisites()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots_dir = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    shots_dir.mkdir(parents=True, exist_ok=True)
    client, _ = mlflow_runs(state)
    experiment = client.get_experiment_by_name("default").experiment_id
    parent = client.get_run(state.result.mlflow_parent_run_id)
    name = parent.info.run_name
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    wait = WebDriverWait(driver, 90)

    def text() -> str:
        return driver.find_element(By.TAG_NAME, "body").text

    try:
        # The link `vrft run` prints opens the experiment on its runs (the model-training section, not
        # the GenAI overview), the pipeline runs only, the comparison metrics as columns.
        driver.get(state.result.comparison_url.replace("http://127.0.0.1:5000", mlflow_ui))
        wait.until(lambda d: name in text() and "rft_minus_sft" in text())
        assert "/runs" in driver.current_url and "overview" not in driver.current_url
        assert "Model training" in text() and "Traces" in text()
        driver.save_screenshot(str(shots_dir / "mlflow-comparison.png"))
        row = next(
            r.get_attribute("row-index")
            for r in driver.find_elements(By.CSS_SELECTOR, "[role=row][row-index]")
            if name in r.text
        )
        shown = {
            cell.get_attribute("col-id"): cell.text
            for cell in driver.find_elements(
                By.CSS_SELECTOR, f"[role=row][row-index='{row}'] [role=gridcell]"
            )
        }
        tables = json.loads((state.result.report_dir / "tables.json").read_text())
        values = {(r["method"], r["shots"]): r["values"]["accuracy"] for t in tables for r in t["rows"]}
        for shots in (1, 2):
            for method, metric in (("sft", "sft"), ("rft", "rft"), ("delta", "rft_minus_sft")):
                cell = shown[f"metrics.`shots-{shots}/accuracy/{metric}`"]
                assert float(cell) == pytest.approx(values[(method, shots)], abs=0.01), (metric, cell, shown)
        # The report is an artifact of the parent run and renders in MLflow's artifact view.
        driver.get(
            f"{mlflow_ui}/#/experiments/{experiment}/runs/{parent.info.run_id}/artifacts/report/report.html"
        )
        frame = wait.until(lambda d: d.find_elements(By.TAG_NAME, "iframe"))[0]
        driver.switch_to.frame(frame)
        wait.until(lambda d: "Δ (RFT − SFT)" in text())
        assert "Regression check" in text() and "Where the results come from" in text()
        driver.switch_to.default_content()
        driver.save_screenshot(str(shots_dir / "mlflow-report.png"))
    finally:
        driver.quit()
    assert (shots_dir / "mlflow-report.png").stat().st_size > 0


def test_each_iteration_keeps_its_own_artifacts_with_a_manifest_in_s3(state):
    run = f"runs/{state.result.run_id}"
    for stage in STAGES:
        one, two = f"{run}/shots-1/{stage}/", f"{run}/shots-2/{stage}/"
        assert f"{one}manifest.json" in keys(state, one) and f"{two}manifest.json" in keys(state, two), stage
    assert f"{run}/sweep/report/report/manifest.json" in keys(state, f"{run}/sweep/report/")
    datasets = [
        json.loads(
            state.s3.get_object(Bucket="vrft", Key=f"{run}/shots-{k}/dataset/dataset/manifest.json")[
                "Body"
            ].read()
        )
        for k in (1, 2)
    ]
    assert datasets[0]["files"] != datasets[1]["files"]  # two different datasets, neither overwritten
    for k in (1, 2):
        assert f"{run}/shots-{k}/grpo/grpo/final/model.safetensors" in keys(state, f"{run}/shots-{k}/grpo/")
    assert not any(
        "/checkpoint-" in k for k in keys(state, f"{run}/")
    )  # resumable states stay on the stage's disk


def test_no_secret_in_mlflow_store_or_logs(state):
    secret = state.env["AWS_SECRET_ACCESS_KEY"]
    assert len(secret) >= 16
    for path in [state.dir / "services" / "mlflow.db", state.result.log_file]:
        assert secret.encode() not in path.read_bytes(), path
    _, runs = mlflow_runs(state)
    for run in runs:
        assert secret not in json.dumps([run.data.params, run.data.tags, list(run.data.metrics)])


def test_what_the_run_keeps_locally_is_private(state):
    """Logs, task directories, the model/dataset cache, the stage cache and the services are 0700
    directories, so nothing in them is another user's to read; the model/dataset cache and the
    services' files are 0600/0700 themselves (SeaweedFS's own .vif files excepted: see test_services)."""
    for part in ("logs", "runs", "cache", "stage-cache", "services"):
        assert (state.dir / part).stat().st_mode & 0o777 == 0o700, part
    wider = [
        f"{path} {mode:o}"
        for part in ("cache", "services")
        for path in (state.dir / part).rglob("*")
        if not path.is_symlink() and (mode := path.stat().st_mode & 0o777) & 0o077 and path.suffix != ".vif"
    ]
    assert wider == [], wider
    assert list(state.dir.glob("runs/*/tasks/*/work")) == [], "a task's scratch directory was left"


def test_the_tasks_were_forked_from_the_runs_fork_server(state):
    log = state.result.log_file.read_text()
    assert log.count("fork server (pid ") == 1 and "tasks are forked from it" in log
    assert "start as fresh processes" not in log


def test_second_run_reuses_cached_stages_and_reruns_collect_and_report(state):
    # One flipped byte in the first run's report object does not stop later runs: the report is
    # never reused, each run writes its own.
    report_key = next(k for k in keys(state, f"runs/{state.result.run_id}/") if k.endswith("/report.md"))
    body = bytearray(state.s3.get_object(Bucket="vrft", Key=report_key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    state.s3.put_object(Bucket="vrft", Key=report_key, Body=bytes(body))
    again = run_local(DEFAULT, SWEEP, state_dir=state.dir, output_dir=state.dir / "again")
    log = again.log_file.read_text()
    assert log.count(f"reused from run {state.result.run_id}") == 12, log[-3000:]  # 2 x 6 stages
    assert log.count("\n===== ") == 3  # a header for each task that ran: the 2 collects and the report
    record = json.loads(again.record_file.read_text())
    statuses = {t["task"]: (t["status"], t["reused_from"]) for t in record["tasks"]}
    assert statuses["shots-2/grpo"] == ("reused", state.result.run_id)
    assert statuses["shots-1/collect"] == statuses["report"] == ("ran", "")
    assert (again.ran, again.reused) == (3, 12)
    # The report always runs (never cached): a new report of this run, built from the reused evaluations.
    assert again.report_uri != state.result.report_uri and f"/runs/{again.run_id}/" in again.report_uri
    _, runs = mlflow_runs(state)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == again.mlflow_parent_run_id]
    assert [r.info.run_name for r in children] == ["report"]
    # Its regression check compares with the first run (what it reported): nothing changed, 0.0.
    checks = json.loads((again.report_dir / "regression.json").read_text())["runs"]
    assert len(checks) == 6 and {c["status"] for c in checks} == {"ok"}
    assert {c["previous_pipeline_run"] for c in checks} == {state.result.run_id}
    assert {c["evaluated_in"] for c in checks} == {state.result.run_id}
    assert all(c["deltas"] and set(c["deltas"].values()) == {0.0} for c in checks)
    report = (again.report_dir / "report.md").read_text()
    assert "no previous run" not in report
    assert (
        report.count(f"vs run {state.result.run_id} (evaluation reused from run {state.result.run_id})") == 6
    )
    assert "(Δ +0.0)" in report and f"shots-2 grpo: reused from run {state.result.run_id}" in report


def test_a_prefix_swapped_for_another_iterations_fails_the_next_stage(state):
    run = f"runs/{state.result.run_id}"
    one, two = f"{run}/shots-1/dataset/dataset/", f"{run}/shots-2/dataset/dataset/"
    recorded = manifest_sha(state, two)  # what KFP recorded in the shots-2 dataset artifact's metadata
    saved = {key: state.s3.get_object(Bucket="vrft", Key=key)["Body"].read() for key in keys(state, two)}
    try:
        state.s3.delete_objects(Bucket="vrft", Delete={"Objects": [{"Key": k} for k in saved]})
        for key in keys(state, one):  # shots-1's complete, self-consistent dataset under shots-2's prefix
            state.s3.copy_object(
                Bucket="vrft", Key=two + key[len(one) :], CopySource={"Bucket": "vrft", "Key": key}
            )
        config = load_experiment(DEFAULT, [*SWEEP[1:], "dataset.shots=2"])
        dataset = SimpleNamespace(metadata={"uri": f"s3://vrft/{two}", "manifest_sha256": recorded})
        evaluation = SimpleNamespace(metadata={}, path=str(state.dir / "unused"), log_metric=lambda *a: None)
        with pytest.raises(ArtifactIntegrityError, match="manifest is not the one its writer published"):
            evaluate_component.run(
                stage_config_json(config, "evaluate"), "swap-check", "base", dataset, evaluation
            )
    finally:
        for key in keys(state, two):
            state.s3.delete_object(Bucket="vrft", Key=key)
        for key, body in saved.items():
            state.s3.put_object(Bucket="vrft", Key=key, Body=body)
    assert manifest_sha(state, two) == recorded


def test_corrupted_artifact_fails_the_next_stage_and_marks_its_run_failed(state):
    s3 = state.s3
    prefix = f"runs/{state.result.run_id}/shots-1/dataset/dataset/"
    dataset_uri = f"s3://vrft/{prefix}"
    manifest = s3.get_object(Bucket="vrft", Key=f"{prefix}manifest.json")["Body"].read()
    victim = next(k for k in keys(state, prefix) if k.endswith(".arrow"))
    original = s3.get_object(Bucket="vrft", Key=victim)["Body"].read()
    corrupted = bytearray(original)
    corrupted[len(corrupted) // 2] ^= 0xFF
    s3.put_object(Bucket="vrft", Key=victim, Body=bytes(corrupted))
    try:
        config = load_experiment(DEFAULT, [*SWEEP[1:], "dataset.shots=1"])
        dataset = SimpleNamespace(
            metadata={"uri": dataset_uri, "manifest_sha256": hashlib.sha256(manifest).hexdigest()}
        )
        evaluation = SimpleNamespace(metadata={}, path=str(state.dir / "unused"), log_metric=lambda *a: None)
        with pytest.raises(ArtifactIntegrityError, match=victim.rsplit("/", 1)[1]):
            evaluate_component.run(
                stage_config_json(config, "evaluate"), "corrupt-check", "base", dataset, evaluation
            )
    finally:
        s3.put_object(Bucket="vrft", Key=victim, Body=original)
    _, runs = mlflow_runs(state)
    failed = [r for r in runs if r.data.tags.get("run_id") == "corrupt-check"]
    assert [r.info.status for r in failed] == ["FAILED"]
    assert "ArtifactIntegrityError" in failed[0].data.tags["error"]


def test_a_failing_stage_stops_the_pipeline_with_a_clear_error(state, capsys):
    from vrft.pipelines.local import PipelineFailed

    with pytest.raises(PipelineFailed, match=r"task shots-1000/dataset .* failed: .*shots.*See .*\.log"):
        run_local(
            DEFAULT,
            [*SWEEP[1:], "dataset.shots=1000", "pipeline.retries=0"],
            state_dir=state.dir,
            output_dir=state.dir / "never",
        )
    assert not (state.dir / "never").exists()
    _, runs = mlflow_runs(state)
    failed = [r for r in runs if r.info.run_name == "dataset" and r.info.status == "FAILED"]
    assert failed and "shots" in failed[0].data.tags["error"]


def test_changing_grpo_steps_reruns_only_grpo_and_its_evaluation(state):
    # Each component gets only its stage's view of the config, so KFP's cache keys of the dataset, SFT
    # and the evaluations that read nothing of grpo stay as they were.
    again = run_local(
        DEFAULT, [*SWEEP, "grpo.max_steps=3"], state_dir=state.dir, output_dir=state.dir / "more-steps"
    )
    _, runs = mlflow_runs(state)
    rerun = sorted(
        r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == again.mlflow_parent_run_id
    )
    assert rerun == ["evaluate-rft", "evaluate-rft", "grpo", "grpo", "report"]
    checks = json.loads((again.report_dir / "regression.json").read_text())["runs"]
    evaluated_in = {(c["series"]["method"], c["series"]["shots"]): c["evaluated_in"] for c in checks}
    assert evaluated_in[("rft", 1)] == evaluated_in[("rft", 2)] == again.run_id  # re-evaluated in this run
    assert evaluated_in[("sft", 1)] == state.result.run_id  # reused
    report = (again.report_dir / "report.md").read_text()
    assert (
        "shots-1 grpo: ran in this run" in report
        and f"shots-1 sft: reused from run {state.result.run_id}" in report
    )
    tables = json.loads((again.report_dir / "tables.json").read_text())
    rows = {(row["method"], row["shots"]) for table in tables for row in table["rows"]}
    assert {(m, k) for m in ("sft", "rft") for k in (1, 2)} <= rows


def test_a_damaged_cached_artifact_reruns_its_stage(state):
    """A cached result is reused only while its artifacts verify: a flipped byte in the shots-1 SFT
    checkpoint makes SFT of shots-1 run again (the other stages come from the cache)."""
    prefix = f"runs/{state.result.run_id}/shots-1/sft/sft/"
    victim = next(k for k in keys(state, prefix) if k.endswith(".safetensors"))
    original = state.s3.get_object(Bucket="vrft", Key=victim)["Body"].read()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    state.s3.put_object(Bucket="vrft", Key=victim, Body=bytes(damaged))
    try:
        again = run_local(DEFAULT, SWEEP, state_dir=state.dir, output_dir=state.dir / "after-damage")
    finally:
        state.s3.put_object(Bucket="vrft", Key=victim, Body=original)
    statuses = {t["task"]: t for t in json.loads(again.record_file.read_text())["tasks"]}
    assert statuses["shots-1/sft"]["status"] == "ran"
    assert (
        "not intact" in statuses["shots-1/sft"]["note"]
        and "SHA-256 differs" in statuses["shots-1/sft"]["note"]
    )
    assert statuses["shots-2/sft"]["status"] == statuses["shots-1/grpo"]["status"] == "reused"
    assert "not reused (cached checkpoint is not intact" in again.log_file.read_text()


# Imported by every Python process of the broken run (through PYTHONPATH), before any vrft module
# binds the name: the answer parser then finds no answer in any completion.
BROKEN_ANSWER_PARSER = """
import vrft.answers
vrft.answers.extract_answer = lambda text: None
"""


@pytest.mark.timeout(900)
def test_a_broken_stage_flips_the_regression_check_and_writes_the_notice(
    state, tmp_path, monkeypatch, httpserver_ipv4
):
    before = json.loads((state.result.report_dir / "regression.json").read_text())
    assert before["status"] == "ok" and not (state.result.report_dir / "regression-notice.md").exists()
    _, runs = mlflow_runs(state)
    base = next(
        r
        for r in runs
        if r.info.run_name == "evaluate-base"
        and r.data.tags.get("mlflow.parentRunId") == state.result.mlflow_parent_run_id
    )
    assert base.data.metrics["accuracy"] > 0.5 and base.data.metrics["format_rate"] > 0.9  # a drop can show

    (tmp_path / "sitecustomize.py").write_text(BROKEN_ANSWER_PARSER)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    )
    httpserver_ipv4.expect_request("/hook", method="POST").respond_with_data("")
    monkeypatch.setenv("VRFT_WEBHOOK_URL", httpserver_ipv4.url_for("/hook"))
    # One shot count, and another evaluation batch size (the same answers): the three evaluations of
    # shots-1 run again, under the broken parser; its dataset and checkpoints come from the cache.
    broken = run_local(
        DEFAULT,
        ["experiment.shots=[1]", *SWEEP[1:], "evaluate.batch_size=4"],
        state_dir=state.dir,
        output_dir=state.dir / "broken",
    )
    _, runs = mlflow_runs(state)
    rerun = sorted(
        r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == broken.mlflow_parent_run_id
    )
    assert rerun == ["evaluate-base", "evaluate-rft", "evaluate-sft", "report"]
    after = json.loads((broken.report_dir / "regression.json").read_text())
    assert after["status"] == "regressed"
    flagged = {item["metric"] for item in after["regressions"]}
    # The reward's strict match reads the answer through vrft's parser (the authors' containment rule,
    # `accuracy`, extracts the answer itself), so the broken parser shows there.
    assert {"base/accuracy_strict", "sft/accuracy_strict", "rft/accuracy_strict"} <= flagged, flagged
    assert "REGRESSED" in (broken.report_dir / "report.md").read_text()
    notice = (broken.report_dir / "regression-notice.md").read_text()
    assert "base/accuracy_strict" in notice and "regression" in notice
    assert [request.get_json()["text"].strip() for request, _ in httpserver_ipv4.log] == [notice.strip()]
