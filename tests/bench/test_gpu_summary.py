"""bench/gpu/summary.py turns a `check.sh --memory` output folder into the docs' memory rows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_summary", ROOT / "bench" / "gpu" / "summary.py")
summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summary)


def _result(**changes):
    result = {
        "shape": "2b",
        "device": "NVIDIA H200",
        "num_generations": 8,
        "gradient_checkpointing": True,
        "prompt_tokens": 514,
        "max_completion_length": 256,
        "predicted_gib": 60.0,
        "predicted_phase": "training micro-step",
        "predicted_rollout_gib": 45.0,
        "predicted_train_gib": 60.0,
        "measured_gib": 55.0,
        "measured_rollout_gib": 44.0,
        "measured_train_gib": 55.0,
        "ratio": 60.0 / 55.0,
        "within_20_percent": True,
    }
    return result | changes


def test_memory_mode_prints_only_the_memory_rows(tmp_path, capsys):
    (tmp_path / "stages.tsv").write_text("requirements\t0\t3\nmemory-2b\t0\t200\n")
    rows = [_result(), _result(num_generations=4, measured_gib=None, ratio=None, within_20_percent=None)]
    (tmp_path / "memory.json").write_text(json.dumps({"results": rows}))
    assert summary.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "GRPO (docs/training.md)" not in out and "gpu tests" not in out
    assert (
        "| 2b on NVIDIA H200, G 8, checkpointing on, 514 + 256 tokens | 60.00 GiB (training micro-step) | 55.00 GiB | 45.00 / 44.00 | 60.00 / 55.00 | 1.09 | yes |"
        in out
    )
    assert "| n/a | n/a |" in out  # a row measured on no GPU says so
    assert "| setting | predicted peak | measured peak |" in out


def test_a_failed_memory_stage_says_no_result(tmp_path, capsys):
    (tmp_path / "stages.tsv").write_text("memory-2b\t124\t480\n")
    assert summary.main([str(tmp_path)]) == 0
    assert "no memory result" in capsys.readouterr().out
