"""An estimate of the peak GPU memory per rank of each training and evaluation stage, before launch.

The model is built from its ``config.json`` on PyTorch's ``meta`` device (shapes, no storage), which
gives exact parameter counts per part and the module list LoRA would adapt. The estimate is then a
sum of documented terms (docs/training.md, "Memory before launch"), each in bytes per GPU:

Static (held through the whole step):

* weights: ``P × b_w`` — fp32 (4 B) for full fine-tuning without DeepSpeed (vrft keeps fp32 weights
  and computes in bf16), bf16 (2 B) under DeepSpeed or for LoRA's frozen base; ZeRO-3 divides by the
  number of processes ``N`` (and moves them to the CPU with ``offload_param``);
* gradients: ``P_train × b_w`` without DeepSpeed; bf16 and divided by ``N`` under ZeRO-2/3;
* optimizer (AdamW): two states per trained parameter in its dtype (8 B fp32) without DeepSpeed;
  under ZeRO-2/3 fp32 master weights and both states (12 B) divided by ``N``, none on the GPU with
  ``offload_optimizer``; LoRA trains fp32 adapters only (``r × (in + out)`` per adapted layer);
* reference model (GRPO with β > 0 and no LoRA): another copy of the weights in the policy's dtype
  (divided by ``N`` under ZeRO-3); LoRA's reference is the base with adapters off (no copy);
* DeepSpeed buffers: ZeRO-2's all-gather and reduce buckets; ZeRO-3's gathered working set (the
  largest parameter and a prefetch bucket).

Transient, the larger of the two phases of a GRPO step is the peak:

* training micro-step (``B = per_device_train_batch_size`` sequences of ``L`` = longest prompt incl.
  image tokens + ``max_completion_length`` tokens): activations saved for backward, per token and
  language-model layer ``30h + 4·kv + 8·I + 4·heads + 8`` bytes with fp32 weights under bf16
  autocast (``20h + …`` with bf16 weights), per image patch and vision block ``14e + 8m + 4·heads + 8``
  (Qwen2-VL; ``30e + 8m + …`` for Qwen2.5-VL's gated blocks), coefficients measured from the tensors
  autograd saves (tests/preflight/test_memory.py re-measures them); with gradient checkpointing only
  each layer's input (``h`` per token in the residual's dtype) plus one layer's full set; the vision
  tower saves nothing when frozen; bf16 copies of the trained linear weights that autocast caches
  during the forward; trl's fused log-prob head (a 4,096 × 32,768 bf16 logits tile, and in backward
  the fp32 gradient of the output embedding);
* rollout (``per_device_train_batch_size × gradient_accumulation_steps`` completions generated at
  once, without gradients): the KV cache ``2 × layers × kv × (prompt + completion) × b`` per
  sequence, one layer's prefill working set, the vision tower's, the sampling logits; under ZeRO-3
  trl gathers the whole model for generation.

Evaluation: bf16 weights, the KV cache of ``evaluate.batch_size`` sequences of prompt +
``max_new_tokens``, the prefill working set; with vLLM, its ``gpu_memory_utilization`` share.
Measured against an H200 by ``bench/gpu/check.sh --memory`` (pending: see docs/training.md).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vrft.models.config import ModelConfig

GIB = 2**30
#: trl's fused log-prob kernel (trl/kernels/chunked_logprob.py): token rows and vocabulary columns per tile.
LOGPROB_TOKEN_TILE = 4096
LOGPROB_VOCAB_TILE = 32768


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a Qwen2-VL / Qwen2.5-VL checkpoint, from its config alone."""

    family: str
    parameters: int
    vision_parameters: int
    #: nn.Linear weights (autocast caches bf16 copies of the trained ones), language model and vision.
    linear_parameters: int
    vision_linear_parameters: int
    largest_parameter: int
    output_embedding: int  # lm_head's (tied: the input embedding's) element count
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_dim: int  # key/value heads × head dim
    vocab: int
    max_positions: int
    vision_embed: int
    vision_mlp: int
    vision_depth: int
    vision_heads: int
    patch_values: int  # channels × temporal patch × patch² (the patch embedding's input per patch)
    merge_size: int
    gated_vision_mlp: bool
    module: Any = field(default=None, compare=False, repr=False)  # the meta-device model, for LoRA

    def lora_parameters(self, stage: Any) -> int:
        """Adapter parameters LoRA adds for ``stage``'s settings (``r × (in + out)`` per adapted layer)."""
        import re

        import torch

        from vrft.train.runtime import lora_target_pattern

        pattern = re.compile(lora_target_pattern(self.module, stage))
        return sum(
            stage.lora.r * (module.in_features + module.out_features)
            for name, module in self.module.named_modules()
            if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name)
        )


def model_shape(model: ModelConfig) -> ModelShape:
    """The checkpoint's shape: its model class built from ``config.json`` on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code)
    with torch.device("meta"):
        module = AutoModelForImageTextToText.from_config(config, trust_remote_code=model.trust_remote_code)
    text = config.get_text_config()
    vision = config.vision_config
    params = dict(module.named_parameters())
    visual = {name for name in params if ".visual." in f".{name}"}
    linear = {
        f"{name}.weight": m.weight.numel()
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head")
    }
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    family = config.model_type
    if family == "qwen2_5_vl":
        embed, mlp, gated = vision.hidden_size, vision.intermediate_size, True
    else:
        embed, gated = vision.embed_dim, False
        mlp = int(vision.embed_dim * vision.mlp_ratio)
    channels = getattr(vision, "in_channels", None) or getattr(vision, "in_chans", 3)
    return ModelShape(
        family=family,
        parameters=sum(p.numel() for p in params.values()),
        vision_parameters=sum(params[name].numel() for name in visual),
        linear_parameters=sum(linear.values()),
        vision_linear_parameters=sum(n for name, n in linear.items() if name in visual),
        largest_parameter=max(p.numel() for p in params.values()),
        output_embedding=module.get_output_embeddings().weight.numel(),
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        heads=text.num_attention_heads,
        kv_dim=text.num_key_value_heads * head_dim,
        vocab=text.vocab_size,
        max_positions=text.max_position_embeddings,
        vision_embed=embed,
        vision_mlp=mlp,
        vision_depth=vision.depth,
        vision_heads=vision.num_heads,
        patch_values=channels * vision.temporal_patch_size * vision.patch_size**2,
        merge_size=vision.spatial_merge_size,
        gated_vision_mlp=gated,
        module=module,
    )


# -- what a stage runs with ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeepSpeedPlan:
    """The parts of a DeepSpeed config that change memory (stage 0: no DeepSpeed)."""

    stage: int = 0
    offload_optimizer: bool = False
    offload_param: bool = False
    allgather_bucket: int = 0  # elements
    reduce_bucket: int = 0
    prefetch_bucket: int = 0

    @property
    def label(self) -> str:
        if not self.stage:
            return "no DeepSpeed"
        offload = [
            n for n, on in (("optimizer", self.offload_optimizer), ("parameters", self.offload_param)) if on
        ]
        return f"ZeRO-{self.stage}" + (f", {' and '.join(offload)} offloaded to CPU" if offload else "")


#: The "ZeRO-3 offload" knob: optimizer states and parameters in CPU memory.
ZERO3_OFFLOAD = DeepSpeedPlan(stage=3, offload_optimizer=True, offload_param=True)


def deepspeed_plan(path: Path | None, hidden: int) -> DeepSpeedPlan:
    """Read a DeepSpeed JSON; ``"auto"`` buckets take the values transformers fills in."""
    if path is None:
        return DeepSpeedPlan()
    zero = json.loads(Path(path).read_text(encoding="utf-8")).get("zero_optimization", {})

    def number(key: str, auto: float, default: float) -> int:
        value = zero.get(key, default)
        return int(auto if value == "auto" else value)

    def offloaded(key: str) -> bool:
        return str((zero.get(key) or {}).get("device", "none")).lower() in ("cpu", "nvme")

    return DeepSpeedPlan(
        stage=int(zero.get("stage", 0)),
        offload_optimizer=offloaded("offload_optimizer"),
        offload_param=offloaded("offload_param"),
        allgather_bucket=number("allgather_bucket_size", hidden * hidden, 5e8),
        reduce_bucket=number("reduce_bucket_size", hidden * hidden, 5e8),
        prefetch_bucket=number("stage3_prefetch_bucket_size", 0.9 * hidden * hidden, 5e7),
    )


@dataclass(frozen=True)
class Sequences:
    """The longest sequence a stage processes, and its image."""

    prompt_tokens: int  # including the image tokens
    image_tokens: int
    completion_tokens: int

    @property
    def length(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TrainingSetup:
    """Everything about one training stage that the estimate reads."""

    method: str  # grpo or sft
    processes: int
    batch: int  # sequences per micro-step (per_device_train_batch_size)
    accumulation: int
    generations: int  # G (GRPO; 1 for SFT)
    gradient_checkpointing: bool
    lora: bool
    lora_parameters: int
    vision_frozen: bool
    reference_model: bool  # GRPO with beta > 0 and no LoRA
    deepspeed: DeepSpeedPlan
    weights: str  # "fp32-autocast", "bf16" or "fp32"
    sequences: Sequences

    @classmethod
    def of(
        cls,
        method: str,
        stage: Any,
        model: ModelConfig,
        shape: ModelShape,
        processes: int,
        sequences: Sequences,
    ) -> TrainingSetup:
        from vrft.train.config import deepspeed_config_path

        ds = deepspeed_plan(deepspeed_config_path(stage, launched=False), shape.hidden)
        lora = stage.lora.enabled
        if lora or ds.stage:
            weights = "bf16"
        else:  # vrft.train.runtime.training_dtype on CUDA: auto keeps fp32 weights under bf16 autocast
            weights = {"auto": "fp32-autocast", "bfloat16": "bf16", "float32": "fp32"}[model.dtype]
        grpo = method == "grpo"
        return cls(
            method=method,
            processes=processes,
            batch=stage.per_device_train_batch_size,
            accumulation=stage.gradient_accumulation_steps,
            generations=stage.num_generations if grpo else 1,
            gradient_checkpointing=stage.gradient_checkpointing,
            lora=lora,
            lora_parameters=shape.lora_parameters(stage) if lora else 0,
            vision_frozen=stage.vision_tower_frozen,
            reference_model=grpo and stage.beta > 0 and not lora,
            deepspeed=ds,
            weights=weights,
            sequences=sequences,
        )

    def describe(self) -> str:
        parts = [
            f"{self.processes} process{'es' if self.processes > 1 else ''}",
            self.deepspeed.label,
            "LoRA"
            if self.lora
            else "full fine-tuning" + (" (vision tower frozen)" if self.vision_frozen else ""),
            {"fp32-autocast": "fp32 weights, bf16 compute", "bf16": "bf16", "fp32": "fp32"}[self.weights],
        ]
        if self.method == "grpo":
            parts.append(f"G {self.generations}")
            parts.append("reference model" if self.reference_model else "no reference copy")
        parts.append(
            f"micro-batch {self.batch} × {self.sequences.length:,} tokens "
            f"({self.sequences.image_tokens:,} image)"
        )
        parts.append("checkpointing " + ("on" if self.gradient_checkpointing else "off"))
        return ", ".join(parts)


@dataclass(frozen=True)
class Term:
    name: str
    bytes: float


@dataclass(frozen=True)
class Estimate:
    """One stage's predicted peak per GPU, the terms of the phase that peaks, and the other phase."""

    stage: str
    setup: str
    terms: tuple[Term, ...]
    phase: str  # which phase peaks
    other_phase: str = ""
    other_bytes: float = 0.0

    @property
    def peak(self) -> float:
        return sum(t.bytes for t in self.terms)

    @property
    def peak_gib(self) -> float:
        return self.peak / GIB

    def breakdown(self) -> str:
        return ", ".join(f"{t.name} {human_bytes(t.bytes)}" for t in self.terms if t.bytes > 0)


def human_bytes(value: float) -> str:
    """``12.34 GiB`` from a GiB up, ``123.4 MiB`` below (tiny models are all MiB)."""
    if value >= GIB:
        return f"{value / GIB:.2f} GiB"
    return f"{value / 2**20:.1f} MiB"


# -- the formula ----------------------------------------------------------------------------------------


def layer_bytes_per_token(shape: ModelShape, weights: str) -> float:
    """Bytes one language-model layer saves for backward per token (see the module docstring)."""
    h_coefficient = 30 if weights == "fp32-autocast" else 20
    per_token = h_coefficient * shape.hidden + 4 * shape.kv_dim + 8 * shape.intermediate + 4 * shape.heads + 8
    return per_token * (2 if weights == "fp32" else 1)


def block_bytes_per_patch(shape: ModelShape, weights: str) -> float:
    """Bytes one vision block saves for backward per image patch."""
    autocast = weights == "fp32-autocast"
    if shape.gated_vision_mlp:
        e_coefficient, constant = (32, 8) if autocast else (30, 8)
    else:
        e_coefficient, constant = (14, 16) if autocast else (14, 8)
    per_patch = e_coefficient * shape.vision_embed + 8 * shape.vision_mlp + 4 * shape.vision_heads + constant
    return per_patch * (2 if weights == "fp32" else 1)


def activation_parts(shape: ModelShape, setup: TrainingSetup) -> tuple[float, float]:
    """Activations of one micro-step: what the forward saves for backward, and what checkpointing's
    recompute of one layer (and one vision block) adds on top during backward (0 without it)."""
    seq = setup.sequences
    tokens = setup.batch * seq.length
    patches = setup.batch * seq.image_tokens * shape.merge_size**2
    bf16, fp32 = setup.weights == "bf16", setup.weights == "fp32"
    scale = 2 if fp32 else 1
    residual = 2 if bf16 else 4  # the language model's residual stream: fp32 unless the weights are bf16
    vision_residual = 4 if fp32 else 2  # the vision tower's: bf16 under autocast too
    layer = layer_bytes_per_token(shape, setup.weights)
    checkpointing = setup.gradient_checkpointing
    # Outside the layers and blocks (measured like their coefficients): the final norm and the image
    # features' scatter per token; the merger per patch, and the patch embedding's bf16 input.
    rest_token = (((6 if bf16 else 8) if checkpointing else (7 if bf16 else 10)) * shape.hidden + 16) * scale
    saved = tokens * ((residual * shape.hidden if checkpointing else layer) * shape.layers + rest_token)
    recompute = tokens * layer if checkpointing else 0.0
    e, depth = shape.vision_embed, shape.vision_depth
    if not setup.vision_frozen:
        merger = (
            (12 if shape.gated_vision_mlp else 8) if checkpointing else (16 if shape.gated_vision_mlp else 20)
        )
        rest_patch = (2 * shape.patch_values + merger * e + 8) * scale
        block = block_bytes_per_patch(shape, setup.weights)
        per_block = vision_residual * e if checkpointing else block
        saved += patches * (per_block * depth + rest_patch)
        recompute += patches * block if checkpointing else 0.0
    elif checkpointing:  # checkpointing keeps each block's input even for a frozen tower
        saved += patches * (
            vision_residual * e * depth + ((6 if shape.gated_vision_mlp else 4) * e + 4) * scale
        )
    return saved, recompute


def activation_bytes(shape: ModelShape, setup: TrainingSetup) -> float:
    """Activations held at the peak of one micro-step (what checkpointing trades for recompute)."""
    return sum(activation_parts(shape, setup))


def _trained_parameters(shape: ModelShape, setup: TrainingSetup) -> int:
    if setup.lora:
        return setup.lora_parameters
    return shape.parameters - (shape.vision_parameters if setup.vision_frozen else 0)


def training_estimate(shape: ModelShape, setup: TrainingSetup) -> Estimate:
    """The peak per GPU of a GRPO or SFT stage: static terms plus the larger transient phase."""
    ds, n = setup.deepspeed, setup.processes
    p = shape.parameters
    trained = _trained_parameters(shape, setup)
    weight_bytes = 4 if setup.weights in ("fp32-autocast", "fp32") else 2
    shard3 = n if ds.stage == 3 else 1
    if ds.stage:
        adapters = trained if setup.lora else 0
        weights = 0.0 if (ds.stage == 3 and ds.offload_param) else 2 * (p + adapters) / shard3
        # LoRA adapters are fp32 parameters; DeepSpeed partitions their gradients and states alike.
        gradients = 2 * trained / n
        optimizer = 0.0 if ds.offload_optimizer else 12 * trained / n
        buffers = 2 * (ds.allgather_bucket + ds.reduce_bucket) if ds.stage == 2 else 0.0
        if ds.stage == 3:
            buffers = 2 * (shape.largest_parameter + ds.prefetch_bucket)
    else:
        trained_bytes = 4 if setup.lora else weight_bytes
        weights = p * weight_bytes + (trained * 4 if setup.lora else 0)
        gradients = trained * trained_bytes
        optimizer = 2 * trained * trained_bytes
        buffers = 0.0
    reference = p * (2 if ds.stage else weight_bytes) / shard3 if setup.reference_model else 0.0
    static = [
        Term("weights", weights),
        Term("gradients", gradients),
        Term("optimizer", optimizer),
        Term("reference model", reference),
        Term("DeepSpeed buffers", buffers),
    ]

    # Training micro-step.
    seq = setup.sequences
    autocast_copies = 0.0
    if setup.weights == "fp32-autocast" and not setup.lora:
        linear = shape.linear_parameters - (shape.vision_linear_parameters if setup.vision_frozen else 0)
        patch_embedding = 0 if setup.vision_frozen else shape.vision_embed * shape.patch_values
        autocast_copies = 2 * (linear + patch_embedding)
    completion_tokens = setup.batch * seq.completion_tokens
    head = 2 * min(completion_tokens, LOGPROB_TOKEN_TILE) * min(shape.vocab, LOGPROB_VOCAB_TILE)
    head += 4 * completion_tokens * shape.hidden
    if not setup.lora:  # the output embedding is trained: its fp32 gradient is accumulated tile by tile
        head += 4 * shape.output_embedding
    train_terms = [
        *static,
        Term("autocast weight copies", autocast_copies),
        Term("activations", activation_bytes(shape, setup)),
        Term("log-prob head", head),
    ]

    # Rollout (GRPO): generation of the whole generation batch, no gradients held (zeroed after the
    # optimizer step; DeepSpeed keeps its partitioned gradient buffers).
    rollout_terms: list[Term] = []
    if setup.method == "grpo":
        sequences = setup.batch * setup.accumulation
        kv_bytes = 2 if ds.stage or setup.lora or setup.weights == "bf16" else 4
        kv = 2 * shape.layers * shape.kv_dim * seq.length * sequences * kv_bytes
        prefill = sequences * seq.prompt_tokens * (shape.hidden + 3 * shape.intermediate) * kv_bytes
        patches = sequences * seq.image_tokens * shape.merge_size**2
        vision = patches * (3 * shape.vision_embed + shape.vision_mlp) * kv_bytes
        logits = 3 * sequences * shape.vocab * 4
        gathered = 2 * p * (1 - 1 / n) if ds.stage == 3 and not ds.offload_param else 0.0
        if ds.stage == 3 and ds.offload_param:
            gathered = 2 * p
        rollout_terms = [
            *(t if t.name != "gradients" or ds.stage else Term("gradients", 0.0) for t in static),
            Term("weights gathered for generation", gathered),
            Term("KV cache", kv),
            Term("prefill working set", prefill + vision),
            Term("sampling logits", logits),
        ]
    train = Estimate(setup.method, setup.describe(), tuple(train_terms), "training micro-step")
    if not rollout_terms:
        return train
    rollout = Estimate(setup.method, setup.describe(), tuple(rollout_terms), "rollout")
    first, second = (train, rollout) if train.peak >= rollout.peak else (rollout, train)
    return dataclasses.replace(first, other_phase=second.phase, other_bytes=second.peak)


@dataclass(frozen=True)
class EvaluationSetup:
    batch: int
    sequences: Sequences
    weights_bytes: int  # 2 (bf16) or 4 (fp32)
    vllm_share: float | None = None  # vLLM's gpu_memory_utilization, when it is the backend

    def describe(self) -> str:
        if self.vllm_share is not None:
            return f"vLLM, gpu_memory_utilization {self.vllm_share}"
        dtype = "bf16" if self.weights_bytes == 2 else "fp32"
        return (
            f"HF generate, {dtype}, batch {self.batch} × {self.sequences.length:,} tokens "
            f"({self.sequences.image_tokens:,} image)"
        )


def evaluation_estimate(shape: ModelShape, setup: EvaluationSetup, gpu_memory: float) -> Estimate:
    """The peak per GPU of an evaluation stage (batched greedy generation)."""
    if setup.vllm_share is not None:
        return Estimate(
            "evaluate",
            setup.describe(),
            (Term("vLLM's reserved share", setup.vllm_share * gpu_memory),),
            "generation",
        )
    b = setup.weights_bytes
    seq = setup.sequences
    patches = setup.batch * seq.image_tokens * shape.merge_size**2
    terms = (
        Term("weights", shape.parameters * b),
        Term("KV cache", 2 * shape.layers * shape.kv_dim * seq.length * setup.batch * b),
        Term(
            "prefill working set",
            setup.batch * seq.prompt_tokens * (shape.hidden + 3 * shape.intermediate) * b
            + patches * (3 * shape.vision_embed + shape.vision_mlp) * b,
        ),
        Term("sampling logits", 3 * setup.batch * shape.vocab * 4),
    )
    return Estimate("evaluate", setup.describe(), terms, "generation")
