"""MLflow tracking: parent and stage runs (also across processes), FAILED marking, secret hygiene,
and the other writers (training callback, evaluation and report runs) going through the same Tracker."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vrft.tracking import (
    MAX_PARAM_VALUE_LENGTH,
    MLFLOW_ARTIFACT_ROOT_ENV,
    PARENT_RUN_ENV,
    REDACTED,
    RunTags,
    Tracker,
    current_git_commit,
    redact,
    redact_text,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


@dataclass
class StorageConfig:
    endpoint: str = "http://127.0.0.1:9000"
    api_token: str = ""
    note: str = ""


@dataclass
class ExperimentConfig:
    seed: int = 0
    beta: float = 0.04
    shots: list[int] = field(default_factory=lambda: [1, 2])
    pad_token: str = "<|endoftext|>"
    prompt: str = ""
    storage: StorageConfig = field(default_factory=StorageConfig)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised MLflow sqlite store, built once: creating the tables takes seconds."""
    import mlflow

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store_dir(template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    root = tmp_path / "mlflow"
    root.mkdir()
    shutil.copyfile(template_db, root / "mlflow.db")
    # A tracker made inside the code under test (log_evaluation) keeps its artifacts here too, not in
    # MLflow's default ./mlruns of the working directory (the checkout).
    monkeypatch.setenv(MLFLOW_ARTIFACT_ROOT_ENV, (root / "artifacts").as_uri())
    return root


@pytest.fixture
def tracker(store_dir: Path) -> Iterator[Tracker]:
    import mlflow

    yield Tracker(f"sqlite:///{store_dir / 'mlflow.db'}", artifact_root=(store_dir / "artifacts").as_uri())
    while mlflow.active_run() is not None:  # a failed test must not leak an active run into the next
        mlflow.end_run("KILLED")


def client(tracker: Tracker):  # noqa: ANN201 - mlflow's client type, imported lazily
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracker.tracking_uri)


def test_parent_and_stage_runs_hold_params_metrics_and_tags(tracker: Tracker) -> None:
    tags = RunTags(
        method="grpo",
        config="coco-base65",
        model="tiny-qwen2-vl",
        dataset="coco",
        shots=8,
        git_commit="abc123",
    ).as_tags()
    cfg = ExperimentConfig(prompt="x" * (MAX_PARAM_VALUE_LENGTH + 50))
    with tracker.parent_run("vrft-test", "pipeline-1", tags) as parent_id:
        assert os.environ[PARENT_RUN_ENV] == parent_id
        with tracker.stage_run("grpo", params=cfg, tags=tags) as stage_id:
            tracker.log_metrics({"loss": 0.5}, step=1)
            tracker.log_metrics({"loss": 0.25}, step=2)
            tracker.log_artifact_uri("checkpoint", "s3://vrft/runs/r1/grpo/")
    assert PARENT_RUN_ENV not in os.environ
    with tracker.parent_run("vrft-test", "ignored when resuming", run_id=parent_id) as resumed_id:
        assert resumed_id == os.environ[PARENT_RUN_ENV] == parent_id
        with tracker.stage_run("report"):
            pass

    mc = client(tracker)
    parent, stage = mc.get_run(parent_id), mc.get_run(stage_id)
    assert parent.info.status == stage.info.status == "FINISHED"
    assert parent.info.run_name == "pipeline-1" and stage.info.run_name == "grpo"
    assert stage.data.tags["mlflow.parentRunId"] == parent_id
    assert stage.info.experiment_id == parent.info.experiment_id
    assert {k: stage.data.tags[k] for k in tags} == tags and stage.data.tags["stage"] == "grpo"
    assert stage.data.tags["artifact.checkpoint"] == "s3://vrft/runs/r1/grpo/"
    params = stage.data.params
    assert (
        params["beta"] == "0.04"
        and params["shots"] == "[1, 2]"
        and params["storage.endpoint"].startswith("http")
    )
    assert params["pad_token"] == "<|endoftext|>", "tokenizer settings are not mistaken for credentials"
    assert len(params["prompt"]) == MAX_PARAM_VALUE_LENGTH and params["prompt"].endswith("...")
    assert [(m.step, m.value) for m in mc.get_metric_history(stage_id, "loss")] == [(1, 0.5), (2, 0.25)]
    experiment = mc.get_experiment(parent.info.experiment_id)
    assert experiment.artifact_location.startswith(tracker.artifact_root + "/vrft-test-")
    found = mc.search_runs([experiment.experiment_id], "tags.method = 'grpo' and tags.stage = 'grpo'")
    assert [r.info.run_id for r in found] == [stage_id]
    children = mc.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(r.info.run_name for r in children) == ["grpo", "report"], "one parent across resumptions"


def test_a_failing_stage_is_marked_failed_with_the_error(tracker: Tracker) -> None:
    with pytest.raises(ZeroDivisionError):
        with tracker.parent_run("vrft-test", "pipeline-2") as parent_id:
            with pytest.raises(ValueError, match="bad batch"):
                with tracker.stage_run("sft") as sft_id:
                    raise ValueError("bad batch 3")
            with tracker.stage_run("evaluate") as eval_id:
                _ = 1 / 0
    mc = client(tracker)
    sft, evaluate, parent = mc.get_run(sft_id), mc.get_run(eval_id), mc.get_run(parent_id)
    assert sft.info.status == "FAILED" and sft.data.tags["error"] == "ValueError: bad batch 3"
    assert evaluate.info.status == "FAILED" and evaluate.data.tags["error"].startswith("ZeroDivisionError")
    assert parent.info.status == "FAILED"


STAGE_PROCESS = textwrap.dedent("""
    from vrft.tracking import Tracker
    tracker = Tracker()
    with tracker.stage_run("evaluate", params={"split": "val"}):
        tracker.log_metrics({"map50": 0.125})
    with tracker.stage_run("report"):
        raise RuntimeError("no predictions")
""")


def test_stage_runs_in_another_process_nest_under_the_parent(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How the local runner runs tasks: a subprocess with the parent run id in its env."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.tracking_uri)
    with tracker.parent_run("vrft-test", "pipeline-3") as parent_id:
        result = subprocess.run(
            [sys.executable, "-c", STAGE_PROCESS],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=False,
        )
    assert result.returncode == 1 and "no predictions" in result.stderr
    mc = client(tracker)
    children = mc.search_runs(
        [mc.get_run(parent_id).info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent_id}'",
        order_by=["attributes.start_time"],
    )
    assert [(r.info.run_name, r.info.status) for r in children] == [
        ("evaluate", "FINISHED"),
        ("report", "FAILED"),
    ]
    assert children[0].data.metrics == {"map50": 0.125} and children[0].data.params == {"split": "val"}
    assert children[1].data.tags["error"] == "RuntimeError: no predictions"


def test_secrets_never_reach_the_store_or_the_logs(
    tracker: Tracker,
    store_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    env_secret, env_password, config_token, url_password = (
        "AKsecret-" + os.urandom(8).hex(),
        "pw-" + os.urandom(8).hex(),
        "tok-" + os.urandom(8).hex(),
        "urlpw-" + os.urandom(8).hex(),
    )
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", env_secret)
    monkeypatch.setenv("VRFT_DB_PASSWORD", env_password)
    cfg = ExperimentConfig(
        prompt=f"uses {env_secret}",
        storage=StorageConfig(
            endpoint=f"http://minio:{url_password}@127.0.0.1:9000",
            api_token=config_token,
            note=f"token is {config_token}; password {env_password}",
        ),
    )
    caplog.set_level(logging.DEBUG)

    with pytest.raises(RuntimeError):
        with tracker.parent_run("vrft-test", f"run-{env_secret}", {"cmd": f"--key {env_password}"}):
            with tracker.stage_run("grpo", params=cfg, tags={"hf_token": config_token}):
                tracker.log_metrics({f"loss-{env_secret}": 1.0})
                tracker.log_artifact_uri("checkpoint", f"s3://vrft/x?sig={env_password}")
                tracker.log_dict("config.json", cfg)
                logging.getLogger("vrft.test").info("stage running")
                raise RuntimeError(f"upload failed for {config_token} at {env_secret}")

    mc = client(tracker)
    (stage,) = mc.search_runs([mc.get_experiment_by_name("vrft-test").experiment_id], "tags.stage = 'grpo'")
    assert stage.data.params["storage.api_token"] == REDACTED
    assert stage.data.params["storage.endpoint"] == f"http://{REDACTED}@127.0.0.1:9000"
    assert stage.data.tags["error"] == f"RuntimeError: upload failed for {REDACTED} at {REDACTED}"
    assert stage.info.status == "FAILED"
    artifacts = sorted(p for p in store_dir.rglob("*") if p.is_file() and p.name != "mlflow.db")
    assert [p.name for p in artifacts] == ["config.json"], "the artifact was written (and is scanned below)"

    stored = b"".join(p.read_bytes() for p in sorted(store_dir.rglob("*")) if p.is_file())
    out, err = capfd.readouterr()
    logs = out + err + caplog.text
    for secret in (env_secret, env_password, config_token, url_password):
        assert secret.encode() not in stored
        assert secret not in logs


def test_redaction_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_" + "x" * 20)
    monkeypatch.setenv("MY_PASSWORD", "abc")  # too short to scrub from other text
    data = {
        "AWS_SECRET_ACCESS_KEY": "s",
        "model": {"eos_token": "<|im_end|>", "max_tokens": 64},
        "hub": {"token": "hf_abcdefgh"},
        "urls": ["ftp://u:p@127.0.0.1/x", "see ghp_" + "x" * 20],
        "note": "the hub token hf_abcdefgh, abc",
        "ok": 3,
    }
    assert redact(data) == {
        "AWS_SECRET_ACCESS_KEY": REDACTED,
        "model": {"eos_token": "<|im_end|>", "max_tokens": 64},
        "hub": {"token": REDACTED},
        "urls": [f"ftp://{REDACTED}@127.0.0.1/x", f"see {REDACTED}"],
        "note": f"the hub token {REDACTED}, abc",
        "ok": 3,
    }
    assert redact_text("a hf_abcdefgh", extra_secrets={"hf_abcdefgh"}) == f"a {REDACTED}"


def test_without_a_tracking_uri_nothing_is_tracked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tracker = Tracker()
    assert not tracker.enabled
    with tracker.parent_run("e", "r", {"a": 1}) as parent_id, tracker.stage_run("grpo", {"x": 1}) as stage_id:
        tracker.log_params({"y": 2})
        tracker.log_metrics({"loss": 1.0}, step=1)
        tracker.log_artifact_uri("ckpt", "s3://b/k/")
        tracker.log_dict("c.json", {"a": 1})
    assert parent_id is None and stage_id is None
    with pytest.raises(KeyError):
        with tracker.stage_run("sft"):
            raise KeyError("still raised")
    assert list(tmp_path.iterdir()) == [], "no ./mlruns or anything else"


def test_logging_outside_a_run_is_an_error(tracker: Tracker) -> None:
    with pytest.raises(RuntimeError, match="no active run"):
        tracker.log_metrics({"loss": 1.0})


def test_git_commit_and_run_tags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    if head.returncode == 0:
        assert current_git_commit() == head.stdout.strip()
    else:
        assert current_git_commit() in (os.environ.get("VRFT_GIT_COMMIT"), "unknown")
    monkeypatch.setenv("VRFT_GIT_COMMIT", "feedbeef")
    assert current_git_commit(tmp_path) == "feedbeef"
    monkeypatch.delenv("VRFT_GIT_COMMIT")
    assert current_git_commit(tmp_path) == "unknown"
    tags = RunTags("sft", "exp", "Qwen2-VL-2B", dataset="lvis", shots=4, git_commit="c0ffee").as_tags("train")
    assert tags == {
        "stage": "train",
        "config": "exp",
        "dataset": "lvis",
        "shots": "4",
        "method": "sft",
        "model": "Qwen2-VL-2B",
        "git_commit": "c0ffee",
    }
    from vrft.experiment import load_experiment

    config = load_experiment(REPO / "configs" / "default.yaml", ["experiment.tags={team: vision}"])
    tags = RunTags.for_experiment(config, method="rft", run_id="r1").as_tags("evaluate")
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", tags["git_commit"])
    assert tags["config_sha256"] == config.digest() and tags["run_id"] == "r1" and tags["team"] == "vision"
    assert tags["seed"] == str(config.grpo.seed) and tags["shots"] == str(config.dataset.shots)


SECRET = "s3cr3t-value-that-must-not-leak"


def test_runs_outside_the_active_one_are_redacted_and_end_failed_with_the_error(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The training callback's path: explicit run ids, no fluent state.
    monkeypatch.setenv("HF_TOKEN", SECRET)
    run_id = tracker.create_run("vrft-test", f"train-{SECRET}", {"stage": "train", "note": f"uses {SECRET}"})
    tracker.log_params({"grpo": {"beta": 0.04}, "storage": {"api_token": "another-secret-1"}}, run_id=run_id)
    tracker.log_params(
        {"grpo": {"beta": 0.5}, "extra": 1}, run_id=run_id, skip_logged=True
    )  # a resumed training
    tracker.log_metrics({"loss": 0.5, f"reward/{SECRET}": 1.0, "nan": float("nan")}, step=3, run_id=run_id)
    tracker.end_run(run_id, RuntimeError(f"reward crashed near {SECRET}"))
    run = client(tracker).get_run(run_id)
    assert (
        run.info.status == "FAILED" and run.data.tags["error"] == "RuntimeError: reward crashed near REDACTED"
    )
    assert run.data.params == {"grpo.beta": "0.04", "storage.api_token": REDACTED, "extra": "1"}
    assert set(run.data.metrics) == {"loss", f"reward/{REDACTED}"}
    assert client(tracker).get_metric_history(run_id, "loss")[0].step == 3
    assert SECRET not in json_dump(run) and run.info.run_name == f"train-{REDACTED}"


def json_dump(run) -> str:  # noqa: ANN001
    import json

    return json.dumps([run.info.run_name, run.data.params, run.data.tags, list(run.data.metrics)])


def test_evaluation_and_report_runs_go_through_the_redacting_tracker(
    tracker: Tracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from vrft.report.runs import log_evaluation

    monkeypatch.setenv("MLFLOW_S3_SECRET_KEY", SECRET)
    output = tmp_path / "eval"
    output.mkdir()
    (output / "metrics.json").write_text("{}")
    result = SimpleNamespace(
        task="detection",
        label="rft",
        output_dir=output,
        metrics={"mAP": 0.5},
        summary={"config": {"endpoint": f"https://user:{SECRET}@host/x", "batch_size": 8}},
    )
    tags = RunTags(method="rft", config="c", model="m", dataset=f"data-{SECRET}")
    run_id = log_evaluation(result, tags, experiment="vrft-test", tracking_uri=tracker.tracking_uri)
    run = client(tracker).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "evaluate"
    assert run.data.params["evaluate.endpoint"] == "https://REDACTED@host/x"
    assert run.data.tags["dataset"] == f"data-{REDACTED}" and run.data.metrics["mAP"] == 0.5
    assert SECRET not in json_dump(run)


def test_a_crashing_training_callback_run_ends_failed(tracker: Tracker, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from vrft.train.callbacks import MlflowCallback, MlflowTarget

    callback = MlflowCallback(
        MlflowTarget(uri=tracker.tracking_uri, experiment="vrft-test", run_name="grpo"),
        {"grpo.max_steps": 2},
        tmp_path,
    )
    state = SimpleNamespace(is_world_process_zero=True, global_step=1)
    callback.on_train_begin(None, state, None)
    callback.on_log(None, state, None, logs={"loss": 1.0})
    callback.on_exception(KeyboardInterrupt())
    run = client(tracker).get_run(callback.run_id)
    assert run.info.status == "KILLED" and run.data.tags["error"].startswith("KeyboardInterrupt")
    # A run handed in by its owner (the pipeline's stage run) is left to that owner.
    owned = tracker.create_run("vrft-test", "stage")
    given = MlflowCallback(MlflowTarget(uri=tracker.tracking_uri, run_id=owned), {}, tmp_path / "other")
    given.on_train_begin(None, state, None)
    given.on_exception(RuntimeError("x"))
    assert client(tracker).get_run(owned).info.status == "RUNNING"


def test_a_corrupted_sqlite_store_is_one_error_naming_the_file(store_dir: Path) -> None:
    from vrft.tracking import TrackingStoreError

    database = store_dir / "mlflow.db"
    data = bytearray(database.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the header's tail and the schema page
    database.write_bytes(bytes(data))
    with pytest.raises(TrackingStoreError, match=f"^{re.escape(str(database))}: not a usable MLflow store"):
        with Tracker(f"sqlite:///{database}").parent_run("vrft-test", "pipeline"):
            pass


def test_a_recreated_store_has_another_identity(tracker: Tracker, store_dir: Path) -> None:
    # Each `vrft run` is a new process: MLflow caches its store (and open file) within one.
    def identity_in_a_new_process() -> str:
        code = "import sys; from vrft.tracking import Tracker; print(Tracker(sys.argv[1]).store_identity())"
        return subprocess.run(
            [sys.executable, "-c", code, tracker.tracking_uri],
            capture_output=True,
            text=True,
            check=True,
            timeout=240,
        ).stdout.strip()

    first = tracker.store_identity()
    assert identity_in_a_new_process() == first
    (store_dir / "mlflow.db").unlink()
    assert identity_in_a_new_process() != first  # MLflow created the tables again: another store
