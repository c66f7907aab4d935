"""tools/pretrain_tiny.py, the script that makes the default run's small pre-trained base
(the shipped result itself: tests/models/test_shipped_base.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from vrft.models.loading import load_model
from vrft.models.tiny import build_tiny_model

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("pretrain_tiny", ROOT / "tools" / "pretrain_tiny.py")
pretrain_tiny = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pretrain_tiny  # its dataclasses look their module up there
spec.loader.exec_module(pretrain_tiny)
PretrainRecipe, pretrain_tiny_base = pretrain_tiny.PretrainRecipe, pretrain_tiny.pretrain_tiny_base


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VRFT_CACHE_DIR", str(tmp_path / "cache"))


def test_pretraining_is_deterministic_and_writes_a_loadable_fp16_model(tmp_path):
    recipe = PretrainRecipe(
        max_steps=2, batch_size=4, train_per_class=1, validation_per_class=1, image_size=[56, 56]
    )
    first = pretrain_tiny_base(tmp_path / "a", recipe, evaluate=False)
    second = pretrain_tiny_base(tmp_path / "b", recipe, evaluate=False)
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    untrained = load_model(build_tiny_model(tmp_path / "random", size="base", max_pixels=56 * 56), "float32")
    trained = load_model(first, "float32")
    assert (
        str(next(iter(load_model(first, "auto").parameters())).dtype) == "torch.float32"
    )  # fp16 on disk only
    assert any(
        (p.half().float() != q).any()
        for p, q in zip(untrained.parameters(), trained.parameters(), strict=True)
    )  # the SFT steps changed weights
    record = json.loads((first / "recipe.json").read_text())
    assert record["recipe"]["max_steps"] == 2 and "validation" not in record
