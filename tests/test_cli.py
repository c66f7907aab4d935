"""The command line: help lists every command; errors are one line; small commands work."""

import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from vrft.cli import main

COMMANDS = [
    "run",
    "dataset",
    "train",
    "evaluate",
    "report",
    "up",
    "down",
    "compile",
    "submit",
    "schedule",
    "runs",
    "tiny-model",
    "reward",
    "prompt",
]


def test_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "vrft.cli", "--help"], capture_output=True, text=True, timeout=120
    )
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


def test_compile_of_dev_zero_fails_in_one_line_without_reading_it(tmp_path):
    # It used to read /dev/zero until the OOM killer came (23 GB); the limit turns a regression into
    # a MemoryError here instead of a killed machine.
    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    result = subprocess.run(
        [sys.executable, "-m", "vrft.cli", "compile", "/dev/zero", "-o", str(tmp_path / "p.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_memory,
    )
    assert result.returncode == 1
    assert (
        result.stderr
        == "vrft compile: error: /dev/zero: not a regular file (a config is a YAML or JSON file)\n"
    )
    assert not (tmp_path / "p.yaml").exists()


def test_tiny_model_command(tmp_path, capsys):
    assert main(["tiny-model", str(tmp_path / "tiny"), "--family", "qwen2_5_vl"]) == 0
    assert (tmp_path / "tiny" / "model.safetensors").exists()
    assert json.loads((tmp_path / "tiny" / "config.json").read_text())["model_type"] == "qwen2_5_vl"


def test_debug_flag_and_environment_variable_show_the_traceback(capsys, monkeypatch):
    for argv in (["--debug", "reward", "detection", "x"], ["reward", "detection", "x", "--debug"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert (
            "Traceback (most recent call last)" in err and "needs the dataset column 'solution_boxes'" in err
        )
        assert err.strip().splitlines()[-1].startswith("vrft reward: error:")
    monkeypatch.setenv("VRFT_DEBUG", "1")
    assert main(["reward", "detection", "x"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    monkeypatch.setenv("VRFT_DEBUG", "0")
    assert main(["reward", "detection", "x"]) == 1
    assert "Traceback" not in capsys.readouterr().err


READY_THEN_MAIN = (
    "import sys, vrft.cli, vrft.rewards; print('ready', flush=True); sys.exit(vrft.cli.main(sys.argv[1:]))"
)


def test_ctrl_c_and_sigterm_are_one_line_without_traceback():
    # `vrft reward NAME -` blocks reading standard input: a command busy when the signal arrives.
    for sig, code, words in (
        (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
        (signal.SIGTERM, 143, "terminated by signal 15"),
    ):
        process = subprocess.Popen(
            [sys.executable, "-c", READY_THEN_MAIN, "reward", "detection", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 60
        while not _reading_stdin(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # until main() is past its set-up and waits on standard input
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)
        assert process.returncode == code, err
        assert err.strip() == f"vrft reward: {words}", err


def _reading_stdin(pid):
    """Whether ``pid`` is blocked in read(0, ...) (x86-64 and arm64 syscall numbers)."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return len(fields) > 1 and fields[0] in ("0", "63") and fields[1] == "0x0"


def test_run_on_a_corrupted_mlflow_db_is_one_line_naming_the_file(tmp_path, capsys):
    database = tmp_path / "services" / "mlflow.db"
    database.parent.mkdir()
    database.write_bytes(b"not a database " * 300)
    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    assert main(["run", str(config), "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(
        f"vrft run: error: {database}: not a usable MLflow store (sqlite: file is not a database)"
    )
    assert not (tmp_path / "services" / "services.json").exists(), "nothing was started"


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
