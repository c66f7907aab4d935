"""The memory estimate's terms against what PyTorch holds for the tiny models on a CPU, and its
direction in every knob.

Measured here: weights, gradients and AdamW states after one real optimizer step (PyTorch's own
tensor sizes), LoRA's adapter count against peft's, and the activations a forward saves for
backward (every tensor autograd keeps, through ``saved_tensors_hooks``), with and without
gradient checkpointing, with fp32 weights under bf16 autocast and with bf16 weights, for Qwen2-VL
and Qwen2.5-VL. GPU peaks are measured by ``bench/gpu/check.sh --memory`` on a GPU machine.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from PIL import Image

from vrft.config import from_dict
from vrft.models.config import ModelConfig
from vrft.preflight.memory import (
    ZERO3_OFFLOAD,
    DeepSpeedPlan,
    Sequences,
    TrainingSetup,
    activation_parts,
    model_shape,
    training_estimate,
)
from vrft.preflight.tokens import ModelFiles
from vrft.train.config import GRPOStageConfig, SFTStageConfig

QWEN2_VL_2B = Path(__file__).resolve().parents[2] / "configs" / "models" / "qwen2-vl-2b-instruct"


def _setup(**changes) -> TrainingSetup:
    base = TrainingSetup(
        method="grpo",
        processes=1,
        batch=8,
        accumulation=2,
        generations=8,
        gradient_checkpointing=True,
        lora=False,
        lora_parameters=0,
        vision_frozen=False,
        reference_model=True,
        deepspeed=DeepSpeedPlan(),
        weights="fp32-autocast",
        sequences=Sequences(prompt_tokens=500, image_tokens=391, completion_tokens=256),
    )
    return dataclasses.replace(base, **changes)


def _terms(estimate) -> dict[str, float]:
    return {t.name: t.bytes for t in estimate.terms}


def _batch(model_config: ModelConfig, sequences: int, size=(112, 84)):
    files = ModelFiles(model_config)
    processor = model_config.load_processor()
    text = "Detect all objects belonging to the category 'stop sign' in the image."
    image = Image.new("RGB", size, (200, 40, 40))
    inputs = processor(text=[files.render(text)] * sequences, images=[image] * sequences, return_tensors="pt")
    prompt = inputs["input_ids"].shape[1]
    return inputs, Sequences(prompt, files.image_tokens(*size), 0)


def _one_adamw_step(model, inputs) -> torch.optim.Optimizer:
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    model(**inputs).logits.float().mean().backward()
    optimizer.step()
    return optimizer


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("frozen_vision", [False, True])
def test_weights_gradients_and_adamw_states_equal_pytorchs_after_a_step(tiny_qwen2, frozen_vision):
    """Full fine-tuning in fp32 (what a CPU trains): each static term is the bytes PyTorch holds."""
    torch.manual_seed(0)
    model = tiny_qwen2.load_model()  # fp32 on a CPU
    if frozen_vision:
        model.model.visual.requires_grad_(False)
    inputs, sequences = _batch(tiny_qwen2, 2)
    optimizer = _one_adamw_step(model, inputs)
    shape = model_shape(tiny_qwen2)
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    setup = _setup(
        weights="fp32", vision_frozen=frozen_vision, reference_model=False, sequences=sequences, batch=2
    )
    terms = _terms(training_estimate(shape, setup)) | _terms(
        training_estimate(shape, dataclasses.replace(setup, method="sft"))
    )
    states = [t for state in optimizer.state.values() for k, t in state.items() if k != "step"]
    assert terms["weights"] == _bytes(model.parameters())
    assert terms["gradients"] == _bytes(p.grad for p in model.parameters() if p.grad is not None)
    assert terms["optimizer"] == _bytes(states)
    # The reference model is a second copy of the weights.
    with_reference = _terms(training_estimate(shape, dataclasses.replace(setup, reference_model=True)))
    assert with_reference["reference model"] == terms["weights"]


def test_lora_adapters_and_their_states_equal_pefts(tiny_qwen2):
    """LoRA: a bf16 base, fp32 adapters on the configured modules (peft counts them the same), and
    gradients and AdamW states for the adapters only."""
    from peft import get_peft_model

    from vrft.train.runtime import load_policy

    stage = from_dict(SFTStageConfig, {"lora": {"enabled": True, "r": 4, "alpha": 8}})
    bf16 = dataclasses.replace(tiny_qwen2, dtype="bfloat16")
    policy, lora_config = load_policy(stage, bf16, None)
    model = get_peft_model(policy, lora_config)
    inputs, sequences = _batch(tiny_qwen2, 2)
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    optimizer = _one_adamw_step(model, inputs)
    shape = model_shape(tiny_qwen2)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert shape.lora_parameters(stage) == sum(p.numel() for p in trained) > 0
    setup = TrainingSetup.of("sft", stage, bf16, shape, 1, sequences)
    terms = _terms(training_estimate(shape, setup))
    states = [t for state in optimizer.state.values() for k, t in state.items() if k != "step"]
    assert terms["weights"] == _bytes(model.parameters())
    assert terms["gradients"] == _bytes(p.grad for p in trained)
    assert terms["optimizer"] == _bytes(states)


def _saved_bytes(model, inputs, autocast: bool) -> tuple[int, int]:
    """Bytes of the tensors the backbone's forward saves for backward, parameters excluded (each
    storage once), split into activations and autocast's bf16 copies of fp32 parameters (tensors of
    a parameter's shape: no activation of these inputs has one)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    shapes = {tuple(p.shape) for p in model.parameters() if p.dim() > 1}
    shapes |= {shape[::-1] for shape in shapes if len(shape) == 2}  # transposed copies too
    seen: dict[int, tuple[int, bool]] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            copy = autocast and tensor.dtype == torch.bfloat16 and tuple(tensor.shape) in shapes
            seen[storage.data_ptr()] = (storage.nbytes(), copy)
        return tensor

    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), context:
        # The backbone: trl scores completions with its fused log-prob head (a term of its own).
        model.model(**inputs, use_cache=False)
    activations = sum(n for n, copy in seen.values() if not copy)
    return activations, sum(n for n, copy in seen.values() if copy)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("weights", ["fp32-autocast", "bf16"])
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("frozen_vision", [False, True])
def test_activations_are_what_autograd_saves(
    tiny_qwen2, tiny_qwen25, family, weights, checkpointing, frozen_vision
):
    """The activation formula against the bytes autograd keeps for backward, on the tiny models with
    3 sequences of 112×84 images: within 5 %. Without checkpointing autograd also keeps every bf16
    copy autocast made of a trained weight: the estimate's autocast term, to the byte. (With
    checkpointing the copies are made again in backward; the forward's stay in autocast's cache
    until the forward ends, which is why the estimate keeps the term.)"""
    model_config = tiny_qwen2 if family == "qwen2_vl" else tiny_qwen25
    torch.manual_seed(0)
    model = model_config.load_model()
    if weights == "bf16":
        model = model.to(torch.bfloat16)
    if frozen_vision:
        model.model.visual.requires_grad_(False)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    inputs, sequences = _batch(model_config, 3)
    if weights == "bf16":
        inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    activations, copies = _saved_bytes(model, inputs, autocast=weights == "fp32-autocast")

    shape = model_shape(model_config)
    setup = _setup(
        weights=weights,
        gradient_checkpointing=checkpointing,
        vision_frozen=frozen_vision,
        batch=3,
        sequences=sequences,
        reference_model=False,
    )
    saved, recompute = activation_parts(shape, setup)
    assert (recompute > 0) == checkpointing
    assert activations == pytest.approx(saved, rel=0.05)
    if not checkpointing:
        assert copies == _terms(training_estimate(shape, setup))["autocast weight copies"]


def test_each_knob_moves_memory_the_expected_way():
    """More G (one prompt's group per micro-step), a bigger micro-batch, no checkpointing, no ZeRO,
    full fine-tuning instead of LoRA, more image or completion tokens: each raises the peak."""
    shape = model_shape(ModelConfig(name_or_path=str(QWEN2_VL_2B)))

    def peak(**changes) -> float:
        return training_estimate(shape, _setup(**changes)).peak

    assert peak(generations=8, batch=8) > peak(generations=4, batch=4) > peak(generations=2, batch=2)
    assert peak(batch=16) > peak(batch=8) > peak(batch=4)
    assert peak(gradient_checkpointing=False) > peak(gradient_checkpointing=True)
    zero = {
        stage: DeepSpeedPlan(stage=stage, allgather_bucket=int(2e8), reduce_bucket=1536**2)
        for stage in (2, 3)
    }
    assert (
        peak(processes=8)
        > peak(processes=8, deepspeed=zero[2], weights="bf16")
        > peak(processes=8, deepspeed=zero[3], weights="bf16")
        > peak(processes=8, deepspeed=ZERO3_OFFLOAD, weights="bf16")
    )
    lora = shape.lora_parameters(from_dict(GRPOStageConfig, {"lora": {"enabled": True}}))
    assert peak() > peak(
        lora=True, lora_parameters=lora, weights="bf16", reference_model=False, vision_frozen=True
    )
    assert peak(vision_frozen=False) > peak(vision_frozen=True)
    assert peak(reference_model=True) > peak(reference_model=False)
    longer = Sequences(prompt_tokens=1000, image_tokens=891, completion_tokens=256)
    assert peak(sequences=longer) > peak()
    assert peak(sequences=Sequences(500, 391, 512)) > peak()


def test_the_2b_model_shape_and_zero_sharding():
    """Qwen2-VL-2B from its config alone: 2,208,985,600 parameters (the published count), and the
    ZeRO-3 terms are the ZeRO paper's 2 + 2 + 12 bytes per parameter divided over the processes."""
    shape = model_shape(ModelConfig(name_or_path=str(QWEN2_VL_2B)))
    assert shape.parameters == 2_208_985_600 and shape.layers == 28 and shape.vision_depth == 32
    setup = _setup(processes=8, deepspeed=DeepSpeedPlan(stage=3), weights="bf16", reference_model=False)
    terms = _terms(training_estimate(shape, setup))
    p = shape.parameters
    assert (
        terms["weights"] == 2 * p / 8 and terms["gradients"] == 2 * p / 8 and terms["optimizer"] == 12 * p / 8
    )
