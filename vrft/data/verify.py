"""Reading a built dataset back: the stages that consume one check it against its manifest first.

A dataset directory is what ``vrft dataset build`` wrote (:mod:`vrft.data.build`): the saved
``DatasetDict`` and a ``manifest.json`` with the SHA-256 of every file. A file truncated by a full
disk, emptied, overwritten or deleted since then would otherwise surface as a pyarrow or
``datasets`` traceback (or, worse, as rows silently missing); checked first, it is one line naming
the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vrft.io import ManifestError, verify_manifest


def verify_dataset(dataset_dir: str | Path) -> dict[str, Any]:
    """The dataset's manifest, after every file was checked against it (one-line errors naming the file)."""
    path = Path(dataset_dir)
    if not path.is_dir():
        raise ManifestError(
            f"{path}: no dataset there (build one with `vrft dataset build CONFIG -o {path}`)"
        )
    try:
        return verify_manifest(path)
    except ManifestError as exc:
        raise ManifestError(f"{exc}; rebuild it with `vrft dataset build CONFIG -o {path}`") from None
