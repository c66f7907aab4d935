"""Small, dependable file helpers shared by every stage.

Stages hand their outputs to the next stage (and to S3) as directories, so two properties matter:
a crash never leaves a half-written file or directory where a finished one is expected
(:func:`atomic_write_bytes`, :func:`atomic_directory`), and a consumer can check that what it
reads is exactly what was written (:func:`write_manifest`, :func:`verify_manifest`).

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> with atomic_directory(root / "out") as tmp:
...     _ = atomic_write_text(tmp / "a.txt", "hello\\n")
...     manifest = write_manifest(tmp, {"seed": 0})
>>> sorted(manifest["files"])
['a.txt']
>>> verify_manifest(root / "out")["seed"]
0
>>> _ = (root / "out" / "a.txt").write_text("hellO\\n")
>>> verify_manifest(root / "out")
Traceback (most recent call last):
...
vrft.io.ManifestError: .../out/manifest.json: file 'a.txt': SHA-256 differs (recorded 5891b5b5..., found ...)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    """An output directory does not match its manifest (a file changed, is missing or is extra)."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks so large files need no memory.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x"
    >>> _ = p.write_bytes(b"abc")
    >>> sha256_file(p)[:16]
    'ba7816bf8f01cfea'
    """
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync_dir(path: Path) -> None:
    """Persist a rename: on POSIX the directory entry lives in the parent directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this platform / file system
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_TEMP_KINDS = ("building", "tmp", "old")


def _host() -> str:
    """This machine's name as it may appear in a file name (pods on a shared volume differ by it)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _temp_sibling(path: Path, kind: str) -> Path:
    # The owner's host and pid are part of the name so that a later run on the same host can tell
    # a leftover of a killed process (SIGKILL, OOM: no cleanup code runs) from one still being built.
    return path.with_name(f".{path.name}.{kind}-{_host()}-{os.getpid()}-{secrets.token_hex(6)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    """Delete a file, a symlink (not its target) or a directory tree; what is already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def remove_stale_siblings(path: str | Path) -> list[Path]:
    """Delete the temporary siblings of ``path`` left by processes of this host that no longer exist.

    :func:`atomic_directory` and :func:`atomic_write_bytes` clean up after any Python exception,
    but a killed process runs no cleanup: its ``.<name>.building-<host>-<pid>-<random>`` (or
    ``tmp``/``old``) sibling stays. The next writer of the same path removes those of its own host
    whose pid is gone; another host's are left alone (its pids mean nothing here).
    """
    path = Path(path)
    prefixes = [f".{path.name}.{kind}-{_host()}-" for kind in _TEMP_KINDS]
    removed: list[Path] = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for sibling in siblings:
        prefix = next((p for p in prefixes if sibling.name.startswith(p)), None)
        if prefix is None:
            continue
        pid, _, token = sibling.name[len(prefix) :].partition("-")
        if pid.isdigit() and re.fullmatch(r"[0-9a-f]+", token) and not _pid_alive(int(pid)):
            _remove(sibling)
            removed.append(sibling)
    return removed


class OutputOverlapError(ValueError):
    """An output location is, contains, or lies inside one of the command's inputs."""


def check_output_apart(output: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """Refuse an ``output`` that is, contains or sits inside an input, before anything is written.

    Writing (with overwrite) to such an output would delete the input, or hide the output in it.
    ``inputs`` maps what each input is (``"dataset.train.images"``) to its path; empty ones are
    skipped. Paths are compared resolved, so symlinks and ``..`` cannot hide an overlap.

    >>> check_output_apart("data/out", {"images": "data/images"})
    >>> check_output_apart("data", {"images": "data/images"})
    Traceback (most recent call last):
    ...
    vrft.io.OutputOverlapError: data: output contains the images (data/images); choose an output outside every input
    """
    out = Path(output).resolve()
    for what, value in inputs.items():
        if value is None or str(value) == "":
            continue
        src = Path(value).resolve()
        if out == src:
            relation = "is"
        elif out in src.parents:
            relation = "contains"
        elif src in out.parents:
            relation = "is inside"
        else:
            continue
        raise OutputOverlapError(
            f"{output}: output {relation} the {what} ({value}); choose an output outside every input"
        )


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so readers see either the old file or the complete new one.

    The bytes go to a temporary file in the same directory (same file system, so the final
    ``os.replace`` is atomic), are fsync'ed, then renamed over ``path``. On any error the
    temporary file is removed and ``path`` is untouched. Permissions follow the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(path)
    tmp = _temp_sibling(path, "tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` for text."""
    return atomic_write_bytes(path, text.encode(encoding))


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


@contextlib.contextmanager
def atomic_directory(final_path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it into place only on success.

    Yields the temporary directory (``.<name>.building-<pid>-<random>`` next to ``final_path``).
    If the ``with`` block raises (KeyboardInterrupt included), the temporary directory is deleted
    and ``final_path`` is untouched, so a failed run leaves nothing behind; what a killed process
    left is removed by the next build of the same path (:func:`remove_stale_siblings`). On
    success the files are fsync'ed and the directory is renamed to ``final_path``. An existing
    ``final_path`` (a directory, a file or a symlink) is an error unless ``overwrite=True``, in
    which case it is replaced only after the new directory is complete.
    """
    final = Path(final_path)
    if (final.exists() or final.is_symlink()) and not overwrite:
        raise FileExistsError(f"{final}: already exists (refusing to overwrite; remove it or pass overwrite)")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(final)
    tmp = _temp_sibling(final, "building")
    os.mkdir(tmp, 0o777)  # permissions follow the umask, unlike tempfile.mkdtemp's 0o700
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists() or final.is_symlink():
            if not overwrite:
                raise FileExistsError(f"{final}: appeared while it was being built (refusing to overwrite)")
            old = _temp_sibling(final, "old")
            os.replace(final, old)
            os.replace(tmp, final)
            with contextlib.suppress(OSError):  # else removed as stale by the next build of this path
                _remove(old)  # a file or symlink too, not only a directory (rmtree would leave those behind)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(final.parent)


def local_store_path(uri: str) -> Path | None:
    """The local file or directory behind a tracking/artifact URI (``sqlite:///x.db``,
    ``file:///dir``, a plain path), or ``None`` for a remote one (``http://``, ``s3://``).

    >>> local_store_path("sqlite:///runs/mlflow.db"), local_store_path("file:///tmp/mlruns")
    (PosixPath('runs/mlflow.db'), PosixPath('/tmp/mlruns'))
    >>> local_store_path("http://mlflow:5000") is None
    True
    """
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" in uri or not uri:
        return None
    return Path(uri)


def _file_entries(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative posix path: {"sha256", "size"}}`` for every file under ``root`` except the manifest."""
    entries = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST_NAME:
            continue
        entries[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return dict(sorted(entries.items()))


def dumps_deterministic(data: Any) -> str:
    """JSON text that depends only on ``data``: sorted keys, fixed indentation, trailing newline.

    >>> dumps_deterministic({"b": 1, "a": [2, "é"]})
    '{\\n  "a": [\\n    2,\\n    "é"\\n  ],\\n  "b": 1\\n}\\n'
    """
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_manifest(directory: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``directory/manifest.json``: ``extra`` plus the SHA-256 and size of every other file.

    Paths are relative POSIX paths, sorted; the JSON has sorted keys and no timestamps, so the
    same directory contents always give a byte-identical manifest. Returns the manifest.
    """
    directory = Path(directory)
    extra = dict(extra or {})
    if "files" in extra:
        raise ValueError("write_manifest: 'files' is reserved for the file hashes")
    manifest = {**extra, "files": _file_entries(directory)}
    atomic_write_text(directory / MANIFEST_NAME, dumps_deterministic(manifest))
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Load ``directory/manifest.json``; errors name the file."""
    path = Path(directory) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: missing") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ManifestError(f"{path}: not a manifest (JSON nested too deeply to read)") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise ManifestError(f"{path}: expected an object with a 'files' mapping")
    return data


def verify_manifest(directory: str | Path) -> dict[str, Any]:
    """Check every file under ``directory`` against its manifest; return the manifest.

    Raises :class:`ManifestError` naming the first file (in sorted order) that is missing, extra,
    or whose size or SHA-256 differs. Sizes are compared first, so a truncated file is reported
    as such without hashing it.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    where = directory / MANIFEST_NAME
    recorded: dict[str, Any] = manifest["files"]
    present = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    present = [p for p in present if p != MANIFEST_NAME]
    for rel in sorted(set(recorded) | set(present)):
        if rel not in recorded:
            raise ManifestError(f"{where}: file {rel!r}: not in the manifest (extra file)")
        path = directory / rel
        if not path.is_file():
            raise ManifestError(f"{where}: file {rel!r}: missing")
        entry = recorded[rel]
        size = path.stat().st_size
        if size != entry.get("size"):
            raise ManifestError(
                f"{where}: file {rel!r}: size differs (recorded {entry.get('size')}, found {size})"
            )
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise ManifestError(f"{where}: file {rel!r}: cannot read ({exc.strerror or exc})") from None
        if digest != entry.get("sha256"):
            raise ManifestError(
                f"{where}: file {rel!r}: SHA-256 differs (recorded {str(entry.get('sha256'))[:8]}..., "
                f"found {digest[:8]}...)"
            )
    return manifest
