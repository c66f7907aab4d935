"""GRPO and SFT end to end on the tiny model and a dataset built by the dataset stage: checkpoints
that load back (vrft's loaders and plain from_pretrained) and generate, and what the run logged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from vrft.config import from_dict
from vrft.io import verify_manifest
from vrft.models.config import ModelConfig
from vrft.models.loading import load_model, load_processor
from vrft.train import GRPOStageConfig, MlflowTarget, SFTStageConfig, train_grpo, train_sft
from vrft.train.callbacks import read_jsonl

REWARD_PARTS = ("rewards/detection_iou/mean", "rewards/detection_conf/mean", "rewards/detection_format/mean")


def generates(model_dir: Path) -> None:
    """The directory loads with vrft's loaders and with plain from_pretrained, and both generate."""
    processor = load_processor(model_dir)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Detect the circle."}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[Image.new("RGB", (64, 48), (200, 30, 30))], return_tensors="pt")
    for model in (load_model(model_dir), AutoModelForImageTextToText.from_pretrained(model_dir)):
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert output.shape[1] > inputs["input_ids"].shape[1]


def weights(model_dir: str | Path) -> dict[str, torch.Tensor]:
    return load_file(Path(model_dir) / "model.safetensors")


def test_grpo_end_to_end(
    tiny_model: ModelConfig, shapes_dataset: Path, tmp_path: Path, fast_grpo: dict[str, Any]
) -> None:
    config = from_dict(
        GRPOStageConfig,
        {**fast_grpo, "max_steps": 4, "save_steps": 2, "learning_rate": 1e-3, "completions_per_step": 4},
    )
    tracking = MlflowTarget(
        uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="train-test", tags={"stage": "grpo"}
    )
    result = train_grpo(config, shapes_dataset, tmp_path / "run", model=tiny_model, tracking=tracking)

    out = tmp_path / "run"
    assert (result.global_step, result.final_dir, result.adapter_dir) == (4, out / "final", None)
    assert {"checkpoint-2", "checkpoint-4", "final", "config.json", "train_log.jsonl"} <= {
        p.name for p in out.iterdir()
    }
    manifest = verify_manifest(result.final_dir)
    assert (manifest["method"], manifest["global_step"], manifest["lora_merged"]) == ("grpo", 4, False)
    assert not (result.final_dir / "training_args.bin").exists(), "no pickle in the model directory"
    generates(result.final_dir)

    # A random model earns no detection reward (zero advantage): weights moving is test_learning's job.
    assert weights(tiny_model.name_or_path).keys() == weights(result.final_dir).keys()

    log = [r for r in read_jsonl(out / "train_log.jsonl") if "loss" in r]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    for record in log:
        assert {*REWARD_PARTS, "reward", "kl", "loss", "learning_rate", "completions/mean_length"} <= set(
            record
        )
    assert (
        log[0]["learning_rate"] == 1e-3 and log[-1]["learning_rate"] < log[0]["learning_rate"]
    )  # linear, no warmup
    for record in log:  # the degenerate-answer share is logged every step at weight 0: not part of the reward
        assert 0.0 <= record["rewards/detection_degenerate/mean"] <= 1.0
        assert abs(record["reward"] - sum(record[key] for key in REWARD_PARTS)) < 1e-5
    samples = list(read_jsonl(out / "samples.jsonl"))
    assert [s["step"] for s in samples] == [1, 2, 3, 4] and all(len(s["rows"]) == 1 for s in samples)
    completions = list(read_jsonl(out / "completions.jsonl"))
    assert len(completions) == 16
    assert set(completions[0]["rewards"]) == {"detection_iou", "detection_conf", "detection_format"}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("train-test").experiment_id])
    assert run.data.tags["stage"] == "grpo"
    assert run.data.params["grpo.beta"] == "0.04" and run.data.params["method"] == "grpo"
    assert not any("sqlite" in value for value in run.data.params.values()), "the tracking URI was logged"
    history = client.get_metric_history(run.info.run_id, "rewards/detection_iou/mean")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    history = client.get_metric_history(run.info.run_id, "rewards/detection_degenerate/mean")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert run.info.status == "FINISHED"


def test_sft_end_to_end_with_lora_on_qwen25(
    tiny_qwen25: ModelConfig, shapes_dataset: Path, tmp_path: Path
) -> None:
    config = from_dict(
        SFTStageConfig,
        {
            "max_steps": 3,
            "warmup_steps": 0,
            "learning_rate": 1e-3,
            "gradient_accumulation_steps": 1,
            "save_steps": 1000,
        },
    )
    assert config.lora.enabled, "the paper's SFT baseline is LoRA"
    result = train_sft(config, shapes_dataset, tmp_path / "run", model=tiny_qwen25)

    assert result.global_step == 3 and result.adapter_dir == tmp_path / "run" / "adapter"
    assert (result.adapter_dir / "adapter_config.json").is_file()
    manifest = verify_manifest(result.final_dir)
    assert (manifest["method"], manifest["family"], manifest["lora_merged"]) == ("sft", "qwen2_5_vl", True)
    generates(result.final_dir)

    base, merged = weights(tiny_qwen25.name_or_path), weights(result.final_dir)
    assert base.keys() == merged.keys(), "the merged model has the base model's parameter names"
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base[q_proj], merged[q_proj]), "the adapter was not merged"
    vision = [k for k in base if k.startswith("visual.")]
    assert vision and all(torch.equal(base[k], merged[k]) for k in vision), (
        "LoRA touched the frozen vision tower"
    )
    log = [r for r in read_jsonl(tmp_path / "run" / "train_log.jsonl") if "loss" in r]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert not (tmp_path / "run" / "completions.jsonl").exists()


def test_grpo_with_lora_merges_only_the_adapted_projections(
    tiny_model: ModelConfig,
    shapes_dataset: Path,
    tmp_path: Path,
    token_reward: str,
    fast_grpo: dict[str, Any],
) -> None:
    # The token reward gives non-zero advantages, so the adapters really train.
    config = from_dict(
        GRPOStageConfig,
        {
            **fast_grpo,
            "max_steps": 2,
            "learning_rate": 1e-2,
            "reward": token_reward,
            "lora": {"enabled": True, "r": 8, "alpha": 16},
        },
    )
    result = train_grpo(config, shapes_dataset, tmp_path / "run", model=tiny_model)

    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert verify_manifest(result.final_dir)["lora_merged"] is True
    generates(result.final_dir)
    base, merged = weights(tiny_model.name_or_path), weights(result.final_dir)
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    projections = {
        f"model.layers.{i}.{m}.weight"
        for i in (0, 1)
        for m in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    }
    assert changed == projections
