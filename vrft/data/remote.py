"""``s3://`` dataset sources: read through the artifact store's client, validated by the same readers.

A source field (``annotations``, ``images``, ``path``) may name an S3 object or prefix instead of a
local path. While a dataset is built, :class:`SourceMirror` keeps a temporary local mirror of the
objects it needs at ``<mirror>/<bucket>/<key>`` and the ordinary readers open the mirrored files,
so an S3 source is checked exactly like a local one. What is fetched:

* ``coco`` / ``lvis`` / ``manifest``: the annotation file, then only the images a split reads
  (the sampled train images and the evaluation images), each when it is first read;
* ``image_folder`` / ``lisa`` / ``hf`` (a ``save_to_disk`` directory): the whole prefix, since
  their readers list directories (a class folder, image + JSON pairs, arrow shards). For a large
  image-folder set, a CSV manifest (``kind: manifest``) fetches only the images it uses.

Objects come through :class:`vrft.storage.ArtifactStore` (credentials and endpoint from the
environment, retries, no shared config files). Errors keep the readers' wording and name the
S3 URIs (``s3://bucket/coco/train2017/1.jpg does not exist``), never the mirror's paths; the
mirror is deleted when the build ends.

>>> is_remote("s3://lab-data/coco/annotations/instances_val2017.json"), is_remote("/data/coco")
(True, False)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from vrft.data.errors import DatasetError, InvalidFileError

SCHEME = "s3://"
_FIELDS = ("annotations", "images", "path")
#: Kinds whose readers list directories: their prefixes are mirrored whole before reading.
WHOLE_PREFIX_KINDS = {"image_folder": ("path",), "lisa": ("path",), "hf": ("path",)}
_DOWNLOAD_THREADS = 8

F = TypeVar("F", bound=Callable[..., Any])
_current: contextvars.ContextVar[SourceMirror | None] = contextvars.ContextVar(
    "vrft_source_mirror", default=None
)


def is_remote(value: str) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


def remote_fields(cfg: Any) -> dict[str, str]:
    """The fields of a source config that name S3 objects or prefixes."""
    return {key: getattr(cfg, key) for key in _FIELDS if is_remote(getattr(cfg, key, ""))}


class SourceMirror:
    """A temporary local mirror of the S3 objects a dataset build reads (see the module docstring)."""

    def __init__(self, base: str | Path | None = None) -> None:
        if base is not None:
            Path(base).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="vrft-s3-sources-", dir=base))
        self._stores: dict[str, Any] = {}

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # Paths and URIs -----------------------------------------------------------------------------
    def local_path(self, uri: str) -> Path:
        """Where the object or prefix ``uri`` lives in the mirror."""
        bucket, _, key = uri[len(SCHEME) :].partition("/")
        if not bucket:
            raise InvalidFileError(uri, "", "", "an s3:// source needs a bucket (s3://bucket/key)")
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise InvalidFileError(uri, "", "", "'.' and '..' are not allowed in an s3:// source")
        return self.root.joinpath(bucket, *parts)

    def uri_of(self, path: str | Path) -> str | None:
        """The S3 URI behind a mirror path, or None if ``path`` is not in the mirror."""
        try:
            relative = Path(path).relative_to(self.root)
        except ValueError:
            return None
        return SCHEME + relative.as_posix()

    def in_uris(self, text: str) -> str:
        """``text`` with every mirror path replaced by its S3 URI (for error messages)."""
        return text.replace(f"{self.root}/", SCHEME).replace(str(self.root), SCHEME.rstrip("/"))

    def _store(self, uri: str) -> Any:
        from vrft.storage import ArtifactStore

        bucket = uri[len(SCHEME) :].partition("/")[0]
        if bucket not in self._stores:
            self._stores[bucket] = ArtifactStore.from_uri(f"{SCHEME}{bucket}")
        return self._stores[bucket]

    # Fetching -------------------------------------------------------------------------------------
    def fetch_object(self, uri: str) -> bool:
        """Mirror one object (if not mirrored yet); False when the store has no such object."""
        local = self.local_path(uri)
        if local.is_file():
            return True
        key = uri[len(SCHEME) :].partition("/")[2]
        try:
            return self._store(uri).fetch_object(key, local)
        except (OSError, ValueError) as exc:
            raise InvalidFileError(uri, "", "", f"cannot download ({exc})") from None
        except Exception as exc:  # botocore's ClientError & co.: access denied, no such bucket
            raise InvalidFileError(uri, "", "", f"cannot download ({type(exc).__name__}: {exc})") from None

    def fetch_prefix(self, uri: str, *, show_progress: bool) -> Path:
        """Mirror every object under the prefix ``uri``; an empty prefix is an error."""
        prefix = uri.rstrip("/")
        key = prefix[len(SCHEME) :].partition("/")[2]
        try:
            objects = self._store(uri).list_objects(key)
        except Exception as exc:
            raise InvalidFileError(uri, "", "", f"cannot list ({type(exc).__name__}: {exc})") from None
        if not objects:
            raise InvalidFileError(uri, "", "", "no objects under this prefix (expected a directory's files)")
        names = sorted(objects)
        with ThreadPoolExecutor(_DOWNLOAD_THREADS) as pool:
            results = pool.map(lambda name: self.fetch_object(f"{prefix}/{name}"), names)
            for _ in tqdm(results, total=len(names), desc=f"fetching {uri}", disable=not show_progress):
                pass
        return self.local_path(prefix)

    def ensure(self, path: str) -> None:
        """Before a reader opens ``path``: fetch it if it is a mirror path not fetched yet (a missing
        object stays missing, and the reader reports it as for a local file)."""
        uri = self.uri_of(path)
        if uri is not None and not Path(path).is_file():
            self.fetch_object(uri)

    # Sources -------------------------------------------------------------------------------------
    def stage(self, cfg: Any, *, show_progress: bool) -> Any:
        """``cfg`` with its S3 fields replaced by mirror paths; annotation files are fetched now,
        whole prefixes for the kinds that list directories, images later through :meth:`ensure`."""
        fields = remote_fields(cfg)
        if not fields:
            return cfg
        local = {}
        for key, uri in fields.items():
            if key in WHOLE_PREFIX_KINDS.get(cfg.kind, ()):
                local[key] = str(self.fetch_prefix(uri, show_progress=show_progress))
            elif key == "annotations":
                if not self.fetch_object(uri):
                    raise InvalidFileError(uri, "", "", "file not found")
                local[key] = str(self.local_path(uri))
            else:  # an image root: its images are fetched as they are read
                local[key] = str(self.local_path(uri.rstrip("/")))
        return replace(cfg, **local)

    def remap(self, exc: DatasetError) -> DatasetError:
        """The same error with S3 URIs in place of mirror paths."""
        return type(exc)(self.in_uris(exc.file), exc.record, exc.field, self.in_uris(exc.problem))


def current_mirror() -> SourceMirror | None:
    """The mirror of the dataset build in progress (see :func:`with_source_mirror`)."""
    return _current.get()


@contextlib.contextmanager
def source_mirror(config: Any) -> Iterator[SourceMirror | None]:
    """A :class:`SourceMirror` for the build of ``config`` when one of its sources is on S3, else None.

    The mirror sits in ``$VRFT_WORK_DIR`` when set (a cluster pod's scratch volume), else in the
    system's temporary directory, and is deleted on exit.
    """
    import os

    sources = [config.train] + ([config.eval] if config.eval is not None else [])
    if not any(remote_fields(source) for source in sources):
        yield None
        return
    mirror = SourceMirror(os.environ.get("VRFT_WORK_DIR") or None)
    token = _current.set(mirror)
    try:
        yield mirror
    except DatasetError as exc:
        raise mirror.remap(exc) from None
    finally:
        _current.reset(token)
        mirror.close()


def with_source_mirror(build: F) -> F:
    """Decorate a dataset build ``build(config, ...)`` so that its S3 sources are mirrored for it."""

    @functools.wraps(build)
    def wrapper(config: Any, *args: Any, **kwargs: Any) -> Any:
        with source_mirror(config):
            return build(config, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
