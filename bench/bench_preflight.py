"""How long the preflight's source scan takes on a COCO-train-sized instances file, and its image tokens.

Writes a made-up instances JSON with COCO train2017's counts (118,287 images of COCO-like sizes,
860,001 annotations with short polygons, 80 categories: about 200 MB, where COCO's longer polygons
make 448 MB), once in the real file's order (images, then annotations) and once with the images last
(the worst case: the scan reads past every annotation), and times what the preflight does with it:
``vrft.preflight.images.scan_source`` reading the ``images`` and ``categories`` arrays, then every
image's tokens from a checkpoint's image processor. ``--json-load`` also times a plain ``json.load``
of the whole file for comparison (a few GB of memory).

    python bench/bench_preflight.py [--images 118287] [--annotations 860001] [--json-load]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from vrft.data.config import SourceConfig
from vrft.models.config import PAPER_MAX_PIXELS, ModelConfig
from vrft.preflight.images import scan_source
from vrft.preflight.tokens import ModelFiles

ROOT = Path(__file__).resolve().parents[1]
#: Widths and heights COCO images commonly have (the long side is 640 for most of them).
SIDES = [640, 640, 640, 612, 600, 500, 480, 427, 426, 424, 375, 360, 333]


def write_instances(path: Path, images: int, annotations: int, *, images_first: bool) -> None:
    rng = random.Random(0)
    records = []
    for i in range(images):
        long, short = 640, rng.choice(SIDES)
        width, height = (long, short) if rng.random() < 0.7 else (short, long)
        records.append(
            {"license": 1, "file_name": f"{i:012d}.jpg", "height": height, "width": width, "id": i + 1}
        )
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"info": {"description": "made up"}, "licenses": [],')

        def write_images() -> None:
            f.write('"images": [' + ",".join(json.dumps(r) for r in records) + "],")

        if images_first:
            write_images()
        f.write('"annotations": [')
        for k in range(annotations):
            x, y = rng.uniform(0, 500), rng.uniform(0, 300)
            ann = {
                "segmentation": [[round(x + rng.uniform(0, 80), 2) for _ in range(12)]],
                "area": round(rng.uniform(10, 9000), 2),
                "iscrowd": 0,
                "image_id": rng.randint(1, images),
                "bbox": [
                    round(x, 2),
                    round(y, 2),
                    round(rng.uniform(5, 120), 2),
                    round(rng.uniform(5, 120), 2),
                ],
                "category_id": rng.randint(1, 80),
                "id": k + 1,
            }
            f.write(("," if k else "") + json.dumps(ann))
        f.write("],")
        if not images_first:
            write_images()
        f.write(
            '"categories": [' + ",".join(json.dumps({"id": c + 1, "name": f"c{c}"}) for c in range(80)) + "]}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=118_287)
    parser.add_argument("--annotations", type=int, default=860_001)
    parser.add_argument("--json-load", action="store_true", help="also time json.load of the whole file")
    args = parser.parse_args(argv)
    files = ModelFiles(
        ModelConfig(
            name_or_path=str(ROOT / "configs" / "models" / "qwen2-vl-2b-instruct"),
            max_pixels=PAPER_MAX_PIXELS,
        )
    )
    with tempfile.TemporaryDirectory(prefix="bench-preflight-") as tmp:
        for images_first in (True, False):
            path = Path(tmp) / "instances.json"
            write_instances(path, args.images, args.annotations, images_first=images_first)
            size = path.stat().st_size / 2**20
            start = time.perf_counter()
            # What the preflight reads of a COCO source: the images array, then the categories.
            scanned = scan_source(SourceConfig(kind="coco", annotations=str(path), images="images"), "train")
            scan = time.perf_counter() - start
            records = scanned.sizes
            start = time.perf_counter()
            cache: dict[tuple[int, int], int] = {}
            tokens = [
                cache.setdefault((r.width, r.height), files.image_tokens(r.width, r.height)) for r in records
            ]
            count = time.perf_counter() - start
            order = "images before annotations" if images_first else "images after annotations"
            print(
                f"{size:.0f} MB, {order}: read {len(records):,} image sizes and the categories in {scan:.1f} s; "
                f"tokens of every image in {count:.2f} s (max {max(tokens)}, {len(cache)} distinct sizes)"
            )
            if args.json_load and not images_first:
                start = time.perf_counter()
                with open(path, encoding="utf-8") as f:
                    json.load(f)
                print(f"json.load of the whole file: {time.perf_counter() - start:.1f} s")
            path.unlink()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
