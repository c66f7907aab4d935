"""The authors' lists that vrft ships as data, and the ``paper:`` names configs use for them.

Visual-RFT's public repository (Liuziyu77/Visual-RFT, Apache-2.0) publishes the lists its paper
numbers were computed with: class names, fixed classification test lists, and the per-image category
lists that gated detection. vrft ships the ones its paper configs need under
``vrft/resources/paper/`` (sources, commit and hashes in docs/evaluation.md). A config names one as
``paper:<path below that directory>``, e.g. ``paper:test_lists/stanford_cars.csv``; any other value is
an ordinary file path. Files ending in ``.gz`` are read decompressed.

>>> resolve_path("paper:classnames/pets.txt").name, str(resolve_path("data/x.json"))
('pets.txt', 'data/x.json')
>>> read_text("paper:classnames/pets.txt").splitlines()[:2]
['abyssinian', 'american_bulldog']
>>> resolve_path("paper:nope.csv")
Traceback (most recent call last):
...
vrft.config.ConfigError: paper:nope.csv: vrft ships no such file (shipped: classnames/fgvc_aircraft.txt, ...)
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from vrft.config import ConfigError

PAPER_PREFIX = "paper:"
RESOURCE_DIR = Path(__file__).resolve().parent / "resources" / "paper"
#: Larger than any list the authors publish (their biggest, the LVIS gate, is 0.5 MB): a wrong file
#: (an image archive named by mistake) is refused instead of read into memory.
MAX_LIST_BYTES = 64 * 1024 * 1024


def shipped() -> list[str]:
    """The ``paper:`` names vrft ships, sorted."""
    return sorted(p.relative_to(RESOURCE_DIR).as_posix() for p in RESOURCE_DIR.rglob("*") if p.is_file())


def is_paper_name(value: str | Path) -> bool:
    return str(value).startswith(PAPER_PREFIX)


def resolve_path(value: str | Path) -> Path:
    """The file a config value names: a shipped ``paper:`` file, or the path itself."""
    text = str(value)
    if not is_paper_name(text):
        return Path(text)
    name = text[len(PAPER_PREFIX) :]
    path = (RESOURCE_DIR / name).resolve()
    if RESOURCE_DIR not in path.parents or not path.is_file():
        names = shipped()
        listed = ", ".join(names[:1]) + (", ..." if len(names) > 1 else "")
        raise ConfigError(f"{text}: vrft ships no such file (shipped: {listed})")
    return path


def read_bytes(value: str | Path) -> bytes:
    """The (decompressed) content of a ``paper:`` name or path; a one-line error when unreadable."""
    path = resolve_path(value)
    try:
        if path.stat().st_size > MAX_LIST_BYTES:
            raise ConfigError(
                f"{value}: larger than {MAX_LIST_BYTES // 2**20} MiB: not one of the authors' lists"
            )
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read(MAX_LIST_BYTES + 1)
            if len(data) > MAX_LIST_BYTES:
                raise ConfigError(f"{value}: decompresses to more than {MAX_LIST_BYTES // 2**20} MiB")
            return data
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ConfigError(f"{value}: cannot be read ({exc})") from None


def read_text(value: str | Path) -> str:
    try:
        return read_bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{value}: not UTF-8 text ({exc})") from None


def content_sha256(value: str | Path) -> str:
    """SHA-256 of the decompressed content: the same for the shipped ``.gz`` and the authors' file."""
    return hashlib.sha256(read_bytes(value)).hexdigest()
