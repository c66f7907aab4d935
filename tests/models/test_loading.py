"""check_checkpoint and load_processor: a damaged checkpoint is one line naming the file, before any
weights are loaded (issue 21)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vrft.io import write_manifest
from vrft.models.loading import CheckpointError, check_checkpoint, load_processor
from vrft.models.tiny import build_tiny_model

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def model(tiny: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny, tmp_path / "model"))


def test_a_sound_checkpoint_and_a_hub_id_pass(model):
    check_checkpoint(model)
    check_checkpoint("Qwen/Qwen2-VL-2B-Instruct")  # not a local path: from_pretrained decides


def test_a_safetensors_file_with_bytes_appended_is_damaged(model):
    with open(model / "model.safetensors", "ab") as f:
        f.write(b"\0" * 10)
    with pytest.raises(
        CheckpointError, match=r"model.safetensors: truncated or padded: its tensors need \d+ bytes"
    ):
        check_checkpoint(model)


def test_a_sharded_checkpoint_names_the_missing_shard(model):
    (model / "model.safetensors").rename(model / "model-00001-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(
        CheckpointError, match=r"index.json: names the shard 'model-00002-of-00002.safetensors'"
    ):
        check_checkpoint(model)


def test_a_trained_checkpoint_is_checked_against_its_manifest(model):
    write_manifest(model, {"format": "vrft.model/1"})
    (model / "chat_template.jinja").write_text((model / "chat_template.jinja").read_text().upper())
    with pytest.raises(ValueError, match=r"manifest.json: file 'chat_template.jinja': SHA-256 differs"):
        check_checkpoint(model)


def test_a_checkpoint_is_a_directory(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="a checkpoint is a directory"):
        check_checkpoint(tmp_path / "model.safetensors")


def test_a_chat_template_that_does_not_render_is_named_when_the_processor_loads(model):
    (model / "chat_template.jinja").write_text("{% for message in messages %}{{ message")
    with pytest.raises(
        CheckpointError,
        match=r"chat_template.jinja: the chat template does not render a prompt \(TemplateSyntaxError",
    ):
        load_processor(model)
