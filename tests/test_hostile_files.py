"""Every file a command reads, damaged, and every output aimed at an input (issue 21).

The suite grows by family, not by example: each command is described once (:data:`SCENARIOS`: its
command line and the files and directories it reads), each way a file goes bad once
(:data:`DAMAGES`: truncated, emptied, garbage, missing, unreadable), and every command × input file
× damage is a case. Each must end with a non-zero exit, one line on stderr that names the file and
no traceback, nothing written at the output, and every other input unchanged. The second family
aims each command's output at each of its inputs (the input itself, the directory holding it, a
directory inside it) with ``--overwrite`` where the command has it: refused, nothing lost.

Adding a command or an input file to a scenario adds all of its cases.

Tests run as root on some machines, where ``chmod 000`` does not stop a read (root bypasses file
permissions through the ``CAP_DAC_OVERRIDE`` capability). The *unreadable* damage then also drops
that capability (and ``CAP_DAC_READ_SEARCH``) from the calling thread for the duration of the
command — the thread that opens the files — and restores it afterwards; where the process may not
change its capabilities that variant fails, saying why (a skip would hide the untested case).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vrft.cli import main
from vrft.config import from_dict
from vrft.data import DatasetConfig, build_dataset
from vrft.evaluate import evaluate_checkpoint
from vrft.evaluate.config import EvaluateConfig
from vrft.io import write_manifest
from vrft.models.config import ModelConfig
from vrft.models.tiny import build_tiny_model

pytestmark = pytest.mark.timeout(300)

W, H = 64, 48

# -- the files of each kind of input, as the scenarios below lay them out -------------------------

#: A dataset built by `vrft dataset build` (both splits and the manifest).
DATASET_FILES = (
    "manifest.json",
    "dataset_dict.json",
    "eval_ground_truth.json",
    "train/data-00000-of-00001.arrow",
    "train/dataset_info.json",
    "train/state.json",
    "eval/data-00000-of-00001.arrow",
    "eval/dataset_info.json",
    "eval/state.json",
)
#: A model directory as `vrft tiny-model` (and save_pretrained) writes it.
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "processor_config.json",
    "chat_template.jinja",
    "generation_config.json",
)
#: Files a model directory without a manifest may lack: loading falls back to defaults, so a
#: missing one is not an error (a trained checkpoint, with its manifest, may lack none).
OPTIONAL_MODEL_FILES = {
    "generation_config.json": "generation settings default to the model config's",
    "tokenizer_config.json": "the tokenizer is fully described by tokenizer.json",
}
#: An evaluation directory as `vrft evaluate` writes it (detection, existence-gated).
EVALUATION_FILES = (
    "manifest.json",
    "metrics.json",
    "predictions.jsonl",
    "completions.jsonl",
    "coco_gt.json",
    "coco_results.json",
    "gate.json",
)


@dataclass
class Scenario:
    """One command: its arguments (relative to the world directory it runs in) and what it reads."""

    argv: list[str]
    files: dict[str, str]  # label -> file it reads (relative path)
    inputs: list[str]  # every file or directory ("name/") it reads, for the output-vs-input family
    output: str
    overwrite: bool = False  # whether the command has --overwrite
    optional: dict[str, str] = field(default_factory=dict)  # label -> why missing is fine


def _files(prefix: str, names: tuple[str, ...]) -> dict[str, str]:
    return {f"{prefix}/{name}": f"{prefix}/{name}" for name in names}


def _model_files(prefix: str) -> dict[str, str]:
    return _files(prefix, MODEL_FILES)


_TRAIN = {
    **{"config": "experiment.yaml"},
    **_files("dataset", DATASET_FILES),
    **_model_files("model"),
}

SCENARIOS: dict[str, Scenario] = {
    "dataset build": Scenario(
        ["dataset", "build", "dataset.yaml", "-o", "out"],
        {"config": "dataset.yaml", "annotations": "coco/instances.json", "image": "coco/images/004.png"},
        ["dataset.yaml", "coco/instances.json", "coco/images/"],
        "out",
        overwrite=True,
    ),
    "train grpo": Scenario(
        ["train", "grpo", "experiment.yaml", "-d", "dataset", "-o", "out"],
        _TRAIN,
        ["experiment.yaml", "dataset/", "model/", "coco/instances.json", "coco/images/"],
        "out",
        optional={f"model/{name}": why for name, why in OPTIONAL_MODEL_FILES.items()},
    ),
    "train sft": Scenario(
        ["train", "sft", "experiment.yaml", "-d", "dataset", "-o", "out"],
        _TRAIN,
        ["experiment.yaml", "dataset/", "model/", "coco/instances.json", "coco/images/"],
        "out",
        optional={f"model/{name}": why for name, why in OPTIONAL_MODEL_FILES.items()},
    ),
    "evaluate": Scenario(
        ["evaluate", "experiment.yaml", "-d", "dataset", "-m", "checkpoint", "--label", "rft"]
        + ["--gate", "base-eval/gate.json", "-o", "out"],
        {
            "config": "experiment.yaml",
            **_files("dataset", DATASET_FILES),
            **_model_files("checkpoint"),
            "checkpoint/manifest.json": "checkpoint/manifest.json",
            "gate": "base-eval/gate.json",
        },
        ["experiment.yaml", "dataset/", "checkpoint/", "base-eval/gate.json", "model/", "coco/images/"],
        "out",
        overwrite=True,
        # Checkpoints from elsewhere have no manifest: their files are then checked one by one.
        optional={"checkpoint/manifest.json": "a checkpoint not trained by vrft has none"},
    ),
    "report": Scenario(
        ["report", "experiment.yaml", "--evaluations", "base-eval", "--tracking-uri", "sqlite:///mlflow.db"]
        + ["-o", "out"],
        {"config": "experiment.yaml", **_files("base-eval", EVALUATION_FILES), "MLflow store": "mlflow.db"},
        ["experiment.yaml", "base-eval/", "mlflow.db"],
        "out",
        overwrite=True,
    ),
    "compile": Scenario(
        ["compile", "experiment.yaml", "--target", "local", "-o", "out.yaml"],
        {"config": "experiment.yaml"},
        ["experiment.yaml", "model/", "coco/instances.json", "coco/images/"],
        "out.yaml",
    ),
    # Past the config these contact a cluster or start services: only the config is theirs to read.
    "submit": Scenario(
        ["submit", "experiment.yaml", "--host", "http://127.0.0.1:9"], {"config": "experiment.yaml"}, [], ""
    ),
    "schedule": Scenario(
        ["schedule", "experiment.yaml", "--cron", "0 2 * * *", "--host", "http://127.0.0.1:9"],
        {"config": "experiment.yaml"},
        [],
        "",
    ),
    "run": Scenario(
        ["run", "experiment.yaml", "--state-dir", "state", "--output-dir", "out"],
        {"config": "experiment.yaml"},
        ["experiment.yaml", "model/", "coco/instances.json", "coco/images/"],
        "out",
    ),
}


# -- the world every scenario runs in: built once, copied per case ---------------------------------


def _coco(root: Path) -> None:
    """Six images: cat in 1-4, dog in 3-6 (so every image is read by a cat+dog build)."""
    from PIL import Image

    images = [{"id": i, "file_name": f"{i:03d}.png", "width": W, "height": H} for i in range(1, 7)]
    anns = []
    for i in range(1, 7):
        for cat in [c for c, ids in ((1, range(1, 5)), (2, range(3, 7))) if i in ids]:
            box = [2 + 4 * cat, 3, 20, 15]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box, "iscrowd": 0})
    (root / "coco" / "images").mkdir(parents=True)
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    data = {"images": images, "annotations": anns, "categories": categories}
    (root / "coco" / "instances.json").write_text(json.dumps(data))
    for im in images:
        Image.new("RGB", (W, H), (im["id"] * 40, 80, 120)).save(root / "coco" / "images" / im["file_name"])


DATASET_SECTION = {
    "train": {"kind": "coco", "annotations": "coco/instances.json", "images": "coco/images"},
    "categories": ["cat", "dog"],
    "shots": 1,
}
EVALUATE_SECTION = {
    "detection_mode": "existence_gated",
    "max_eval_images": 1,
    "max_new_tokens": 8,
    "device": "cpu",
}


def _experiment() -> dict:
    tiny = {"max_steps": 1, "save_steps": 1, "gradient_checkpointing": False}
    return {
        "experiment": {"name": "hostile"},
        "model": {"name_or_path": "model", "min_pixels": 3136, "max_pixels": 12544},
        "dataset": DATASET_SECTION,
        "grpo": {
            **tiny,
            "per_device_train_batch_size": 2,
            "num_generations": 2,
            "gradient_accumulation_steps": 1,
        },
        "sft": {**tiny, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1},
        "evaluate": EVALUATE_SECTION,
        "report": {"log_to_mlflow": False},
        "pipeline": {"train_resources": {"gpus": 0}},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Source data, configs (flow-style YAML: a cut-off file cannot parse), a built dataset, a base
    model, a trained-style checkpoint (with its manifest), a base evaluation with its gate and an
    MLflow store; all paths relative, so a copy is a complete world of its own."""
    root = tmp_path_factory.mktemp("world")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        _coco(root)
        (root / "dataset.yaml").write_text(json.dumps({"dataset": DATASET_SECTION}))
        (root / "experiment.yaml").write_text(json.dumps(_experiment()))
        build_dataset(from_dict(DatasetConfig, DATASET_SECTION), root / "dataset", progress=False)
        build_tiny_model(root / "model", family="qwen2_vl")
        shutil.copytree(root / "model", root / "checkpoint")
        write_manifest(root / "checkpoint", {"format": "vrft.model/1"})
        evaluate_checkpoint(
            from_dict(EvaluateConfig, EVALUATE_SECTION),
            root / "dataset",
            root / "base-eval",
            model=ModelConfig(name_or_path="model", min_pixels=3136, max_pixels=12544),
            label="base",
        )
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri="sqlite:///mlflow.db").search_experiments()  # creates the tables
    finally:
        os.chdir(cwd)
    found = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    for scenario in SCENARIOS.values():
        assert set(scenario.files.values()) <= found, sorted(set(scenario.files.values()) - found)
    return root


@pytest.fixture(autouse=True)
def _no_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `vrft run` case must stop before the pipeline: one that did not would start services."""
    from vrft.pipelines import local

    def refuse(*args, **kwargs):
        raise AssertionError("the pipeline would have started")

    monkeypatch.setattr(local, "run_local", refuse)


@pytest.fixture
def case_dir(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the world, the working directory of the command."""
    here = tmp_path / "w"
    shutil.copytree(world, here)
    monkeypatch.chdir(here)
    monkeypatch.setenv("VRFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return here


# -- ways a file goes bad --------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(path.name).randbytes(max(64, path.stat().st_size)))


def _remove(path: Path) -> None:
    path.unlink()


def _unreadable(path: Path) -> None:
    path.chmod(0)


DAMAGES: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "emptied": _empty,
    "garbage": _garbage,
    "missing": _remove,
    "unreadable": _unreadable,
}

_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@contextlib.contextmanager
def _permissions_enforced() -> Iterator[None]:
    """Make ``chmod 000`` stop reads by this thread, also as root (see the module docstring)."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        pytest.fail("unreadable as root: cannot read this thread's capabilities (capget failed)")
    saved = data[0].effective
    data[0].effective &= ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH))
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.fail("unreadable as root: this process may not drop CAP_DAC_OVERRIDE (capset failed)")
    try:
        yield
    finally:
        data[0].effective = saved
        assert libc.capset(ctypes.byref(header), data) == 0, "could not restore the thread's capabilities"


# -- checks ----------------------------------------------------------------------------------------


def _snapshot(root: Path, skip: set[str]) -> dict[str, bytes]:
    """Every file's bytes, except ``skip`` (the damaged file) and what is unreadable by design."""
    return {
        rel: p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (rel := p.relative_to(root).as_posix()) not in skip
    }


def _leftovers(root: Path, output: str) -> list[str]:
    """The output, or a temporary sibling of it (``.<name>.building-...``), left by a failed command."""
    if not output:
        return []
    target = root / output
    return sorted(
        p.name
        for p in target.parent.iterdir()
        if p.name == target.name or p.name.startswith(f".{target.name}.")
    )


def _one_line_error(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    lines = err.split("\r")[-1].strip().splitlines()  # after any progress bar's carriage returns
    assert len(lines) == 1, err
    assert lines[0].startswith(f"vrft {command.split()[0]}: error: "), err
    return lines[0]


def _cases() -> list[tuple[str, str, str]]:
    return [
        (name, label, damage)
        for name, scenario in SCENARIOS.items()
        for label in scenario.files
        for damage in DAMAGES
        if not (damage == "missing" and label in scenario.optional)
    ]


@pytest.mark.parametrize(("command", "label", "damage"), _cases(), ids=lambda v: v.replace(" ", "-"))
def test_a_damaged_input_file_is_one_line_naming_it(case_dir, capsys, command, label, damage):
    scenario = SCENARIOS[command]
    damaged = scenario.files[label]
    before = _snapshot(case_dir, {damaged})
    DAMAGES[damage](case_dir / damaged)
    context = _permissions_enforced() if damage == "unreadable" else contextlib.nullcontext()
    with context:
        code = main(list(scenario.argv))
    if damage == "unreadable":
        (case_dir / damaged).chmod(0o644)
    err = capsys.readouterr().err
    assert code != 0, err
    line = _one_line_error(err, command)
    # Named as a path, or as a directory's manifest entry (DIR/manifest.json: file 'train/x.arrow').
    parent, _, name = damaged.rpartition("/")
    named = damaged in line or (bool(parent) and f"'{name}'" in line and parent in line)
    nested = damaged.split("/", 1)
    named = named or (len(nested) == 2 and nested[0] in line and f"'{nested[1]}'" in line)
    assert named, f"{damaged} not named in: {line}"
    assert _leftovers(case_dir, scenario.output) == [], line
    assert _snapshot(case_dir, {damaged}) == before, "an input other than the damaged one changed"


# -- the undamaged world passes the checks (else every case above could fail for another reason) --


@pytest.mark.parametrize("command", ["dataset build", "evaluate", "report", "compile"])
def test_the_undamaged_world_runs(case_dir, capsys, command):
    scenario = SCENARIOS[command]
    assert main(list(scenario.argv)) == 0, capsys.readouterr().err
    assert (case_dir / scenario.output).exists()


@pytest.mark.parametrize("command", ["train grpo", "train sft"])
def test_the_undamaged_world_gets_past_every_check_of_training(case_dir, capsys, command, monkeypatch):
    """Training's checks all come before its trainer is built; stop there (training is tested elsewhere)."""
    import vrft.train.grpo
    import vrft.train.sft

    class TrainerReached(Exception):
        pass

    def stop(*args, **kwargs):
        raise TrainerReached("every check passed")

    monkeypatch.setattr(vrft.train.grpo, "VrftGRPOTrainer", stop)
    monkeypatch.setattr(vrft.train.sft, "VrftSFTTrainer", stop)
    assert main(list(SCENARIOS[command].argv)) == 1
    assert "TrainerReached: every check passed" in capsys.readouterr().err


# -- outputs aimed at inputs ----------------------------------------------------------------------


def _overlap_cases() -> list[tuple[str, str, str]]:
    """Output = the input, the directory holding it, and (for a directory) a directory inside it."""
    return [
        (name, target, relation)
        for name, scenario in SCENARIOS.items()
        for target in scenario.inputs
        for relation in ("is", "contains", "inside")
        if relation != "inside" or target.endswith("/")
    ]


@pytest.mark.parametrize(
    ("command", "target", "relation"), _overlap_cases(), ids=lambda v: v.replace(" ", "-")
)
def test_an_output_aimed_at_an_input_is_refused_and_nothing_is_lost(
    case_dir, capsys, command, target, relation
):
    scenario = SCENARIOS[command]
    target = target.rstrip("/")
    output = {"is": target, "contains": str(Path(target).parent), "inside": f"{target}/sub"}[relation]
    argv = [output if item == scenario.output else item for item in scenario.argv]
    if scenario.overwrite:
        argv.append("--overwrite")
    before = _snapshot(case_dir, set())
    assert main(argv) == 1
    line = _one_line_error(capsys.readouterr().err, command)
    assert "choose an output outside every input" in line, line
    assert _snapshot(case_dir, set()) == before


# -- the local services' credentials file (read by `vrft up` and `vrft run` before SeaweedFS starts) -

#: A missing credentials file is not damage: the next start writes new ones.
CREDENTIAL_DAMAGES = [name for name in DAMAGES if name != "missing"]


@pytest.mark.parametrize("damage", CREDENTIAL_DAMAGES)
def test_damaged_local_service_credentials_are_one_line_naming_the_file(tmp_path, capsys, damage):
    services = tmp_path / "state" / "services"
    services.mkdir(parents=True)
    credentials = services / "aws-credentials"
    credentials.write_text("[default]\naws_access_key_id = vrftkey\naws_secret_access_key = secretsecret\n")
    credentials.chmod(0o600)
    DAMAGES[damage](credentials)
    with _permissions_enforced() if damage == "unreadable" else contextlib.nullcontext():
        code = main(["up", "--state-dir", str(tmp_path / "state")])
    assert code == 1
    line = _one_line_error(capsys.readouterr().err, "up")
    assert str(credentials) in line, line
    assert not (services / "services.json").exists(), "SeaweedFS was started"
    assert not (services / "s3").exists() and not (services / "weed.log").exists()


@pytest.mark.parametrize("existing", ["empty directory", "directory", "file"])
def test_run_refuses_an_existing_output_dir_before_anything_runs(tmp_path, capsys, existing, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "report"
    if existing == "file":
        output.write_text("mine")
    else:
        output.mkdir()
        if existing == "directory":
            (output / "notes.txt").write_text("mine")
    before = _snapshot(tmp_path, set())
    code = main(
        ["run", "--output-dir", str(output), "--state-dir", str(tmp_path / "state"), "--ignore-preflight"]
    )
    assert code == 1  # the autouse fixture fails the test if the pipeline starts
    line = _one_line_error(capsys.readouterr().err, "run")
    assert str(output) in line and "--output-dir" in line and "--overwrite" not in line, line
    assert _snapshot(tmp_path, set()) == before and not (tmp_path / "state").exists()
