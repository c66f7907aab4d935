"""Benchmark evaluation throughput: vrft's batched inference vs a batch-size-1 loop like the authors'.

Both run in the same process, on the same model object, device, images, prompts (the paper's
detection prompt) and greedy decoding with the same ``max_new_tokens``; the script prints images
per second for each and the ratio, and checks that the two produce the same completions.

* CPU: the tiny random Qwen2-VL (``vrft.models.tiny``), always (unless ``--shaped-only``).
* GPU (when CUDA is available): a random model with Qwen2-VL-2B's real sizes (28 text layers, hidden
  1536, vocab 151936; 32-layer 1280-wide vision tower), built offline in bf16 from a config
  (``qwen2_vl_shapes.py``), with the tiny checkpoint's processor; images at the paper's 401408 max
  pixels. A random model almost never emits EOS, so every completion runs to ``max_new_tokens`` in
  both loops (same work per image). ``--shape mini`` runs the same case with a two-layer, narrow model
  of that architecture on any device (fp32 on a CPU): the dry run of bench/gpu/check.sh.

    python bench/bench_eval.py                 # CPU case, plus the GPU case if CUDA is available
    python bench/bench_eval.py --shaped-only --gpu-requests 64 --gpu-batch-size 32 --json eval.json
    python bench/bench_eval.py --shaped-only --shape mini --gpu-requests 4 --gpu-batch-size 2 \\
        --gpu-max-new-tokens 4 --max-pixels 12544          # the GPU case's path on a CPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import qwen2_vl_shapes  # beside this script (its directory is sys.path[0])
import torch
from PIL import Image

from vrft.evaluate import EvaluateConfig, HFGenerator, Request
from vrft.evaluate.inference import chat_prompt
from vrft.models.config import PAPER_MAX_PIXELS
from vrft.models.coords import BoxConvention
from vrft.models.loading import load_model, load_processor
from vrft.models.tiny import build_tiny_model
from vrft.prompts import render_prompt

CATEGORIES = ("bus", "train", "fire hydrant", "stop sign", "cat", "dog", "bed", "toilet")


def make_inputs(
    n: int, sizes: list[tuple[int, int]], seed: int = 0
) -> tuple[list[Request], list[Image.Image]]:
    """``n`` detection requests over random images of the given sizes (COCO-like mix)."""
    rng = np.random.default_rng(seed)
    convention = BoxConvention("relative_1000")
    images, requests = [], []
    for i in range(n):
        width, height = sizes[i % len(sizes)]
        images.append(Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)))
        prompt = render_prompt("detection", convention=convention, category=CATEGORIES[i % len(CATEGORIES)])
        requests.append(Request(f"{i}", i, prompt, width * height))
    return requests, images


def authors_loop(
    model: Any, processor: Any, requests: list[Request], images: list[Image.Image], max_new_tokens: int
) -> list[str]:
    """One image at a time, as the authors' evaluation notebooks do: template, process, generate, decode."""
    outputs = []
    for request in requests:
        inputs = processor(
            text=[chat_prompt(processor, request.prompt)],
            images=[images[request.row]],
            padding=True,
            return_tensors="pt",
        ).to(model.device)
        with torch.inference_mode():
            generated = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        outputs.append(
            processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
        )
    return outputs


def timed(fn: Callable[[], list[str]]) -> tuple[float, list[str]]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def run_case(
    name: str,
    model: Any,
    processor: Any,
    *,
    n: int,
    batch_size: int,
    max_new_tokens: int,
    sizes: list[tuple[int, int]],
) -> dict[str, Any]:
    requests, images = make_inputs(n, sizes)
    config = EvaluateConfig(batch_size=batch_size, max_new_tokens=max_new_tokens, progress=False)
    batched = HFGenerator(model, processor, config)
    warm = requests[: min(len(requests), batch_size)]
    batched.generate(warm, images.__getitem__)  # warm-up (kernels, allocator) for both paths
    authors_loop(model, processor, warm[:1], images, max_new_tokens)
    loop_s, loop_out = timed(lambda: authors_loop(model, processor, requests, images, max_new_tokens))
    batch_s, batch_out = timed(lambda: batched.generate(requests, images.__getitem__))
    same = sum(a == b for a, b in zip(loop_out, batch_out, strict=True))
    result = {
        "case": name,
        "device": str(model.device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "images": n,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "image_sizes": sizes,
        "batch1_loop_images_per_s": n / loop_s,
        "vrft_batched_images_per_s": n / batch_s,
        "speedup": loop_s / batch_s,
        "identical_completions": f"{same}/{n}",
        "all_identical": same == n,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }
    print(
        f"{name}: batch-1 loop {n / loop_s:.2f} img/s, vrft batched (bs={batch_size}) {n / batch_s:.2f} img/s "
        f"-> {loop_s / batch_s:.1f}x; identical completions {same}/{n}"
    )
    return result


def versions() -> dict[str, str]:
    import sys

    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda or "",
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-requests", type=int, default=32)
    parser.add_argument("--cpu-batch-size", type=int, default=16)
    parser.add_argument("--cpu-max-new-tokens", type=int, default=64)
    parser.add_argument("--gpu-requests", type=int, default=128, help="the shaped case's images")
    parser.add_argument("--gpu-batch-size", type=int, default=64, help="the shaped case's vrft batch size")
    parser.add_argument(
        "--gpu-max-new-tokens", type=int, default=128, help="the shaped case's max_new_tokens"
    )
    parser.add_argument(
        "--shape",
        choices=sorted(qwen2_vl_shapes.SHAPES),
        default="2b",
        help="the shaped case's model: 2b (runs with CUDA only) or mini (on any device)",
    )
    parser.add_argument(
        "--max-pixels", type=int, default=PAPER_MAX_PIXELS, help="the shaped case's processor"
    )
    parser.add_argument("--shaped-only", action="store_true", help="skip the tiny CPU case")
    parser.add_argument("--json", type=Path, help="also write the results (and versions) here")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if args.shaped_only and args.shape == "2b" and not cuda:
        parser.error("the 2B-shaped case needs a CUDA device (use --shape mini to run its path on a CPU)")

    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_model(Path(tmp) / "tiny")
        if not args.shaped_only:
            processor = load_processor(tiny, 56 * 56, 112 * 112)
            model = load_model(tiny, "float32", "cpu")
            results.append(
                run_case(
                    "cpu-tiny",
                    model,
                    processor,
                    n=args.cpu_requests,
                    batch_size=args.cpu_batch_size,
                    max_new_tokens=args.cpu_max_new_tokens,
                    sizes=[(128, 96), (96, 128), (112, 112)],
                )
            )
            del model
        if cuda or args.shape == "mini":
            device = "cuda" if cuda else "cpu"
            processor = load_processor(tiny, 3136, args.max_pixels)
            model = qwen2_vl_shapes.build_model(
                args.shape, processor.tokenizer, device, torch.bfloat16 if cuda else torch.float32
            )
            results.append(
                run_case(
                    f"{device}-qwen2-vl-{args.shape}-shaped",
                    model,
                    processor,
                    n=args.gpu_requests,
                    batch_size=args.gpu_batch_size,
                    max_new_tokens=args.gpu_max_new_tokens,
                    sizes=[(640, 480), (480, 640), (640, 427), (500, 375)],
                )
            )
        else:
            print("gpu-qwen2-vl-2b-shaped: skipped (no CUDA device)")
    if args.json:
        args.json.write_text(
            json.dumps({"benchmark": "eval", "versions": versions(), "results": results}, indent=2) + "\n"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
