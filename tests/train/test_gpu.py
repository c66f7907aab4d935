"""GRPO on a CUDA device: a bf16 (mixed-precision) training step, and checkpoints that save, resume
and load back onto the GPU. Marked ``gpu``: deselected by default, run by ``pytest -m gpu`` (see
bench/gpu/check.sh). On a CPU they fail unless VRFT_GPU_TESTS_ON_CPU=1 (the script's dry run), where
the same code runs in fp32."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vrft.config import from_dict
from vrft.models.config import ModelConfig
from vrft.models.loading import load_model, load_processor
from vrft.train import GRPOStageConfig, train_grpo
from vrft.train.callbacks import read_jsonl
from vrft.train.grpo import VrftGRPOTrainer

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]


def record_loss_precision(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Spy on the trainer's loss: the device of its weights and the autocast state it ran under."""
    seen: list[dict[str, Any]] = []
    compute_loss = VrftGRPOTrainer.compute_loss

    def spy(self: Any, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        device = next(model.parameters()).device
        seen.append(
            {
                "device": device.type,
                "weights": next(model.parameters()).dtype,
                "autocast": torch.is_autocast_enabled(device.type),
                "autocast_dtype": torch.get_autocast_dtype(device.type),
            }
        )
        loss = compute_loss(self, model, inputs, *args, **kwargs)
        seen[-1]["loss_dtype"] = loss.dtype
        return loss

    monkeypatch.setattr(VrftGRPOTrainer, "compute_loss", spy)
    return seen


def test_grpo_trains_in_bf16_mixed_precision_on_the_gpu(
    gpu: str,
    tiny_model: ModelConfig,
    shapes_dataset: Path,
    tmp_path: Path,
    token_reward: str,
    fast_grpo: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = record_loss_precision(monkeypatch)
    config = from_dict(
        GRPOStageConfig,
        {
            **fast_grpo,
            "reward": token_reward,
            "learning_rate": 1e-2,
            "max_steps": 3,
            "gradient_checkpointing": True,
        },
    )
    result = train_grpo(config, shapes_dataset, tmp_path / "run", model=tiny_model)

    assert result.global_step == 3 and seen
    # model.dtype auto with full fine-tuning: fp32 weights, bf16 compute on CUDA; plain fp32 on a CPU.
    expected = {"device": gpu, "weights": torch.float32, "autocast": gpu == "cuda"}
    assert all({k: s[k] for k in expected} == expected for s in seen), seen
    if gpu == "cuda":
        assert {s["autocast_dtype"] for s in seen} == {torch.bfloat16}
    log = [r for r in read_jsonl(tmp_path / "run" / "train_log.jsonl") if "loss" in r]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in log), log
    base = load_file(Path(tiny_model.name_or_path) / "model.safetensors")
    trained = load_file(result.final_dir / "model.safetensors")
    assert base.keys() == trained.keys()
    assert all(trained[k].isfinite().all() for k in trained)
    assert not all(torch.equal(base[k], trained[k]) for k in base), "no weight moved in 3 steps at lr 1e-2"


def test_checkpoints_resume_and_load_back_onto_the_gpu(
    gpu: str,
    tiny_model: ModelConfig,
    shapes_dataset: Path,
    tmp_path: Path,
    token_reward: str,
    fast_grpo: dict[str, Any],
) -> None:
    settings = {**fast_grpo, "reward": token_reward, "learning_rate": 1e-2, "save_steps": 2}
    run = tmp_path / "run"
    first = train_grpo(
        from_dict(GRPOStageConfig, {**settings, "max_steps": 2}), shapes_dataset, run, model=tiny_model
    )
    assert first.global_step == 2 and (run / "checkpoint-2" / "optimizer.pt").is_file()

    resumed = train_grpo(
        from_dict(GRPOStageConfig, {**settings, "max_steps": 4}), shapes_dataset, run, model=tiny_model
    )
    assert (resumed.resumed_from, resumed.global_step) == (run / "checkpoint-2", 4)
    assert sorted(r["step"] for r in read_jsonl(run / "train_log.jsonl") if "loss" in r) == [1, 2, 3, 4]

    # The saved weights load onto the GPU (bf16 there) exactly as onto the CPU, rounded to bf16.
    dtype = torch.bfloat16 if gpu == "cuda" else torch.float32
    model = load_model(resumed.final_dir, "auto", gpu)
    assert (model.device.type, model.dtype) == (gpu, dtype)
    on_cpu = load_model(resumed.final_dir, "float32", "cpu").state_dict()
    state = model.state_dict()
    assert state.keys() == on_cpu.keys()
    assert all(torch.equal(state[k].cpu(), on_cpu[k].to(dtype)) for k in state)
    base = load_model(tiny_model.name_or_path, "float32", "cpu").state_dict()
    assert not all(torch.equal(base[k], on_cpu[k]) for k in base), "nothing was trained: the check is vacuous"

    processor = load_processor(resumed.final_dir, 56 * 56, 112 * 112)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Detect the circle."}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(
        text=[prompt], images=[Image.new("RGB", (64, 48), (200, 30, 30))], return_tensors="pt"
    ).to(gpu)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]
