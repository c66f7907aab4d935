"""The command line: help lists every command; errors are one line; small commands work."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vrft.cli import main
from vrft.io import write_manifest

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


# -- every failure one line (issue 21) -------------------------------------------------------------

DEFAULT = str(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")


def _one_line(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vrft {command}: error: "), err
    return lines[0]


def test_prompt_refuses_image_sizes_that_are_not_positive(capsys):
    argv = ["prompt", "detection", "category=cat", "--family", "qwen2_5_vl", "--width", "-5", "--height", "0"]
    assert main(argv) == 1
    assert "--width -5: an image side is a whole number of pixels" in _one_line(
        capsys.readouterr().err, "prompt"
    )


def test_a_plugin_reward_that_returns_or_raises_the_wrong_thing_is_one_line(capsys):
    assert main(["reward", "builtins:print", "hi"]) == 1
    line = _one_line(capsys.readouterr().err, "reward")
    assert "reward builtins:print: returned None; a reward returns a list of one finite number" in line
    assert main(["reward", "builtins:print", "hi", "x=1"]) == 1
    line = _one_line(capsys.readouterr().err, "reward")
    assert "reward builtins:print: raised TypeError: 'x' is an invalid keyword argument" in line


def test_an_unexpected_error_is_one_line_with_its_type(capsys, monkeypatch):
    import vrft.cli

    def broken(args):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(vrft.cli, "_cmd_prompt", broken)
    assert main(["prompt", "existence", "category=cat"]) == 1
    line = _one_line(capsys.readouterr().err, "prompt")
    assert (
        "RuntimeError: first line | second line (unexpected; `vrft --debug prompt ...` shows where)" in line
    )


def test_a_closed_standard_output_ends_the_command_quietly():
    """`vrft up | head -1`: the reader went away; no "Broken pipe", no failure."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "vrft.cli", "prompt", "existence", "category=cat"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, "")


def test_an_argument_that_is_not_utf8_is_one_line_naming_it(tmp_path, capsys):
    name = str(tmp_path / b"caf\xe9.yaml".decode("utf-8", "surrogateescape"))
    assert main(["dataset", "build", name, "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vrft: error: argument '") and "caf\\xe9.yaml' is not UTF-8 text" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("{tmp}/plain", "a plain path or file:// is MLflow's file store"),
        ("gopher://x", "not an MLflow tracking URI"),
        ("sqlite:///{tmp}/missing.db", "no MLflow store at"),
        ("http://127.0.0.1:{port}", "no MLflow server answers there"),
    ],
    ids=["plain path", "unknown scheme", "missing sqlite file", "dead server"],
)
def test_report_on_a_tracking_uri_it_cannot_read_is_one_line_and_creates_nothing(
    tmp_path, capsys, uri, words
):
    import socket

    with socket.socket() as closed:  # bound but never listening: connections to it are refused
        closed.bind(("127.0.0.1", 0))
        uri = uri.format(tmp=tmp_path, port=closed.getsockname()[1])
        assert main(["report", DEFAULT, "-o", str(tmp_path / "report"), "--tracking-uri", uri]) == 1
    assert f"--tracking-uri {uri}: {words}" in _one_line(capsys.readouterr().err, "report")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _evaluation(directory: Path) -> Path:
    directory.mkdir(parents=True)
    summary = {
        "format": "vrft.evaluation/1",
        "label": "base",
        "task": "classification",
        "metrics": {"accuracy": 0.5},
    }
    (directory / "metrics.json").write_text(json.dumps(summary))
    (directory / "predictions.jsonl").write_text("{}\n")
    write_manifest(directory, {"format": "vrft.evaluation/1"})
    return directory


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_report_never_writes_over_its_own_evaluations(tmp_path, capsys):
    evaluation = _evaluation(tmp_path / "ev")
    before = _tree(tmp_path)
    argv = ["report", DEFAULT, "-o", str(evaluation), "--evaluations", str(evaluation), "--overwrite"]
    assert main(argv) == 1
    assert "output is the evaluations[0]" in _one_line(capsys.readouterr().err, "report")
    assert _tree(tmp_path) == before


def test_dataset_build_keeps_its_config_and_files_it_did_not_write(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VRFT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "exp.yaml").write_text(Path(DEFAULT).read_text())
    (folder / "unrelated.txt").write_text("mine")
    assert main(["dataset", "build", str(folder / "exp.yaml"), "-o", str(folder), "--overwrite"]) == 1
    assert "output contains the config file" in _one_line(capsys.readouterr().err, "dataset")
    other = tmp_path / "other"
    other.mkdir()
    (other / "unrelated.txt").write_text("mine")
    assert main(["dataset", "build", str(folder / "exp.yaml"), "-o", str(other), "--overwrite"]) == 1
    line = _one_line(capsys.readouterr().err, "dataset")
    assert "--overwrite replaces only an earlier dataset written by vrft, and this holds other files" in line
    assert sorted(p.name for p in folder.iterdir()) == ["exp.yaml", "unrelated.txt"]
    assert (other / "unrelated.txt").read_text() == "mine" and len(list(other.iterdir())) == 1


def test_an_indivisible_grpo_batch_stops_vrft_run_before_any_service(tmp_path, capsys, monkeypatch):
    from vrft.pipelines.local.services import LocalServices

    def refuse(self, **kwargs):
        raise AssertionError("services would have started")

    monkeypatch.setattr(LocalServices, "start", refuse)
    assert main(["run", DEFAULT, "grpo.num_generations=3", "--state-dir", str(tmp_path / "state")]) == 1
    line = _one_line(capsys.readouterr().err, "run")
    assert "grpo: the generation batch (per_device_train_batch_size 8" in line and "num_generations 3" in line
    assert not (tmp_path / "state").exists()


def test_credentials_that_are_not_a_credentials_file_are_one_line_naming_it(tmp_path, capsys):
    services = tmp_path / "services"
    services.mkdir()
    (services / "aws-credentials").write_text("garbage\n")
    assert main(["up", "--state-dir", str(tmp_path)]) == 1
    assert str(services / "aws-credentials") in _one_line(capsys.readouterr().err, "up")
    assert not (services / "services.json").exists()


def test_runs_ends_with_the_mlflow_comparison_link(monkeypatch, capsys):
    """`vrft runs` against a cluster's MLflow server ($MLFLOW_TRACKING_URI) prints the link to the
    experiment's RFT vs SFT view; with a local store (no UI at that address) it prints none."""
    from types import SimpleNamespace

    import mlflow.tracking

    from vrft.pipelines import kfp_client

    asked = []

    class Client:
        def __init__(self, tracking_uri):
            self.tracking_uri = tracking_uri

        def get_experiment_by_name(self, name):
            asked.append((self.tracking_uri, name))
            return SimpleNamespace(experiment_id="4")

    monkeypatch.setattr(kfp_client, "list_runs", lambda *args, **kwargs: [("run-1", "nightly", "SUCCEEDED")])
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", Client)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.lab.internal")
    assert main(["runs", "--host", "http://kfp.invalid", "--experiment", "nightly"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "run-1  nightly  SUCCEEDED",
        "RFT vs SFT per run in MLflow: https://mlflow.lab.internal/#/experiments/4/runs"
        "?workflowType=machine_learning&viewStateShareKey=vrft-rft-vs-sft",
    ]
    assert asked == [("https://mlflow.lab.internal", "nightly")]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///tmp/mlflow.db")
    assert main(["runs", "--host", "http://kfp.invalid", "--experiment", "nightly"]) == 0
    assert capsys.readouterr().out.splitlines() == ["run-1  nightly  SUCCEEDED"]
