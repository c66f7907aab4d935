"""vrft.inputs: what a command reads, refused as its output; what --overwrite may replace; tracking URIs."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from vrft.config import from_dict
from vrft.experiment import ExperimentConfig
from vrft.inputs import (
    NotReplaceableError,
    TrackingUriError,
    check_outputs,
    check_replaceable,
    check_tracking_uri,
    command_inputs,
    experiment_inputs,
)
from vrft.io import OutputOverlapError, write_manifest

pytestmark = pytest.mark.timeout(60)


def _output(directory: Path, kind: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "a.txt").write_text("x")
    write_manifest(directory, {"format": f"vrft.{kind}/1"})
    return directory


@pytest.mark.parametrize("kind", ["dataset", "evaluation", "report"])
def test_overwrite_replaces_an_earlier_output_of_the_same_kind_or_an_empty_directory(tmp_path, kind):
    check_replaceable(_output(tmp_path / "earlier", kind), kind)
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", kind)
    check_replaceable(tmp_path / "absent", kind)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")), "holds other files"),
        (lambda p: p.write_text("mine"), "is a file"),
        (lambda p: _output(p, "evaluation"), "holds a vrft evaluation"),
        (lambda p: (p.mkdir(), (p / "manifest.json").write_text("{not json")), "holds other files"),
    ],
    ids=["unrelated folder", "file", "another kind of output", "damaged manifest"],
)
def test_overwrite_never_replaces_anything_else(tmp_path, make, words):
    target = tmp_path / "out"
    make(target)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(
        NotReplaceableError, match=f"replaces only an earlier dataset written by vrft, and this {words}"
    ):
        check_outputs(target, {}, overwrite=True, kind="dataset")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_the_config_file_and_the_experiments_inputs_are_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("VRFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model = tmp_path / "models" / "base"
    model.mkdir(parents=True)
    config = from_dict(
        ExperimentConfig,
        {
            "model": {"name_or_path": str(model)},
            "dataset": {
                "train": {
                    "kind": "coco",
                    "annotations": str(tmp_path / "a.json"),
                    "images": str(tmp_path / "img"),
                }
            },
            "pipeline": {"tracking_uri": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"},
        },
    )
    inputs = command_inputs(
        tmp_path / "exp.yaml", config, dataset=tmp_path / "ds", evaluations=[tmp_path / "ev"]
    )
    for what, output in (
        ("config file", tmp_path),
        ("model.name_or_path", tmp_path / "models"),
        ("dataset.train.images", tmp_path / "img" / "sub"),
        ("pipeline.tracking_uri", tmp_path / "store"),
        ("evaluations[0]", tmp_path / "ev"),
        ("dataset", tmp_path / "ds" / "x"),
    ):
        with pytest.raises(OutputOverlapError, match=re.escape(f"the {what} (")):
            check_outputs(output, {k: v for k, v in inputs.items() if k == what})
    check_outputs(tmp_path / "elsewhere", inputs)


def test_tiny_models_are_inputs_where_they_lie_without_being_built(tmp_path, monkeypatch):
    monkeypatch.setenv("VRFT_CACHE_DIR", str(tmp_path / "cache"))
    shipped = from_dict(ExperimentConfig, {"model": {"name_or_path": "tiny://qwen2_vl-colours"}})
    assert (experiment_inputs(shipped)["model.name_or_path"] / "config.json").is_file()
    random_tiny = from_dict(ExperimentConfig, {"model": {"name_or_path": "tiny://qwen2_vl"}})
    assert (
        experiment_inputs(random_tiny)["model.name_or_path"]
        == tmp_path / "cache" / "models" / "tiny-qwen2_vl"
    )
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("/data/mlruns", "a plain path or file:// is MLflow's file store"),
        ("file:///data/mlruns", "a plain path or file:// is MLflow's file store"),
        ("gopher://x", "not an MLflow tracking URI"),
    ],
)
def test_tracking_uris_mlflow_cannot_use(uri, words, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(TrackingUriError, match=f"--tracking-uri {uri}: {words}"):
        check_tracking_uri(uri, what="--tracking-uri")


def test_a_reader_needs_an_existing_sound_sqlite_store(tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(TrackingUriError, match="no MLflow store at"):
        check_tracking_uri(f"sqlite:///{missing}", what="x", must_exist=True)
    assert not missing.exists()
    check_tracking_uri(f"sqlite:///{missing}", what="x")  # a writer creates it
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(TrackingUriError, match="an empty file, not an MLflow store"):
        check_tracking_uri(f"sqlite:///{tmp_path / 'empty.db'}", what="x", must_exist=True)
    (tmp_path / "garbage.db").write_bytes(b"not sqlite " * 100)
    with pytest.raises(TrackingUriError, match="not a usable MLflow store"):
        check_tracking_uri(f"sqlite:///{tmp_path / 'garbage.db'}", what="x", must_exist=True)


def test_a_server_that_does_not_answer_is_refused_at_once():
    with socket.socket() as probe:  # a port nothing listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        with pytest.raises(
            TrackingUriError,
            match=rf"http://127.0.0.1:{port}: no MLflow server answers there \(connection refused\)",
        ):
            check_tracking_uri(f"http://127.0.0.1:{port}", what="MLFLOW_TRACKING_URI")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_tracking_uri(f"http://127.0.0.1:{server.getsockname()[1]}", what="x")


def test_inputs_of_the_report_command_name_every_evaluation(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    inputs = command_inputs(None, None, evaluations=[tmp_path / "a", tmp_path / "b"])
    assert {k: v for k, v in inputs.items() if v} == {
        "evaluations[0]": tmp_path / "a",
        "evaluations[1]": tmp_path / "b",
    }
