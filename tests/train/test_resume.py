"""Resuming: a GRPO run killed with SIGKILL mid-training, then resumed, ends where an uninterrupted run ends.

Setup: 4 training rows, one prompt per step, so an epoch is 4 steps; 8 steps, a checkpoint every 3.
The run is killed once checkpoint-6 is complete and step 7 has started (its rows are recorded), so
the resume starts in the second epoch, two batches into it: the case trl's stock sampler gets
wrong (it would replay the first epoch's order).

What is verified, against an uninterrupted run with the same seed:
* the resumed run starts from checkpoint-6 and stops at step 8 (max_steps), not 14 or 2;
* ``samples.jsonl`` lists each step 1..8 exactly once, with the same dataset rows per step as the
  uninterrupted run: no replayed rows, the data position is restored (including the epoch's order);
  step 7's rows equal those the killed process had started on;
* the learning rate logged at every step equals the uninterrupted run's (scheduler restored);
* the completions sampled after the resume and the final weights equal the uninterrupted run's,
  which holds only if the optimizer state and the RNG states were restored too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from vrft.config import from_dict, to_dict
from vrft.models.config import ModelConfig
from vrft.train import GRPOStageConfig, SFTStageConfig, latest_checkpoint, train_grpo, train_sft
from vrft.train.callbacks import read_jsonl
from vrft.train.checkpoints import is_complete_checkpoint

RUNNER = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from vrft.config import from_dict
    from vrft.models.config import ModelConfig
    from vrft.train import GRPOStageConfig, train_grpo
    config, dataset, output, model = json.loads(sys.argv[1])
    train_grpo(from_dict(GRPOStageConfig, config), dataset, output, model=ModelConfig(**model))
""")


def by_step(path: Path, key: str) -> dict[int, Any]:
    records = [r for r in read_jsonl(path) if key in r]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"{path.name}: a step was recorded twice: {steps}"
    return {r["step"]: r[key] for r in records}


def kill_after(process: subprocess.Popen, run: Path, checkpoint: int, timeout: float = 240) -> dict[str, Any]:
    """SIGKILL ``process`` once ``checkpoint-N`` is complete and step N + 1 has begun; its record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, (
            f"the run ended before it could be killed:\n{process.stderr.read()[-3000:]}"
        )
        started = [r for r in read_jsonl(run / "samples.jsonl") if r["step"] == checkpoint + 1]
        if started and is_complete_checkpoint(run / f"checkpoint-{checkpoint}"):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return started[0]
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"checkpoint-{checkpoint} did not appear within {timeout} s")


def test_sigkill_then_resume_matches_an_uninterrupted_run(
    tiny_model: ModelConfig,
    shapes_dataset: Path,
    tmp_path: Path,
    token_reward: str,
    fast_grpo: dict[str, Any],
) -> None:
    settings = {**fast_grpo, "reward": token_reward, "learning_rate": 1e-2, "max_steps": 8, "save_steps": 3}
    config = from_dict(GRPOStageConfig, settings)
    reference = train_grpo(config, shapes_dataset, tmp_path / "reference", model=tiny_model)
    assert reference.global_step == 8

    run = tmp_path / "run"
    arguments = json.dumps([settings, str(shapes_dataset), str(run), to_dict(tiny_model)])
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    killed_step = kill_after(process, run, checkpoint=6)
    assert process.returncode == -signal.SIGKILL
    assert not (run / "final").exists(), "the run finished before the kill"
    assert latest_checkpoint(run) == run / "checkpoint-6"

    resumed = train_grpo(config, shapes_dataset, run, model=tiny_model)  # resume: auto (the default)
    assert resumed.resumed_from == run / "checkpoint-6"
    assert resumed.global_step == 8

    rows = by_step(run / "samples.jsonl", "rows")
    assert sorted(rows) == list(range(1, 9))
    assert rows == by_step(tmp_path / "reference" / "samples.jsonl", "rows")
    assert rows[7] == killed_step["rows"]
    learning_rates = by_step(run / "train_log.jsonl", "learning_rate")
    assert sorted(learning_rates) == list(range(1, 9))
    assert learning_rates == by_step(tmp_path / "reference" / "train_log.jsonl", "learning_rate")

    def completions(output: Path) -> list[tuple[int, str]]:
        return [
            (r["step"], r["completion"]) for r in read_jsonl(output / "completions.jsonl") if r["step"] > 6
        ]

    assert completions(run) == completions(tmp_path / "reference")
    expected, actual = (
        load_file(reference.final_dir / "model.safetensors"),
        load_file(resumed.final_dir / "model.safetensors"),
    )
    assert expected.keys() == actual.keys()
    assert all(torch.allclose(expected[k], actual[k], atol=1e-6) for k in expected)
    base = load_file(Path(tiny_model.name_or_path) / "model.safetensors")
    assert not all(torch.equal(base[k], actual[k]) for k in base), "nothing was trained: the check is vacuous"


def test_sft_lora_resume_matches_an_uninterrupted_run(
    tiny_model: ModelConfig, shapes_dataset: Path, tmp_path: Path
) -> None:
    """The LoRA adapter, optimizer, scheduler and data order come back from a checkpoint in the
    second epoch (4 rows, one per step): same losses after the resume, same merged weights."""
    config = from_dict(
        SFTStageConfig,
        {
            "max_steps": 6,
            "save_steps": 5,
            "warmup_steps": 0,
            "learning_rate": 1e-2,
            "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 1,
            "gradient_checkpointing": False,
        },
    )
    reference = train_sft(config, shapes_dataset, tmp_path / "reference", model=tiny_model)
    shutil.copytree(tmp_path / "reference" / "checkpoint-5", tmp_path / "run" / "checkpoint-5")

    resumed = train_sft(config, shapes_dataset, tmp_path / "run", model=tiny_model)
    assert (resumed.resumed_from, resumed.global_step) == (tmp_path / "run" / "checkpoint-5", 6)
    assert by_step(tmp_path / "run" / "train_log.jsonl", "loss") == {
        6: by_step(tmp_path / "reference" / "train_log.jsonl", "loss")[6]
    }
    expected = load_file(reference.final_dir / "model.safetensors")
    actual = load_file(resumed.final_dir / "model.safetensors")
    assert all(torch.allclose(expected[k], actual[k], atol=1e-6) for k in expected)
