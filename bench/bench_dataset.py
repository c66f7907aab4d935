"""Benchmark stage 1 on a COCO-train-sized annotation file (no images).

Generates an instances JSON shaped like COCO train2017 — 118,287 images, 860,001 boxes, 80
categories with a skewed (Zipf-like) frequency, ~1% crowd boxes — into a temporary directory,
then runs the real ``build_dataset`` on it with ``load_images: false`` and
``verify_images: false``: the JSON is parsed and every record validated, pycocotools indexes it,
k images per category (plus negatives) are sampled, the eval split is built from all remaining
images, and both splits are saved with ``save_to_disk`` and hashed into the manifest. What is NOT
measured: reading, decoding and embedding image bytes (the images do not exist; the rows store
their paths). Prints the generation time, the build's wall time and the process's peak RSS.

    python bench/bench_dataset.py            # defaults: k=16, negatives 0.5, full eval split
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vrft.data import DatasetConfig, SourceConfig, build_dataset
from vrft.data.presets import COCO80


def write_coco_like(path: Path, n_images: int, n_boxes: int, layout: str = "coco", seed: int = 0) -> None:
    """A valid COCO instances JSON of the given size, built from numpy arrays (about 100 MB).

    ``layout="coco"`` gives each image 1-5 category "slots" (about 2.7 distinct categories per
    image, as in COCO train's 2.9) and spreads its boxes over them; ``"uniform"`` draws every
    box's category independently (about 6 distinct categories per image: more eval rows, slower).
    """
    rng = np.random.default_rng(seed)
    widths = rng.choice([640, 640, 500, 480, 427], size=n_images)
    heights = rng.choice([480, 427, 640, 375, 333], size=n_images)
    image_of_box = np.sort(rng.integers(0, n_images, size=n_boxes))
    weights = 1.0 / np.arange(1, len(COCO80) + 1) ** 0.9
    weights /= weights.sum()
    if layout == "coco":
        slots = rng.choice(len(COCO80), size=(n_images, 5), p=weights) + 1
        n_slots = np.clip(1 + rng.poisson(1.9, size=n_images), 1, 5)
        slot_of_box = (rng.random(n_boxes) * n_slots[image_of_box]).astype(int)
        cats = slots[image_of_box, slot_of_box]
    else:
        cats = rng.choice(len(COCO80), size=n_boxes, p=weights) + 1
    w_img, h_img = widths[image_of_box], heights[image_of_box]
    bw = np.maximum(1.0, rng.uniform(0.02, 0.6, n_boxes) * w_img).round(2)
    bh = np.maximum(1.0, rng.uniform(0.02, 0.6, n_boxes) * h_img).round(2)
    x = (rng.uniform(0, 1, n_boxes) * (w_img - bw)).round(2)
    y = (rng.uniform(0, 1, n_boxes) * (h_img - bh)).round(2)
    crowd = (rng.random(n_boxes) < 0.01).astype(int)
    images = ",".join(
        f'{{"id":{i + 1},"file_name":"{i + 1:012d}.jpg","width":{w},"height":{h}}}'
        for i, (w, h) in enumerate(zip(widths.tolist(), heights.tolist()))
    )
    anns = ",".join(
        f'{{"id":{j + 1},"image_id":{im + 1},"category_id":{c},"bbox":[{a},{b},{c_},{d}],'
        f'"area":{round(c_ * d, 2)},"iscrowd":{cr}}}'
        for j, (im, c, a, b, c_, d, cr) in enumerate(
            zip(
                image_of_box.tolist(),
                cats.tolist(),
                x.tolist(),
                y.tolist(),
                bw.tolist(),
                bh.tolist(),
                crowd.tolist(),
            )
        )
    )
    categories = json.dumps(
        [{"id": i + 1, "name": n, "supercategory": "thing"} for i, n in enumerate(COCO80)]
    )
    path.write_text(f'{{"images":[{images}],"annotations":[{anns}],"categories":{categories}}}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=118_287)
    parser.add_argument("--boxes", type=int, default=860_001)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--negative-ratio", type=float, default=0.5)
    parser.add_argument("--eval-cap", type=int, default=None, help="eval images per category (default: all)")
    parser.add_argument(
        "--layout",
        choices=["coco", "uniform"],
        default="coco",
        help="categories per image: COCO-like (~2.7) or independent per box (~6)",
    )
    parser.add_argument("--progress", action="store_true", help="show the builder's progress bars")
    parser.add_argument("--write-only", type=Path, help=argparse.SUPPRESS)  # the generator's child process
    args = parser.parse_args(argv)
    if args.write_only:
        write_coco_like(args.write_only, args.images, args.boxes, args.layout)
        return 0

    with tempfile.TemporaryDirectory(prefix="vrft-bench-") as tmp:
        ann = Path(tmp) / "instances_train.json"
        start = time.perf_counter()
        # In a child process, so that the peak RSS below is the builder's alone.
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--images",
                str(args.images),
                "--boxes",
                str(args.boxes),
                "--layout",
                args.layout,
                "--write-only",
                str(ann),
            ],
            check=True,
        )
        generated = time.perf_counter() - start
        print(
            f"generated {ann.stat().st_size / 1e6:.0f} MB JSON ({args.images} images, {args.boxes} boxes, "
            f"80 categories, layout {args.layout}) in {generated:.1f} s",
            flush=True,
        )
        config = DatasetConfig(
            train=SourceConfig(kind="coco", annotations=str(ann), images=str(Path(tmp) / "img")),
            shots=args.shots,
            negative_ratio=args.negative_ratio,
            eval_max_per_category=args.eval_cap,
            load_images=False,
            verify_images=False,
        )
        start, cpu_start = time.perf_counter(), time.process_time()
        result = build_dataset(config, Path(tmp) / "out", progress=args.progress)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB
    # CPU time is printed too: on a shared machine it varies much less than wall time.
    print(
        f"build_dataset: {wall:.1f} s wall ({cpu:.1f} s CPU), rows train={result.num_rows['train']} "
        f"eval={result.num_rows['eval']}, peak RSS {peak_gb:.2f} GB"
    )
    ok = wall <= 60 and peak_gb <= 4
    print("goal (<= 60 s, <= 4 GB):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
