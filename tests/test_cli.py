"""The command line: help lists every command, pending ones say so and fail."""

import json
import subprocess
import sys

import pytest

from vrft.cli import PENDING, main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vrft.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ["tiny-model", "dataset", "train", "evaluate", "report", "run", "compile", "submit", "schedule", "runs"]:
        assert command in out.stdout


@pytest.mark.parametrize("name", sorted(PENDING))
def test_pending_commands_say_so_and_fail(name, capsys):
    assert main([*name.split(), "configs/default.yaml"]) == 2
    assert "not implemented yet" in capsys.readouterr().err


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
