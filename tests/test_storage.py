"""Artifact store: round trips and integrity checks on moto's in-process S3 and on file://.

The same checks against a real S3 server (SeaweedFS) run in tests/test_services.py, which starts it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from vrft.io import MANIFEST_NAME, ManifestError, write_manifest
from vrft.storage import (
    ArtifactExistsError,
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStore,
    Location,
    MiB,
    S3ArtifactStore,
    download_dir,
    parse_uri,
    run_prefix,
    upload_dir,
)

BUCKET = "vrft-test"


def make_tree(root: Path) -> dict[str, bytes]:
    """A nested directory with text, binary and empty files; returns {relative path: bytes}."""
    files = {
        "a.txt": b"hello\n",
        "sub/b.bin": bytes(range(256)) * 40,
        "sub/deeper/c.json": b'{"x": 1}\n',
        "sub/empty": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


class Backend:
    """Direct access to the objects behind a store, to damage them the way storage can fail."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def key(self, uri: str, rel: str) -> str:
        return parse_uri(uri).key + "/" + rel

    def read(self, uri: str, rel: str) -> bytes:
        data = self.store._read_bytes(self.key(uri, rel))
        assert data is not None
        return data

    def write(self, uri: str, rel: str, data: bytes) -> None:
        key = self.key(uri, rel)
        if isinstance(self.store, S3ArtifactStore):
            self.store.client.put_object(Bucket=self.store.bucket, Key=key, Body=data)
        else:
            Path("/" + key).parent.mkdir(parents=True, exist_ok=True)
            Path("/" + key).write_bytes(data)

    def delete(self, uri: str, rel: str) -> None:
        self.store._delete([self.key(uri, rel)])


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's in-process S3 with credentials in the environment and no custom endpoint."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield


@pytest.fixture(params=["s3", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "s3":
        request.getfixturevalue("s3_env")
        return ArtifactStore.from_uri(f"s3://{BUCKET}/artifacts")
    return ArtifactStore.from_uri((tmp_path / "store").as_uri())


def test_round_trip_of_a_nested_directory(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    uri = store.upload_dir(src, "runs/r1/dataset")
    assert uri == store.root_uri + "runs/r1/dataset/"
    assert (src / MANIFEST_NAME).is_file(), "a directory without a manifest gets one"
    assert store.exists(uri) and store.exists("runs/r1/dataset")
    assert not store.exists("runs/r1/other")

    out = store.download_dir(uri, tmp_path / "out")
    assert read_tree(out) == files
    assert (out / MANIFEST_NAME).read_bytes() == (src / MANIFEST_NAME).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"] + (["store"] if "file" in uri else [])


def test_manifest_extras_survive_and_prefix_siblings_are_not_mixed_in(
    store: ArtifactStore, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    write_manifest(src, {"seed": 7})
    sibling = tmp_path / "sibling"
    make_tree(sibling)
    store.upload_dir(src, "runs/r1/grpo")
    store.upload_dir(sibling, "runs/r1/grpo2")  # shares the string prefix "runs/r1/grpo"
    manifest = json.loads((store.download_dir("runs/r1/grpo", tmp_path / "out") / MANIFEST_NAME).read_text())
    assert manifest["seed"] == 7


def test_a_locally_damaged_directory_is_not_published(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    write_manifest(src)
    (src / "a.txt").write_bytes(b"HELLO\n")
    with pytest.raises(ManifestError, match="a.txt"):
        store.upload_dir(src, "runs/r1/dataset")
    assert not store.exists("runs/r1/dataset")


def test_replacing_an_artifact_needs_overwrite_and_drops_stale_objects(
    store: ArtifactStore, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    make_tree(first)
    (second / "only.txt").parent.mkdir(parents=True)
    (second / "only.txt").write_bytes(b"new\n")
    uri = store.upload_dir(first, "runs/r1/sft")
    with pytest.raises(ArtifactExistsError, match="overwrite"):
        store.upload_dir(second, uri)
    store.upload_dir(second, uri, overwrite=True)
    assert read_tree(store.download_dir(uri, tmp_path / "out")) == {"only.txt": b"new\n"}


def flip_byte(data: bytes) -> bytes:
    return data[:10] + bytes([data[10] ^ 0x01]) + data[11:]


DAMAGE = {
    "flipped": (
        lambda b, uri: b.write(uri, "sub/b.bin", flip_byte(b.read(uri, "sub/b.bin"))),
        "SHA-256 differs",
    ),
    "truncated": (lambda b, uri: b.write(uri, "sub/b.bin", b.read(uri, "sub/b.bin")[:-1]), "truncated"),
    "deleted": (lambda b, uri: b.delete(uri, "sub/b.bin"), "missing"),
    "extra": (lambda b, uri: b.write(uri, "sub/zz-extra.bin", b"?"), "not in the manifest"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_objects_are_detected_and_nothing_is_written(
    store: ArtifactStore, tmp_path: Path, damage: str
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    uri = store.upload_dir(src, "runs/r1/dataset")
    apply, message = DAMAGE[damage]
    apply(Backend(store), uri)
    damaged = "sub/zz-extra.bin" if damage == "extra" else "sub/b.bin"
    with pytest.raises(ArtifactIntegrityError, match=message) as info:
        store.download_dir(uri, tmp_path / "dl" / "out")
    assert info.value.uri == uri + damaged, "the error names the object"
    assert str(info.value).startswith(uri + damaged)
    assert not (tmp_path / "dl").exists() or list((tmp_path / "dl").iterdir()) == [], "nothing half-written"


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_verify_checks_what_a_download_checks_and_keeps_nothing(
    store: ArtifactStore, tmp_path: Path, damage: str
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    uri = store.upload_dir(src, "runs/r1/dataset")
    manifest_sha = hashlib.sha256((src / MANIFEST_NAME).read_bytes()).hexdigest()
    store.verify(uri, manifest_sha256=manifest_sha)  # intact: no error
    with pytest.raises(ArtifactIntegrityError, match="not the one its writer published"):
        store.verify(uri, manifest_sha256="0" * 64)
    apply, message = DAMAGE[damage]
    apply(Backend(store), uri)
    with pytest.raises(ArtifactIntegrityError, match=message):
        store.verify(uri, manifest_sha256=manifest_sha)


def test_a_missing_or_unfinished_artifact_is_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    uri = store.upload_dir(src, "runs/r1/dataset")
    Backend(store).delete(uri, MANIFEST_NAME)  # what a reader sees while an upload is in flight
    assert not store.exists(uri)
    with pytest.raises(ArtifactNotFoundError, match="no manifest.json"):
        store.download_dir(uri, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_manifest_cannot_write_outside_the_download_directory(store: ArtifactStore, tmp_path: Path) -> None:
    uri = store.root_uri + "runs/r1/evil/"
    sha = "0" * 64
    Backend(store).write(
        uri, MANIFEST_NAME, json.dumps({"files": {"../escape": {"sha256": sha, "size": 0}}}).encode()
    )
    with pytest.raises(ArtifactIntegrityError, match="unsafe file name"):
        store.download_dir(uri, tmp_path / "out")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out").exists()


def test_multipart_upload_and_download(s3_env: None, tmp_path: Path) -> None:
    src = tmp_path / "ckpt"
    src.mkdir()
    big = os.urandom(11 * MiB)
    (src / "model.safetensors").write_bytes(big)
    store = ArtifactStore.from_uri(f"s3://{BUCKET}/ck", multipart_threshold=5 * MiB)
    assert isinstance(store, S3ArtifactStore)
    uri = store.upload_dir(src, "r1")
    etag = store.client.head_object(Bucket=BUCKET, Key="ck/r1/model.safetensors")["ETag"]
    assert etag.strip('"').endswith("-3"), f"expected a 3-part multipart ETag, got {etag}"
    assert (download_dir(uri, tmp_path / "out") / "model.safetensors").read_bytes() == big


def test_module_helpers_take_full_uris(s3_env: None, tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    uri = upload_dir(tmp_path / "src", f"s3://{BUCKET}/runs/r2/report")
    assert uri == f"s3://{BUCKET}/runs/r2/report/"
    assert read_tree(download_dir(uri, tmp_path / "out")) == read_tree(tmp_path / "src")


def test_s3_credentials_and_endpoint_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(PermissionError, match="AWS_ACCESS_KEY_ID"):
        ArtifactStore.from_uri("s3://b/p")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    store = ArtifactStore.from_uri("s3://b/p")
    assert isinstance(store, S3ArtifactStore) and store.endpoint_url == "http://127.0.0.1:9"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:10")
    assert ArtifactStore.from_uri("s3://b/p").endpoint_url == "http://127.0.0.1:10"
    assert (
        ArtifactStore.from_uri("s3://b/p", endpoint_url="http://127.0.0.1:11").endpoint_url
        == "http://127.0.0.1:11"
    )


def in_a_forked_child(report: Callable[[], bytes]) -> bytes:
    """What ``report`` returns in a forked child of this process; the child exits 0 in any case."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.write(write, report())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        reported = answer.read()
    assert os.waitpid(child, 0)[1] == 0
    return reported


@pytest.mark.timeout(60)
def test_stores_of_one_endpoint_and_credentials_share_a_client_per_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stage opens the store several times: one S3 client per endpoint, credentials and region;
    other credentials, another client; a forked child never uses its parent's (pooled
    connections)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    first, second = ArtifactStore.from_uri("s3://b/p"), ArtifactStore.from_uri("s3://other/q")
    assert isinstance(first, S3ArtifactStore) and isinstance(second, S3ArtifactStore)
    assert first.client is second.client
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rotated")
    rotated = ArtifactStore.from_uri("s3://b/p")
    assert isinstance(rotated, S3ArtifactStore) and rotated.client is not first.client
    # the child reports whether its store got the parent's client object
    assert (
        in_a_forked_child(
            lambda: b"shared" if ArtifactStore.from_uri("s3://b/p").client is rotated.client else b"own"
        )
        == b"own"
    )


@pytest.mark.timeout(60)
def test_s3_description_is_parsed_once_per_process_and_each_client_signs_with_its_own_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every client of a process comes from one boto3 session, whose loader keeps S3's parsed service
    description (the fork server loads it; its forked tasks inherit it): no client parses it again,
    in this process or a forked child. Credentials stay per client."""
    import botocore.loaders

    from vrft import storage

    storage.load_s3_description()
    parsed: list[str] = []
    load_file = botocore.loaders.JSONFileLoader.load_file
    monkeypatch.setattr(
        botocore.loaders.JSONFileLoader,
        "load_file",
        lambda self, path: parsed.append(path) or load_file(self, path),
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "first-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    first = ArtifactStore.from_uri("s3://b/p", endpoint_url="http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "second-key")
    second = ArtifactStore.from_uri("s3://b/p", endpoint_url="http://127.0.0.1:10")
    assert isinstance(first, S3ArtifactStore) and isinstance(second, S3ArtifactStore)
    assert parsed == []

    def signed_by(store: S3ArtifactStore) -> str:  # the access key a presigned URL names (no request)
        from urllib.parse import parse_qs, urlsplit

        url = store.client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
        query = parse_qs(urlsplit(url).query)
        return (
            query["AWSAccessKeyId"][0]
            if "AWSAccessKeyId" in query
            else query["X-Amz-Credential"][0].split("/")[0]
        )

    assert (signed_by(first), signed_by(second)) == ("first-key", "second-key")

    def child_client() -> bytes:  # the child makes its own client and reports what it parsed for it
        store = ArtifactStore.from_uri("s3://b/p", endpoint_url="http://127.0.0.1:11")
        return f"{signed_by(store)} {len(parsed)}".encode()  # type: ignore[arg-type]

    assert in_a_forked_child(child_client) == b"second-key 0"


def test_uris_and_run_prefixes() -> None:
    assert run_prefix("s3://vrft/", "r1", "evaluate", "sft") == "s3://vrft/runs/r1/evaluate/sft/"
    assert run_prefix("file:///srv/a b", "r1", "report") == "file:///srv/a%20b/runs/r1/report/"
    assert parse_uri("file:///srv/a%20b/runs/").key == "srv/a b/runs"
    for bad in ("../x", "a/b", "", "-x"):
        with pytest.raises(ValueError, match="single path segments"):
            run_prefix("s3://vrft", bad, "grpo")
    for bad in ("s3:///prefix", "file://relative/path", "http://host/x", "/plain/path"):
        with pytest.raises(ValueError):
            parse_uri(bad)
    store = ArtifactStore.from_uri("file:///srv/store")
    with pytest.raises(ValueError, match="not in the store"):
        store.resolve("s3://other/x")
    with pytest.raises(ValueError, match="'..'"):
        store.resolve("a/../../etc")


def test_children_and_delete_dir(store: ArtifactStore, tmp_path: Path) -> None:
    make_tree(tmp_path / "a")
    store.upload_dir(tmp_path / "a", "set/one")
    store.upload_dir(tmp_path / "a", "set/two")
    assert store.children("set") == ["one", "two"]
    assert store.delete_dir("set/one") > 1
    assert store.children("set") == ["two"] and not store.exists("set/one") and store.exists("set/two")
    bucket_root = type(store).__new__(type(store))
    bucket_root.root = Location(store.root.scheme, store.root.container, "")
    with pytest.raises(ValueError, match="root of the store"):
        bucket_root.delete_dir("")
