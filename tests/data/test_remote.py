"""s3:// dataset sources (vrft.data.remote): the same dataset as from local files, the same checks
and errors (naming the S3 objects), only the images a split uses fetched, nothing left behind.

S3 is moto's in-process server: the builder reads it through vrft.storage's boto3 client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import datasets
import pytest
from moto import mock_aws

from tests.data.test_classification import write_folder
from tests.data.test_grounding import _item, write_lisa
from vrft.data import ImageFileError, InvalidFileError
from vrft.data.remote import SourceMirror

BUCKET = "lab-data"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("VRFT_WORK_DIR", str(tmp_path / "work"))  # where the mirror lives (a pod's scratch)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def upload(client: Any, local: str | Path, prefix: str) -> str:
    """Every file under ``local`` as an object under ``s3://lab-data/<prefix>/``; returns that URI."""
    local = Path(local)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.put_object(
            Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(local).as_posix()}", Body=path.read_bytes()
        )
    return f"s3://{BUCKET}/{prefix}"


def rows(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """Every split's rows with the image bytes (not decoded), for exact comparison."""
    loaded = datasets.load_from_disk(str(directory))
    return {
        split: loaded[split].cast_column("image", datasets.Image(decode=False)).to_list() for split in loaded
    }


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The S3 objects the builds fetch, in order."""
    seen: list[str] = []
    original = SourceMirror.fetch_object

    def record(self: SourceMirror, uri: str) -> bool:
        seen.append(uri)
        return original(self, uri)

    monkeypatch.setattr(SourceMirror, "fetch_object", record)
    return seen


def test_a_coco_source_on_s3_builds_the_same_dataset_and_fetches_only_used_images(fx, s3, fetched, tmp_path):
    local = fx.coco()
    fx.build("local", train=local, categories=["cat", "dog"], shots=2, eval_max_per_category=2)
    root = upload(s3, Path(local["annotations"]).parent, "coco")
    remote = {"kind": "coco", "annotations": f"{root}/instances.json", "images": f"{root}/images"}
    result = fx.build("remote", train=remote, categories=["cat", "dog"], shots=2, eval_max_per_category=2)

    assert rows(fx.root / "remote") == rows(fx.root / "local")
    used = {r["file_name"] for split in rows(fx.root / "remote").values() for r in split}
    images = {uri.rsplit("/", 1)[1] for uri in fetched if "/images/" in uri}
    assert images == used and len(images) < 10  # the sampled and evaluated images, not all ten
    assert fetched[0] == f"{root}/instances.json"
    assert result.manifest["sources"]["train"]["files"] == {
        "instances.json": json.loads((fx.root / "local" / "manifest.json").read_text())["sources"]["train"][
            "files"
        ]["instances.json"]
    }
    assert not list((tmp_path / "work").iterdir())  # the mirror is gone


def test_image_folder_lisa_and_saved_datasets_on_s3_match_local_builds(fx, s3):
    folder = write_folder(fx, "flowers", {"rose": 5, "tulip": 4, "daisy": 3})
    lisa_train = write_lisa(fx, "lisa-train", {"b": _item(3), "c": _item(5), "f": _item(11)})
    lisa_val = write_lisa(fx, "lisa-val", {"d": _item(7), "e": _item(9)})
    image = {"bytes": (fx.root / "flowers" / "rose" / "000.jpg").read_bytes(), "path": None}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    saved = datasets.Dataset.from_dict({"image": [image] * 6, "label": [0, 1] * 3}, features=features)
    datasets.DatasetDict({"train": saved}).save_to_disk(str(fx.root / "hf"))

    cases = {
        "folder": (
            {"train": {"kind": "image_folder", "path": folder}, "noun": "flower", "shots": 2},
            {"train": {"kind": "image_folder", "path": upload(s3, folder, "flowers")}},
        ),
        "lisa": (
            {"train": {"kind": "lisa", "path": lisa_train}, "eval": {"kind": "lisa", "path": lisa_val},
             "preset": "lisa", "shots": None},
            {"train": {"kind": "lisa", "path": upload(s3, lisa_train, "lisa/train")},
             "eval": {"kind": "lisa", "path": upload(s3, lisa_val, "lisa/val")}},
        ),
        "hf": (
            {"train": {"kind": "hf", "path": str(fx.root / "hf")}, "noun": "thing", "shots": 2},
            {"train": {"kind": "hf", "path": upload(s3, fx.root / "hf", "saved/hf")}},
        ),
    }  # fmt: skip
    for name, (local, remote) in cases.items():
        fx.build(f"{name}-local", **local)
        result = fx.build(f"{name}-remote", **{**local, **remote})
        assert rows(fx.root / f"{name}-remote") == rows(fx.root / f"{name}-local"), name
    assert result.manifest["sources"]["train"]["dataset"] == f"s3://{BUCKET}/saved/hf"


def test_errors_name_the_s3_objects_in_one_line(fx, s3, tmp_path):
    data = fx.tiny()
    root = upload(s3, Path(fx.coco(data)["annotations"]).parent, "coco")
    s3.delete_object(Bucket=BUCKET, Key="coco/images/004.png")
    s3.put_object(Bucket=BUCKET, Key="broken/instances.json", Body=b'{"images": [')

    def error(**train: str) -> str:
        with pytest.raises((ImageFileError, InvalidFileError)) as failure:
            fx.build("out", train={"kind": "coco", **train}, categories=["cat", "dog"], shots=2)
        message = str(failure.value)
        assert len(message.splitlines()) == 1 and str(tmp_path) not in message, message
        return message

    missing = error(annotations=f"{root}/instances.json", images=f"{root}/images")
    assert f"image file {root}/images/004.png does not exist" in missing
    assert error(annotations=f"s3://{BUCKET}/broken/instances.json", images=f"{root}/images").startswith(
        f"s3://{BUCKET}/broken/instances.json: line 1 column 13: not valid JSON"
    )
    assert error(annotations=f"s3://{BUCKET}/nowhere.json", images=f"{root}/images") == (
        f"s3://{BUCKET}/nowhere.json: file not found"
    )
    assert "no objects under this prefix" in str(
        pytest.raises(
            InvalidFileError, fx.build, "out", train={"kind": "lisa", "path": f"s3://{BUCKET}/none"}
        ).value
    )
    assert fx.leftovers() == [] and not list((tmp_path / "work").iterdir())
