"""Artifact store: directories with a SHA-256 manifest, in S3 or on a file system, chosen by URI.

Stages hand each other directories (a dataset, a checkpoint, predictions). The store moves a
directory to ``s3://bucket/prefix/`` or ``file:///abs/path/`` and back, with two guarantees:

* a reader never sees a manifest for a partial upload: the files go first, ``manifest.json`` last
  (and an overwrite removes the old manifest first), so "the manifest is there" means "complete";
* a reader never uses a wrong file: :meth:`ArtifactStore.download_dir` checks the object listing
  and every downloaded file against the manifest's sizes and SHA-256 and raises
  :class:`ArtifactIntegrityError` naming the object and what differs; the files land in a
  temporary sibling that is renamed into place only when everything matched.

Directory URIs are canonical with a trailing slash. Run-scoped prefixes:

>>> run_prefix("s3://vrft", "20261121-abc", "grpo", "checkpoint")
's3://vrft/runs/20261121-abc/grpo/checkpoint/'
>>> run_prefix("file:///data/artifacts/", "r1", "dataset")
'file:///data/artifacts/runs/r1/dataset/'

S3 credentials come only from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
optional ``AWS_SESSION_TOKEN``), never from arguments that could end up in logs or parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from vrft.io import (
    MANIFEST_NAME,
    ManifestError,
    atomic_directory,
    atomic_write_bytes,
    sha256_file,
    verify_manifest,
    write_manifest,
)

MiB = 1024 * 1024
# Files above this go up and down in parts (S3's minimum part size is 5 MiB). 64 MiB keeps small
# files to one request and a multi-GB checkpoint well under S3's 10,000-part limit.
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_REGION = "us-east-1"
# The store root under which stages keep run-scoped artifacts (run_prefix(root, run_id, stage)).
STORE_ROOT_ENV = "VRFT_ARTIFACT_ROOT"
# Checked in this order when no endpoint_url is passed; unset means AWS itself.
ENDPOINT_ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactIntegrityError(ManifestError):
    """What is stored does not match its manifest: an object is corrupted, truncated, missing or extra."""

    def __init__(self, uri: str, problem: str) -> None:
        super().__init__(f"{uri}: {problem}")
        self.uri = uri
        self.problem = problem


class ArtifactNotFoundError(FileNotFoundError):
    """No complete artifact at a URI: nothing was uploaded there, or the upload did not finish."""


class ArtifactExistsError(FileExistsError):
    """An upload would replace objects that are already there and overwrite was not asked for."""


@dataclass(frozen=True)
class Location:
    """A parsed store URI: ``scheme`` (``s3``/``file``), ``container`` (bucket, or ``""``), ``key``.

    ``key`` has no leading or trailing slash; for ``file`` it is the absolute path without its
    leading slash, so both backends address objects as ``key/relative/path``.
    """

    scheme: str
    container: str
    key: str

    @property
    def uri(self) -> str:
        """Canonical directory URI, with a trailing slash."""
        path = f"{self.key}/" if self.key else ""
        if self.scheme == "s3":
            return f"s3://{self.container}/{path}"
        return Path("/" + path).as_uri() + ("/" if path else "")

    def child(self, relative: str) -> Location:
        """This location extended by a relative ``a/b`` path (no ``..``, no absolute paths)."""
        parts = [p for p in relative.strip("/").split("/") if p]
        if any(p in (".", "..") for p in parts) or relative.startswith("/"):
            raise ValueError(f"{relative!r}: expected a relative key without '.' or '..' segments")
        return Location(self.scheme, self.container, "/".join([self.key, *parts]).strip("/"))


def parse_uri(uri: str) -> Location:
    """Parse ``s3://bucket/prefix`` or ``file:///abs/path``; anything else is a ``ValueError``."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{uri!r}: an s3:// URI needs a bucket (s3://bucket/prefix)")
        return Location("s3", parsed.netloc, parsed.path.strip("/"))
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{uri!r}: a file:// URI needs an absolute path (file:///abs/path)")
        path = unquote(parsed.path)
        if not path.startswith("/"):
            raise ValueError(f"{uri!r}: a file:// URI needs an absolute path (file:///abs/path)")
        return Location("file", "", os.path.normpath(path).strip("/"))
    raise ValueError(f"{uri!r}: unsupported artifact URI (expected s3://bucket/prefix or file:///abs/path)")


def run_prefix(root_uri: str, run_id: str, stage: str, *names: str) -> str:
    """``ROOT/runs/<run_id>/<stage>/[<name>/...]``: where one pipeline run's stage keeps its outputs.

    Each part must be one safe path segment (letters, digits, ``.``, ``_``, ``-``), so a run id
    or stage name can never escape its prefix.
    """
    for part in (run_id, stage, *names):
        if not _SEGMENT.match(part) or part in (".", ".."):
            raise ValueError(
                f"{part!r}: run ids, stages and names must be single path segments "
                "of letters, digits, '.', '_' and '-'"
            )
    return parse_uri(root_uri).child("/".join(["runs", run_id, stage, *names])).uri


def _safe_relative_path(rel: Any, where: str) -> str:
    """Reject manifest entries that would write outside the download directory."""
    if not isinstance(rel, str) or not rel:
        raise ArtifactIntegrityError(where, f"manifest lists an invalid file name {rel!r}")
    path = PurePosixPath(rel)
    if path.is_absolute() or any(p in ("", ".", "..") for p in rel.split("/")) or rel == MANIFEST_NAME:
        raise ArtifactIntegrityError(where, f"manifest lists an unsafe file name {rel!r}")
    return rel


def _parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    """Load and sanity-check manifest bytes; every problem names the manifest object."""
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactIntegrityError(where, f"manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ArtifactIntegrityError(where, "manifest has no 'files' mapping")
    for rel, entry in manifest["files"].items():
        _safe_relative_path(rel, where)
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not _SHA256.match(entry["sha256"])
            or not isinstance(entry.get("size"), int)
            or isinstance(entry["size"], bool)
            or entry["size"] < 0
        ):
            raise ArtifactIntegrityError(where, f"manifest entry for {rel!r} needs a sha256 and a size")
    return manifest


class ArtifactStore(ABC):
    """A place that holds manifest-verified directories; one backend per URI scheme.

    Methods that take a ``target`` accept a full URI of this store (``s3://bucket/a/b/``) or a key
    relative to the store's root URI (``a/b``).
    """

    def __init__(self, root: Location) -> None:
        self.root = root

    @staticmethod
    def from_uri(
        uri: str, *, endpoint_url: str | None = None, multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    ) -> ArtifactStore:
        """The store for ``uri``'s scheme, rooted at ``uri``. ``endpoint_url`` and
        ``multipart_threshold`` apply to S3 only (see :class:`S3ArtifactStore`)."""
        root = parse_uri(uri)
        if root.scheme == "s3":
            return S3ArtifactStore(root, endpoint_url=endpoint_url, multipart_threshold=multipart_threshold)
        return FileArtifactStore(root)

    @property
    def root_uri(self) -> str:
        return self.root.uri

    def resolve(self, target: str = "") -> Location:
        """``target`` (a URI of this store, or a key relative to the root) as a location."""
        if "://" not in target:
            return self.root.child(target)
        loc = parse_uri(target)
        if (loc.scheme, loc.container) != (self.root.scheme, self.root.container):
            raise ValueError(f"{target!r} is not in the store {self.root_uri!r}")
        return loc

    def upload_dir(self, local_dir: str | Path, target: str = "", *, overwrite: bool = False) -> str:
        """Upload ``local_dir`` (files first, ``manifest.json`` last) to ``target``; return its URI.

        A directory without a manifest gets one (:func:`vrft.io.write_manifest`); one with a
        manifest is verified first, so a locally damaged directory is never published. Objects
        already under ``target`` are an :class:`ArtifactExistsError` unless ``overwrite`` (a
        retried stage): then the old manifest is removed first, and objects the new directory does
        not have are deleted before the new manifest is written.
        """
        src = Path(local_dir)
        if not src.is_dir():
            raise FileNotFoundError(f"{src}: not a directory")
        manifest = verify_manifest(src) if (src / MANIFEST_NAME).is_file() else write_manifest(src)
        dest = self.resolve(target)
        if not dest.key:
            raise ValueError(f"{dest.uri}: upload into a prefix, not the root of the store")
        prefix = dest.key + "/"
        existing = self._list(prefix)
        if existing and not overwrite:
            raise ArtifactExistsError(
                f"{dest.uri}: already holds {len(existing)} object(s); pass overwrite=True to replace them"
            )
        manifest_key = prefix + MANIFEST_NAME
        self._delete([manifest_key])
        wanted = {prefix + rel for rel in manifest["files"]}
        for rel in manifest["files"]:
            self._put(src / rel, prefix + rel)
        self._delete(sorted(set(existing) - wanted - {manifest_key}))
        self._put(src / MANIFEST_NAME, manifest_key)
        return dest.uri

    def download_dir(
        self,
        target: str,
        local_dir: str | Path,
        *,
        overwrite: bool = False,
        manifest_sha256: str | None = None,
    ) -> Path:
        """Download the artifact at ``target`` into ``local_dir``, verified against its manifest.

        ``manifest_sha256``: the SHA-256 the writer recorded for its manifest (KFP carries it in
        the artifact's metadata). A prefix whose manifest differs, e.g. one replaced by another
        run or sweep iteration, is an :class:`ArtifactIntegrityError` even if it is complete and
        self-consistent.

        The listing is compared with the manifest first (missing, extra and wrong-size objects
        fail before anything is downloaded), then every downloaded file's size and SHA-256. Files
        go to a temporary sibling of ``local_dir`` that is renamed into place only when all match;
        on any error nothing is left behind. An existing ``local_dir`` is an error unless
        ``overwrite``.
        """
        raw, prefix, files = self._checked_listing(target, manifest_sha256)
        with atomic_directory(local_dir, overwrite=overwrite) as tmp:
            for rel, entry in files.items():
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                self._get_checked(prefix + rel, entry, dest)
            atomic_write_bytes(tmp / MANIFEST_NAME, raw)
        return Path(local_dir)

    def verify(self, target: str = "", *, manifest_sha256: str | None = None) -> None:
        """Check the artifact at ``target`` as :meth:`download_dir` would, keeping nothing: its
        manifest (against ``manifest_sha256`` when given), the object listing, and every object's
        size and SHA-256 (read one at a time through a temporary file). Raises what
        :meth:`download_dir` raises."""
        import tempfile

        _, prefix, files = self._checked_listing(target, manifest_sha256)
        with tempfile.TemporaryDirectory(prefix="vrft-verify-") as tmp:
            scratch = Path(tmp) / "object"
            for rel, entry in files.items():
                self._get_checked(prefix + rel, entry, scratch)
                scratch.unlink()

    def _checked_listing(
        self, target: str, manifest_sha256: str | None
    ) -> tuple[bytes, str, dict[str, dict[str, Any]]]:
        """(manifest bytes, key prefix, files) of the artifact at ``target`` once its manifest and
        the object listing agree (sizes included); nothing has been downloaded yet."""
        loc = self.resolve(target)
        prefix = loc.key + "/"
        manifest_key = prefix + MANIFEST_NAME
        raw = self._read_bytes(manifest_key)
        if raw is None:
            raise ArtifactNotFoundError(
                f"{loc.uri}: no {MANIFEST_NAME} (nothing uploaded here, or the upload did not finish)"
            )
        if manifest_sha256 is not None:
            found = hashlib.sha256(raw).hexdigest()
            if found != manifest_sha256:
                raise ArtifactIntegrityError(
                    self._object_uri(manifest_key),
                    f"manifest is not the one its writer published (recorded SHA-256 {manifest_sha256[:12]}..., "
                    f"found {found[:12]}...): the prefix was replaced after the upload",
                )
        files: dict[str, dict[str, Any]] = _parse_manifest(raw, self._object_uri(manifest_key))["files"]
        listing = self._list(prefix)
        listing.pop(manifest_key, None)
        expected = {prefix + rel: entry for rel, entry in files.items()}
        for key in sorted(set(expected) | set(listing)):
            if key not in expected:
                raise ArtifactIntegrityError(
                    self._object_uri(key), "object is not in the manifest (extra object)"
                )
            if key not in listing:
                raise ArtifactIntegrityError(
                    self._object_uri(key), "object listed in the manifest is missing"
                )
            self._check_size(key, expected[key]["size"], listing[key])
        return raw, prefix, files

    def _get_checked(self, key: str, entry: dict[str, Any], dest: Path) -> None:
        """Download one object to ``dest`` and check its size and SHA-256 against the manifest."""
        self._get(key, dest)
        self._check_size(key, entry["size"], dest.stat().st_size)
        digest = sha256_file(dest)
        if digest != entry["sha256"]:
            raise ArtifactIntegrityError(
                self._object_uri(key),
                f"SHA-256 differs from the manifest (recorded {entry['sha256'][:12]}..., found {digest[:12]}...)",
            )

    def exists(self, target: str = "") -> bool:
        """Whether a complete artifact (its manifest) is at ``target``."""
        return self._exists(self.resolve(target).key + "/" + MANIFEST_NAME)

    def children(self, target: str = "") -> list[str]:
        """The names of the directories directly under ``target`` (complete artifacts or not), sorted."""
        prefix = self.resolve(target).key + "/"
        return sorted(
            {key[len(prefix) :].split("/", 1)[0] for key in self._list(prefix) if "/" in key[len(prefix) :]}
        )

    def list_objects(self, target: str = "") -> dict[str, int]:
        """``{relative name: size}`` of every object under ``target`` (any files, not only artifacts)."""
        prefix = self.resolve(target).key + "/"
        return {key[len(prefix) :]: size for key, size in self._list(prefix).items()}

    def fetch_object(self, target: str, dest: str | Path) -> bool:
        """Download the single object at ``target`` to ``dest`` (atomically); False if there is none.

        For source data, which carries no manifest (botocore checks each body against its
        Content-Length, so a cut connection is an error, not a short file).
        """
        key = self.resolve(target).key
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.downloading-{secrets.token_hex(6)}")
        try:
            try:
                self._get(key, tmp)
            except Exception:
                if not self._exists(key):
                    return False
                raise
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def delete_dir(self, target: str) -> int:
        """Delete the artifact at ``target``: its manifest first (readers then see it as incomplete),
        then every other object under it. Returns the number of objects deleted."""
        loc = self.resolve(target)
        if not loc.key:
            raise ValueError(f"{loc.uri}: refusing to delete the root of the store")
        prefix = loc.key + "/"
        keys = list(self._list(prefix))
        self._delete([prefix + MANIFEST_NAME])
        self._delete(sorted(set(keys) - {prefix + MANIFEST_NAME}))
        return len(keys)

    def _check_size(self, key: str, recorded: int, found: int) -> None:
        if found != recorded:
            what = "truncated" if found < recorded else "longer than recorded"
            raise ArtifactIntegrityError(
                self._object_uri(key),
                f"size differs from the manifest ({what}: recorded {recorded} bytes, found {found})",
            )

    # Backend primitives. Keys are the location keys of objects: "prefix/relative/path".
    @abstractmethod
    def _object_uri(self, key: str) -> str:
        """The URI of one object, for error messages."""

    @abstractmethod
    def _list(self, prefix: str) -> dict[str, int]:
        """``{key: size}`` of every object under ``prefix`` (which ends with ``/``)."""

    @abstractmethod
    def _read_bytes(self, key: str) -> bytes | None:
        """An object's bytes, or ``None`` if it does not exist."""

    @abstractmethod
    def _exists(self, key: str) -> bool:
        """Whether an object exists."""

    @abstractmethod
    def _get(self, key: str, dest: Path) -> None:
        """Copy an object to the local file ``dest``."""

    @abstractmethod
    def _put(self, src: Path, key: str) -> None:
        """Store the local file ``src`` as an object; readers see the old or the whole new object."""

    @abstractmethod
    def _delete(self, keys: Iterable[str]) -> None:
        """Delete objects; missing ones are not an error."""


def _endpoint_from_env() -> str | None:
    return next((os.environ[name] for name in ENDPOINT_ENV_VARS if os.environ.get(name)), None)


#: This process's S3 clients by (endpoint, SHA-256 of the credentials, region): a stage opens the
#: store several times. Clients are thread-safe; a forked child starts without them (they hold the
#: parent's connections).
_S3_CLIENTS: dict[tuple[str | None, str, str], Any] = {}
_MAX_S3_CLIENTS = 8
#: The boto3 session every client of this process is made from, credentials given per client. Its
#: botocore loader keeps S3's service description once parsed (a megabyte of JSON: about half a
#: second of CPU here, for every client made from a new session). A forked child keeps it: it holds
#: no connection and no credentials.
_BOTO3_SESSION: Any = None
_BOTO3_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _BOTO3_LOCK
    _S3_CLIENTS.clear()
    _BOTO3_LOCK = threading.Lock()  # another thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _boto3_session() -> Any:
    global _BOTO3_SESSION
    with _BOTO3_LOCK:
        if _BOTO3_SESSION is None:
            import boto3

            _BOTO3_SESSION = boto3.session.Session()
        return _BOTO3_SESSION


def load_s3_description() -> None:
    """Parse botocore's description of S3 into this process's session (a client made and dropped,
    no request sent): the fork server calls this, so that every task forked from it makes its S3
    clients without parsing it again."""
    unused = {"AWS_ACCESS_KEY_ID": "unused", "AWS_SECRET_ACCESS_KEY": "unused"}
    _new_s3_client("http://127.0.0.1:9", "us-east-1", unused)


def _s3_client(endpoint_url: str | None, region: str) -> Any:
    """The S3 client of ``endpoint_url`` and ``region`` with the environment's credentials (read
    from it, so that they are never an argument a traceback prints)."""
    credentials = "\0".join(
        (
            os.environ["AWS_ACCESS_KEY_ID"],
            os.environ["AWS_SECRET_ACCESS_KEY"],
            os.environ.get("AWS_SESSION_TOKEN") or "",
        )
    )
    key = (endpoint_url, hashlib.sha256(credentials.encode()).hexdigest(), region)
    if key in _S3_CLIENTS:
        return _S3_CLIENTS[key]
    client = _new_s3_client(endpoint_url, region, os.environ)
    while len(_S3_CLIENTS) >= _MAX_S3_CLIENTS:
        _S3_CLIENTS.pop(next(iter(_S3_CLIENTS)))  # the oldest
    _S3_CLIENTS[key] = client
    return client


def _new_s3_client(endpoint_url: str | None, region: str, environ: Any) -> Any:
    """A new client from this process's session, with the credentials ``environ`` holds."""
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 8, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
        # Custom endpoints (SeaweedFS, MinIO, 127.0.0.1) do not resolve bucket subdomains.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    session = _boto3_session()
    with _BOTO3_LOCK:  # a botocore session is not thread-safe; its clients are
        return session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=environ["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=environ["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=environ.get("AWS_SESSION_TOKEN") or None,
            config=config,
        )


class S3ArtifactStore(ArtifactStore):
    """S3 (or any S3-compatible server) through boto3.

    The endpoint is ``endpoint_url`` or the first of :data:`ENDPOINT_ENV_VARS` set; credentials are
    read from the environment only, so nothing that gets logged carries them and no shared
    config file or instance-metadata service is consulted. Requests are retried (botocore
    "standard" mode, 8 attempts); files above ``multipart_threshold`` move in parts of that size.
    """

    def __init__(
        self,
        root: Location,
        *,
        endpoint_url: str | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        super().__init__(root)
        access_key = os.environ.get("AWS_ACCESS_KEY_ID")
        secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not access_key or not secret_key:
            raise PermissionError(
                "S3 artifact store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
            )
        self.endpoint_url = endpoint_url or _endpoint_from_env()
        self.client = _s3_client(
            self.endpoint_url,
            os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
        )
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(multipart_threshold, 5 * MiB),
            max_concurrency=4,
        )

    @property
    def bucket(self) -> str:
        return self.root.container

    def _object_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _list(self, prefix: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):  # a directory marker some servers keep, not a file
                    found[obj["Key"]] = obj["Size"]
        return found

    def _read_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _get(self, key: str, dest: Path) -> None:
        self.client.download_file(self.bucket, key, str(dest), Config=self.transfer)

    def _put(self, src: Path, key: str) -> None:
        self.client.upload_file(str(src), self.bucket, key, Config=self.transfer)

    def _delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise OSError(
                    f"{self._object_uri(first['Key'])}: delete failed ({first.get('Code')}: "
                    f"{first.get('Message')})"
                )


class FileArtifactStore(ArtifactStore):
    """A directory tree on a (shared) file system; each object is a file, replaced atomically."""

    def _path(self, key: str) -> Path:
        return Path("/" + key)

    def _object_uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def _list(self, prefix: str) -> dict[str, int]:
        base = self._path(prefix)
        if not base.is_dir():
            return {}
        return {
            prefix + p.relative_to(base).as_posix(): p.stat().st_size
            for p in sorted(base.rglob("*"))
            if p.is_file()
        }

    def _read_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _get(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._path(key), dest)

    def _put(self, src: Path, key: str) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.uploading-{secrets.token_hex(6)}")
        try:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def _delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)


def upload_dir(local_dir: str | Path, uri: str, *, overwrite: bool = False) -> str:
    """Upload ``local_dir`` to the full ``uri`` (see :meth:`ArtifactStore.upload_dir`)."""
    return ArtifactStore.from_uri(uri).upload_dir(local_dir, overwrite=overwrite)


def download_dir(
    uri: str, local_dir: str | Path, *, overwrite: bool = False, manifest_sha256: str | None = None
) -> Path:
    """Download and verify the artifact at ``uri`` (see :meth:`ArtifactStore.download_dir`)."""
    return ArtifactStore.from_uri(uri).download_dir(
        uri, local_dir, overwrite=overwrite, manifest_sha256=manifest_sha256
    )
