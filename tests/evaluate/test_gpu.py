"""Batched greedy evaluation on a CUDA device gives batch-size-1's completions. Marked ``gpu``:
deselected by default, run by ``pytest -m gpu`` (bench/gpu/check.sh); on a CPU it fails unless
VRFT_GPU_TESTS_ON_CPU=1 (the script's dry run).

In fp32 with TF32 off, so that a different batch shape can change no argmax; the bf16 agreement
rate of the 2B-shaped model is a number bench/bench_eval.py reports, not a pass/fail property."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vrft.config import from_dict
from vrft.evaluate import EvaluateConfig, evaluate_checkpoint
from vrft.models.config import ModelConfig

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]


@pytest.fixture
def no_tf32(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Full fp32 matrix products and convolutions (the patch embedding is a Conv3d: cuDNN allows TF32)."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    yield
    torch.set_float32_matmul_precision(precision)


def test_batched_greedy_completions_equal_batch_size_one_on_the_gpu(
    gpu: str, no_tf32: None, tiny_qwen2: ModelConfig, detection_dataset: Path, tmp_path: Path
) -> None:
    model = replace(tiny_qwen2, dtype="float32")
    completions = {}
    for batch_size in (1, 8):
        config = from_dict(
            EvaluateConfig,
            {
                "max_new_tokens": 24,
                "progress": False,
                "batch_size": batch_size,
                "device": gpu,
                "detection_mode": "all_categories",
            },
        )
        out = tmp_path / f"b{batch_size}"
        evaluate_checkpoint(config, detection_dataset, out, model=model)
        lines = (out / "completions.jsonl").read_text().splitlines()
        completions[batch_size] = {c["key"]: c["completion"] for c in map(json.loads, lines)}
    assert len(completions[1]) == 10
    assert any(text.strip() for text in completions[1].values())  # the random model does say something
    assert completions[8] == completions[1]
