"""Tiny real datasets (PNG/JPEG files written with PIL) for the stage-1 tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vrft.config import from_dict
from vrft.data import DatasetConfig, build_dataset

W, H = 64, 48

# Ten images. cat: images 1-6 (image 1 has three cats) plus a crowd region in image 7;
# dog: images 4-9; bus: image 10 only. So "cat" has 6 usable images, "dog" 6, "bus" 1.
TINY_CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bus"}]


def tiny_coco_data() -> dict[str, Any]:
    images = [{"id": i, "file_name": f"{i:03d}.png", "width": W, "height": H} for i in range(1, 11)]
    anns: list[dict[str, Any]] = []

    def add(image_id: int, cat: int, box: list[float], crowd: int = 0) -> None:
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": image_id,
                "category_id": cat,
                "bbox": box,
                "iscrowd": crowd,
                "area": box[2] * box[3],
            }
        )

    add(1, 1, [1, 1, 10, 10])
    add(1, 1, [20, 5, 12, 8])
    add(1, 1, [40, 20, 20, 20])
    for i in range(2, 7):
        add(i, 1, [2, 2, 20 + i, 15])
    add(7, 1, [5, 5, 30, 30], crowd=1)
    for i in range(4, 10):
        add(i, 2, [30, 10, 25, 30])
    add(10, 3, [0, 0, W, H])
    return {"images": images, "annotations": anns, "categories": copy.deepcopy(TINY_CATEGORIES)}


class Fixtures:
    """Writers for small sources under one tmp_path, and a build helper."""

    tiny = staticmethod(tiny_coco_data)

    def __init__(self, root: Path) -> None:
        self.root = root

    def image(
        self, path: Path, size: tuple[int, int] = (W, H), color: tuple[int, int, int] = (200, 30, 30)
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
        Image.new("RGB", size, color).save(path, format=fmt)
        return path

    def coco(
        self, data: dict[str, Any] | None = None, name: str = "coco", write_images: bool = True
    ) -> dict[str, str]:
        """Write ``data`` (default: the tiny set) and its images; return the source config."""
        data = tiny_coco_data() if data is None else data
        base = self.root / name
        ann = base / "instances.json"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(json.dumps(data))
        if write_images:
            for im in data["images"]:
                self.image(
                    base / "images" / im["file_name"],
                    (im["width"], im["height"]),
                    color=(im["id"] * 20 % 255, 80, 120),
                )
        return {"kind": "coco", "annotations": str(ann), "images": str(base / "images")}

    def config(self, **fields: Any) -> DatasetConfig:
        return from_dict(DatasetConfig, fields)

    def build(self, out: str = "out", **fields: Any):
        return build_dataset(self.config(**fields), self.root / out, progress=False)

    def leftovers(self, out: str = "out") -> list[str]:
        """Anything a failed build of ``out`` left in tmp_path (the output or a temporary sibling)."""
        return sorted(p.name for p in self.root.iterdir() if p.name == out or p.name.startswith(f".{out}."))


@pytest.fixture
def fx(tmp_path: Path) -> Fixtures:
    return Fixtures(tmp_path)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Synthetic sources with no path generate into a cache: keep it inside the test's tmp_path."""
    monkeypatch.setenv("VRFT_CACHE_DIR", str(tmp_path / "cache"))
