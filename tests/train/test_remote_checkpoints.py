"""Mirrored checkpoints (vrft.train.remote_checkpoints) and the completeness check of local ones:
an upload cut short, a damaged object and a truncated weight file are skipped with one line naming
them, never loaded; pruning keeps the newest N."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vrft.config import ConfigError
from vrft.storage import ArtifactStore
from vrft.train.checkpoints import incomplete_reason, latest_checkpoint, resolve_resume
from vrft.train.remote_checkpoints import delete_all, prune, restore_latest, upload_checkpoint


def fake_checkpoint(output_dir: Path, step: int) -> Path:
    """A checkpoint-N directory with the files a Trainer's save has, and the run's logs beside it."""
    path = output_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.full((64,), float(step))}, str(path / "model.safetensors"))
    torch.save({"state": {"step": step}}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    torch.save({"python": step}, path / "rng_state.pth")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    with open(output_dir / "train_log.jsonl", "a") as log:
        log.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\n")
    return path


@pytest.fixture
def mirror(tmp_path: Path) -> str:
    return (tmp_path / "store" / "runs" / "r" / "shots-2" / "grpo" / "checkpoints").as_uri() + "/"


def test_upload_then_restore_on_an_empty_disk(tmp_path: Path, mirror: str) -> None:
    run = tmp_path / "pod-1"
    for step in (3, 6):
        upload_checkpoint(fake_checkpoint(run, step), mirror, keep=2)
    assert ArtifactStore.from_uri(mirror).children() == ["checkpoint-3", "checkpoint-6"]

    restored = restore_latest(mirror, tmp_path / "pod-2")
    assert restored.checkpoint == tmp_path / "pod-2" / "checkpoint-6" and restored.skipped == []
    assert incomplete_reason(restored.checkpoint) == ""
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "pod-2" / "train_log.jsonl").read_text().splitlines()
    ]
    assert steps == [3, 6]  # the logs as they were at that save come back with it
    assert restore_latest(mirror, tmp_path / "pod-2").checkpoint is None  # nothing newer than the disk


def test_an_upload_cut_short_and_a_damaged_object_are_skipped_in_one_line_each(
    tmp_path: Path, mirror: str, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "pod-1"
    for step in (3, 6, 9):
        upload_checkpoint(fake_checkpoint(run, step), mirror, keep=None)
    store_dir = Path(ArtifactStore.from_uri(mirror).root.uri.removeprefix("file://"))
    (store_dir / "checkpoint-9" / "manifest.json").unlink()  # the pod died before the manifest went up
    weights = store_dir / "checkpoint-6" / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])  # truncated in the store

    with caplog.at_level(logging.WARNING):
        restored = restore_latest(mirror, tmp_path / "pod-2")
    assert restored.checkpoint == tmp_path / "pod-2" / "checkpoint-3"
    assert len(restored.skipped) == 2 and all(len(line.splitlines()) == 1 for line in restored.skipped)
    assert "checkpoint-9/: no manifest (its upload was cut short)" in restored.skipped[0]
    assert "checkpoint-6/: checkpoint/model.safetensors: size differs" in restored.skipped[1]
    assert "truncated" in restored.skipped[1]
    assert not list((tmp_path / "pod-2").glob(".restore-*"))  # nothing half-written left behind


def test_pruning_keeps_the_newest_complete_ones_and_drops_cut_short_uploads(
    tmp_path: Path, mirror: str
) -> None:
    run = tmp_path / "pod"
    for step in (1, 2, 3):
        upload_checkpoint(fake_checkpoint(run, step), mirror, keep=None)
    store = ArtifactStore.from_uri(mirror)
    Path(store.resolve("checkpoint-3").uri.removeprefix("file://"), "manifest.json").unlink()
    assert prune(store, keep=1) == ["checkpoint-3", "checkpoint-1"]
    assert store.children() == ["checkpoint-2"]
    assert delete_all(mirror) == ["checkpoint-2"] and store.children() == []


def test_a_truncated_local_checkpoint_is_skipped_and_named_never_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    fake_checkpoint(run, 3)
    newest = fake_checkpoint(run, 6)
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(run) == run / "checkpoint-3"
    [warning] = [r.getMessage() for r in caplog.records if "checkpoint-6" in r.getMessage()]
    assert "model.safetensors is not a readable safetensors file" in warning and "\n" not in warning

    with pytest.raises(ConfigError) as failure:
        resolve_resume(str(newest), run, "grpo")
    assert len(str(failure.value).splitlines()) == 1 and "model.safetensors" in str(failure.value)

    optimizer = run / "checkpoint-3" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:-64])
    assert incomplete_reason(run / "checkpoint-3") == "optimizer.pt is cut short (no zip central directory)"
    assert latest_checkpoint(run) is None
