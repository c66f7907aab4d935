"""The command line: help lists every command; errors are one line; small commands work."""

import json
import subprocess
import sys

from vrft.cli import main

COMMANDS = ["run", "dataset", "train", "evaluate", "report", "up", "down", "compile", "submit", "schedule", "runs",
            "tiny-model", "reward", "prompt"]


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "vrft.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for command in COMMANDS:
        assert f"    {command}" in out.stdout


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_reward_command_prints_breakdown(capsys):
    completion = '<think>x</think><answer>[{"Position":[100,100,200,200],"Confidence":0.9}]</answer>'
    assert main(["reward", "detection", completion, "solution_boxes=[[100,100,200,200]]"]) == 0
    assert json.loads(capsys.readouterr().out) == {"overall": 2.9, "format": 1.0, "iou": 1.0, "conf": 0.9}


def test_reward_command_error_is_one_line(capsys):
    assert main(["reward", "detection", "x"]) == 1
    err = capsys.readouterr().err
    assert "needs the dataset column 'solution_boxes'" in err and "Traceback" not in err


def test_prompt_command(capsys):
    assert main(["prompt", "existence", "category=cat"]) == 0
    assert "category 'cat'" in capsys.readouterr().out


def test_config_errors_name_file_and_key(tmp_path, capsys):
    bad = tmp_path / "exp.yaml"
    bad.write_text("grpo:\n  num_generatoins: 4\n")
    assert main(["compile", str(bad), "-o", str(tmp_path / "p.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: grpo.num_generatoins: unknown key" in err
    assert not (tmp_path / "p.yaml").exists()


def test_tiny_model_command(tmp_path, capsys):
    assert main(["tiny-model", str(tmp_path / "tiny"), "--family", "qwen2_5_vl"]) == 0
    assert (tmp_path / "tiny" / "model.safetensors").exists()
    assert json.loads((tmp_path / "tiny" / "config.json").read_text())["model_type"] == "qwen2_5_vl"


def test_run_without_a_config_uses_the_packaged_default_from_any_directory(tmp_path, monkeypatch, capsys):
    """`vrft run` outside the checkout: the default experiment ships inside the package."""
    from pathlib import Path

    import vrft
    from vrft.experiment import load_experiment
    from vrft.pipelines import local

    seen = []

    def fake_run_local(config_path, overrides, **kwargs):
        seen.append(load_experiment(config_path, overrides))
        raise ValueError("stop before starting services")

    monkeypatch.setattr(local, "run_local", fake_run_local)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "grpo.max_steps=3"]) == 1
    assert "stop before starting services" in capsys.readouterr().err
    assert seen[0].experiment.name == "default" and seen[0].grpo.max_steps == 3
    packaged = Path(vrft.__file__).parent / "resources" / "default.yaml"
    assert (Path(__file__).parents[1] / "configs" / "default.yaml").resolve() == packaged.resolve()
