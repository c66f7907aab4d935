"""The pieces around the trainers: checkpoint discovery, JSONL logs, the rollout recorder, and which
parameters train (vision tower freezing, LoRA targets)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from peft import get_peft_model

from vrft.config import ConfigError
from vrft.models.config import ModelConfig
from vrft.rewards import reward_functions_for_trainer
from vrft.train import GRPOStageConfig, SFTStageConfig, latest_checkpoint
from vrft.train.callbacks import MlflowTarget, RolloutRecorder, append_jsonl, read_jsonl, truncate_jsonl
from vrft.train.checkpoints import resolve_resume
from vrft.train.config import LoraSettings
from vrft.train.runtime import load_policy


def fake_checkpoint(root: Path, step: int, *, state: str | None = None, optimizer: bool = True) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if optimizer:  # a real torch file: a truncated one (no zip directory) counts as incomplete
        torch.save({"state": {}}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}) if state is None else state)
    return path


def test_latest_checkpoint_skips_ones_cut_short_by_a_kill(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "nothing") is None
    fake_checkpoint(tmp_path, 50)
    complete = fake_checkpoint(tmp_path, 100)
    fake_checkpoint(tmp_path, 150, state='{"global_st')  # killed while writing the state
    fake_checkpoint(tmp_path, 200, optimizer=False)  # save_only_model: nothing to resume the optimizer from
    fake_checkpoint(tmp_path, 250, state=json.dumps({"global_step": 7}))
    (tmp_path / "checkpoint-300").mkdir()  # killed before anything was written
    assert latest_checkpoint(tmp_path) == complete
    assert resolve_resume("auto", tmp_path, "grpo") == complete
    assert resolve_resume(str(complete), tmp_path, "grpo") == complete
    assert resolve_resume("never", tmp_path / "fresh", "grpo") is None


def test_jsonl_logs_survive_a_cut_line_and_truncate_to_a_step(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    for step in (1, 2, 3):
        append_jsonl(path, {"step": step, "loss": float("nan") if step == 2 else 0.5})
    with open(path, "a") as f:
        f.write('{"step": 4, "lo')  # the line a SIGKILL interrupted
    records = list(read_jsonl(path))
    assert [r["step"] for r in records] == [1, 2, 3] and records[1]["loss"] is None  # strict JSON: no NaN
    truncate_jsonl(path, 2)
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]


def test_rollout_recorder_keeps_trl_names_and_records_rows_and_rewards(tmp_path: Path) -> None:
    recorder = RolloutRecorder(tmp_path, completions_per_step=3, is_main_process=True)
    functions = recorder.wrap(reward_functions_for_trainer("detection"))
    assert [f.__name__ for f in functions] == ["detection_iou", "detection_conf", "detection_format"]
    good = "<think>x</think><answer>[{'Position': [0, 0, 10, 10], 'Confidence': 1.0}]</answer>"
    columns = {
        "completions": [[{"role": "assistant", "content": c}] for c in (good, "no", "no", "no")],
        "solution_boxes": [[[0, 0, 10, 10]]] * 4,
        "row_index": [5, 5, 2, 2],
        "image_id": ["a", "a", "b", "b"],
        "prompts": [None] * 4,
        "completion_ids": [[1]] * 4,
        "trainer_state": SimpleNamespace(global_step=6),
    }
    totals = [sum(values) for values in zip(*(f(**columns) for f in functions))]
    assert totals == [3.0, 0.0, 0.0, 0.0]
    assert list(read_jsonl(tmp_path / "samples.jsonl")) == [
        {"step": 7, "rows": [5, 2], "image_ids": ["a", "b"]}
    ]
    completions = list(read_jsonl(tmp_path / "completions.jsonl"))
    assert len(completions) == 3
    assert completions[0] == {
        "step": 7,
        "row": 5,
        "image_id": "a",
        "completion": good,
        "reward": 3.0,
        "rewards": {"detection_iou": 1.0, "detection_conf": 1.0, "detection_format": 1.0},
    }
    silent = RolloutRecorder(tmp_path / "other", completions_per_step=3, is_main_process=False)
    silent.wrap(reward_functions_for_trainer("format"))[0](**columns)
    assert not (tmp_path / "other").exists()


def test_tracking_uses_mlflow_only_with_a_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert MlflowTarget().resolved_uri() == ""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert MlflowTarget().resolved_uri() == "http://mlflow:5000"
    assert MlflowTarget(uri="sqlite:///x.db").resolved_uri() == "sqlite:///x.db"


def trainable(model: Any) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_full_fine_tuning_trains_the_vision_tower_unless_frozen(tiny_model: ModelConfig) -> None:
    policy, peft_config = load_policy(GRPOStageConfig(), tiny_model, None)
    assert peft_config is None and trainable(policy) == {n for n, _ in policy.named_parameters()}
    policy, _ = load_policy(GRPOStageConfig(freeze_vision_tower=True), tiny_model, None)
    frozen = {n for n, _ in policy.named_parameters()} - trainable(policy)
    assert frozen and all(n.startswith("model.visual.") for n in frozen)
    assert any(n.startswith("model.visual.merger.") for n in frozen), "the merger belongs to the vision tower"


def test_lora_targets_the_language_model_unless_the_vision_tower_is_unfrozen(tiny_model: ModelConfig) -> None:
    policy, peft_config = load_policy(SFTStageConfig(), tiny_model, None)
    adapted = trainable(get_peft_model(policy, peft_config))
    assert adapted and all(".language_model." in n and "lora_" in n for n in adapted)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in adapted} == set(LoraSettings().target_modules)

    with_vision = SFTStageConfig(
        freeze_vision_tower=False, lora=LoraSettings(enabled=True, target_modules=["q_proj", "v_proj", "qkv"])
    )
    policy, peft_config = load_policy(with_vision, tiny_model, None)
    adapted = trainable(get_peft_model(policy, peft_config))
    assert any(".visual." in n and ".qkv." in n for n in adapted) and any(".q_proj." in n for n in adapted)

    no_vision_match = SFTStageConfig(freeze_vision_tower=False)  # Qwen2-VL's vision blocks have no q_proj
    with pytest.raises(
        ConfigError, match=r"match no module in model\.visual; e\.g\. Qwen2-VL's vision blocks"
    ):
        load_policy(no_vision_match, tiny_model, None)
