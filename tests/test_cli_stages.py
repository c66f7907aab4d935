"""The stage commands one after another, as a user runs them by hand, tracked in a local MLflow store."""

import json
from pathlib import Path

import pytest

from vrft.cli import main
from vrft.models.tiny import build_tiny_model

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


# -- `vrft evaluate -m`: names as configs take them, the checkpoint's own family, damage named (issue 21)


@pytest.fixture(scope="module")
def colours_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VRFT_CACHE_DIR", str(root / "cache"))
        assert (
            main(
                ["dataset", "build", str(ROOT / "configs" / "default.yaml"), "-o", str(root / "data"), *FAST]
            )
            == 0
        )
    return root / "data"


def _evaluate(config_overrides, checkpoint, dataset, out) -> list[str]:
    return [
        "evaluate",
        str(ROOT / "configs" / "default.yaml"),
        "-d",
        str(dataset),
        "-m",
        str(checkpoint),
        "-o",
        str(out),
        "evaluate.max_eval_images=1",
        *config_overrides,
    ]


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    (line,) = err.split("\r")[-1].strip().splitlines()
    assert line.startswith("vrft evaluate: error: "), err
    return line


def test_evaluate_takes_a_tiny_model_by_the_name_configs_use(colours_dataset, tmp_path, capsys):
    assert main(_evaluate([], "tiny://qwen2_vl-colours", colours_dataset, tmp_path / "eval")) == 0
    model = json.loads((tmp_path / "eval" / "metrics.json").read_text())["model"]
    assert model["name_or_path"].endswith("tiny-qwen2_vl-colours") and model["family"] == "qwen2_vl"


def test_a_checkpoint_is_scored_in_its_own_family_or_refused(colours_dataset, tmp_path, capsys):
    """A Qwen2.5-VL checkpoint with the default (Qwen2-VL) config: its own convention, not the config's."""
    checkpoint = build_tiny_model(tmp_path / "q25", family="qwen2_5_vl")
    assert main(_evaluate([], checkpoint, colours_dataset, tmp_path / "eval")) == 0
    model = json.loads((tmp_path / "eval" / "metrics.json").read_text())["model"]
    assert (model["family"], model["convention"]) == ("qwen2_5_vl", "resized_absolute")
    capsys.readouterr()
    assert main(_evaluate(["model.family=qwen2_vl"], checkpoint, colours_dataset, tmp_path / "refused")) == 1
    line = _error_line(capsys.readouterr().err)
    assert f"model.family: 'qwen2_vl', but the checkpoint {checkpoint} is a 'qwen2_5_vl' model" in line
    assert not (tmp_path / "refused").exists()


def test_a_checkpoint_cut_short_is_one_line_naming_its_file(colours_dataset, tmp_path, capsys):
    checkpoint = build_tiny_model(tmp_path / "cut", family="qwen2_vl")
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20000])  # what a save killed mid-write leaves
    capsys.readouterr()
    assert main(_evaluate([], checkpoint, colours_dataset, tmp_path / "eval")) == 1
    assert f"{weights}: truncated or padded" in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "eval").exists()
    assert main(_evaluate([], tmp_path / "no" / "such" / "dir", colours_dataset, tmp_path / "eval")) == 1
    assert "no such checkpoint directory" in _error_line(capsys.readouterr().err)
