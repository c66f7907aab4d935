"""Image sizes read from a dataset's sources before it is built: streamed JSON, sampled headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vrft.config import from_dict
from vrft.data.config import DatasetConfig, SourceConfig
from vrft.preflight import images
from vrft.preflight.images import SourceText, json_array, scan_dataset, scan_source


def _coco(path: Path, image_sizes: list[tuple[int, int]], *, annotations_first: bool = False) -> Path:
    records = [
        {"id": i + 1, "file_name": f"{i:06d}.jpg", "width": w, "height": h}
        for i, (w, h) in enumerate(image_sizes)
    ]
    annotations = [
        {
            "id": k + 1,
            "image_id": 1 + k % len(records),
            "category_id": 1,
            "bbox": [1, 2, 3, 4],
            "area": 12,
            "iscrowd": 0,
        }
        for k in range(500)
    ]
    parts = {"info": {"description": 'a "quoted" ] bracket and "images": in a string'}}
    if annotations_first:
        parts["annotations"] = annotations
    parts["images"] = records
    parts["annotations"] = annotations
    parts["categories"] = [{"id": 1, "name": "stop sign"}, {"id": 2, "name": "fire hydrant"}]
    path.write_text(json.dumps(parts, indent=1), encoding="utf-8")
    return path


def test_the_images_array_is_streamed_record_by_record(tmp_path, monkeypatch):
    """Small read chunks force records to straddle chunk boundaries; every record comes back whole,
    whether the images come before or after the annotations."""
    monkeypatch.setattr(images, "_CHUNK", 97)
    sizes = [(640 + i, 480 - i) for i in range(300)]
    for first in (False, True):
        path = _coco(tmp_path / f"instances-{first}.json", sizes, annotations_first=first)
        records = list(json_array(path, "images"))
        assert [(r["width"], r["height"]) for r in records] == sizes
        assert [c["name"] for c in json_array(path, "categories")] == ["stop sign", "fire hydrant"]
    assert list(json_array(path, "no_such_array")) == []


def test_a_truncated_array_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('{"images": [{"id": 1, "width": 2, "height": 3}, {"id": 2, "wid', encoding="utf-8")
    with pytest.raises(ValueError, match="cut.json"):
        list(json_array(path, "images"))


def test_coco_scan_reads_every_size_and_the_category_names(tmp_path):
    path = _coco(tmp_path / "instances.json", [(640, 480), (1024, 768), (500, 333)])
    text = SourceText()
    scan = scan_source(
        SourceConfig(kind="coco", annotations=str(path), images=str(tmp_path / "img")), "train", text
    )
    assert [(s.width, s.height) for s in scan.sizes] == [(640, 480), (1024, 768), (500, 333)]
    assert scan.total == 3 and scan.sizes[1].name == str(tmp_path / "img" / "000001.jpg")
    assert text.categories == ["stop sign", "fire hydrant"]


def test_image_files_are_sampled_evenly_up_to_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "SAMPLE_LIMIT", 5)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(6):
            Image.new("RGB", (40 + i, 30)).save(tmp_path / label / f"{i}.png")
    text = SourceText()
    scan = scan_source(SourceConfig(kind="image_folder", path=str(tmp_path)), "train", text)
    assert scan.total == 12 and len(scan.sizes) == 5
    assert scan.sizes[0].name == "cat/0.png" and scan.sizes[-1].name == "dog/5.png"
    assert "sampled" in scan.describe()
    assert text.categories == ["cat", "dog"]


def test_a_source_not_readable_here_is_a_note_not_an_error(tmp_path):
    scan = scan_source(
        SourceConfig(kind="coco", annotations=str(tmp_path / "missing.json"), images="x"), "eval"
    )
    assert not scan.known and "not a file here" in scan.note
    assert "image sizes unknown" in scan.describe()


def test_generated_sources_have_the_configured_size_and_eval_reuses_train():
    config = from_dict(
        DatasetConfig,
        {
            "train": {
                "kind": "shapes_classification",
                "label": "colour",
                "n_images": 4,
                "image_size": [112, 96],
            },
            "noun": "shape",
        },
    )
    scans, text = scan_dataset(config)
    assert [s.split for s in scans] == ["train", "eval"]
    assert scans[0].generated and (scans[0].sizes[0].width, scans[0].sizes[0].height) == (112, 96)
    assert scans[0].total == 4 * 8 and scans[1].sizes == scans[0].sizes
    assert "red" in text.categories
