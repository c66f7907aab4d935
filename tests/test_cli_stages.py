"""The stage commands one after another, as a user runs them by hand, tracked in a local MLflow store."""

from pathlib import Path

import pytest

from vrft.cli import main

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "grpo.max_steps=2",
    "sft.max_steps=2",
    "grpo.save_steps=2",
    "sft.save_steps=2",
    "evaluate.max_eval_images=2",
    "dataset.train.n_images=24",
]


def test_dataset_train_evaluate_report_by_hand(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact location is ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.setenv("VRFT_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    monkeypatch.setenv("VRFT_CACHE_DIR", str(tmp_path / "cache"))
    config = str(ROOT / "configs" / "default.yaml")
    data, rft, sft = tmp_path / "data", tmp_path / "rft", tmp_path / "sft"

    assert main(["dataset", "build", config, "-o", str(data), *FAST]) == 0
    assert main(["train", "grpo", config, "-d", str(data), "-o", str(rft), *FAST]) == 0
    assert main(["train", "sft", config, "-d", str(data), "-o", str(sft), *FAST]) == 0
    assert (rft / "final" / "model.safetensors").exists() and (sft / "final" / "model.safetensors").exists()
    assert (
        main(
            ["evaluate", config, "-d", str(data), "-o", str(tmp_path / "eval-base"), "--label", "base", *FAST]
        )
        == 0
    )
    for label, checkpoint in (("sft", sft), ("rft", rft)):
        assert (
            main(
                [
                    "evaluate",
                    config,
                    "-d",
                    str(data),
                    "-m",
                    str(checkpoint / "final"),
                    "-o",
                    str(tmp_path / f"eval-{label}"),
                    "--label",
                    label,
                    *FAST,
                ]
            )
            == 0
        )
    capsys.readouterr()
    assert main(["report", config, "-o", str(tmp_path / "report")]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("report.html")
    report = (tmp_path / "report" / "report.md").read_text()
    for row in ("| Base |", "| SFT |", "| RFT |", "| Δ (RFT − SFT) |"):
        assert row in report
    assert list((tmp_path / "report" / "plots").glob("*rewards.png")), (
        "training runs were not found by the report"
    )
    # Every command ran through the same stage wrapper as the pipeline: one run each, the same tags.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("default").experiment_id])
    by_name = sorted((r.info.run_name, r.data.tags["stage"], r.data.tags.get("method", "")) for r in runs)
    assert by_name == [
        ("dataset", "dataset", ""),
        ("evaluate-base", "evaluate", "base"),
        ("evaluate-rft", "evaluate", "rft"),
        ("evaluate-sft", "evaluate", "sft"),
        ("grpo", "train", "rft"),
        ("report", "report", ""),
        ("sft", "train", "sft"),
    ]
    assert all("label" not in r.data.tags and r.info.status == "FINISHED" for r in runs)


def test_evaluate_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    config = str(ROOT / "configs" / "default.yaml")
    assert main(["evaluate", config, "-d", str(tmp_path / "missing"), "-o", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_a_failing_train_command_ends_its_mlflow_run_failed(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("VRFT_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    monkeypatch.setenv("VRFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    config = str(ROOT / "configs" / "default.yaml")
    assert (
        main(["train", "grpo", config, "-d", str(tmp_path / "missing"), "-o", str(tmp_path / "rft"), *FAST])
        == 1
    )
    assert "Traceback" not in capsys.readouterr().err
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("default").experiment_id])
    assert [(r.info.run_name, r.info.status, r.data.tags["stage"], r.data.tags["method"]) for r in runs] == [
        ("grpo", "FAILED", "train", "rft")
    ]
    assert "missing" in runs[0].data.tags["error"]
    assert runs[0].data.params["grpo.max_steps"] == "2"
