"""The authors' fixed classification test lists, as manifests vrft can read.

Visual-RFT evaluated Table 2 on fixed lists published as ``classification/val_data/*.pth``: torch-saved
Python lists of ``{absolute image path: {"label": tensor, "pred_logits": ..., "pred_class": ...}}``
(CLIP predictions of another project; only the path and the 0-based label are used). Flowers102 is
the CoOp split's 2,463 test images, not the standard 6,149. :func:`read_authors_pth` reads such a
file (``torch.load(weights_only=True)``: tensors and plain containers only, no code) and
:func:`write_test_list` writes it as a ``file,label`` CSV with each path cut to its last
``keep_dirs`` directories plus the file name (``cars_test/00001.jpg``), relative to the dataset's
root. vrft ships the four lists converted (``paper:test_lists/<name>.csv``); a config reads one as a
``manifest`` eval source whose ``images`` is the dataset root::

    eval: {kind: manifest, annotations: "paper:test_lists/stanford_cars.csv", images: data/stanford_cars}

``python -m vrft.data.test_lists IN.pth OUT.csv [--keep-dirs 1]`` reconverts one.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path, PurePosixPath
from typing import Any

from vrft.data.errors import InvalidFileError, InvalidValueError
from vrft.io import atomic_write_text


def _label(value: Any) -> int | None:
    """A 0-d integer tensor or an int as a Python int; ``None`` for anything else."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_authors_pth(path: str | Path, *, keep_dirs: int = 1) -> list[tuple[str, int]]:
    """``(relative file, 0-based label)`` per entry of one of the authors' ``.pth`` test lists, in order."""
    import torch

    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise InvalidFileError(
            path, "", "", f"not a torch-saved list ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(data, list):
        raise InvalidFileError(path, "top level", "", f"expected a list, got {type(data).__name__}")
    entries = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or len(item) != 1:
            raise InvalidValueError(path, f"[{i}]", "", "expected {image path: {'label': ...}}")
        ((image, info),) = item.items()
        label = _label(info.get("label")) if isinstance(info, dict) else None
        if not isinstance(image, str) or label is None or label < 0:
            raise InvalidValueError(
                path, f"[{i}]", "label", f"expected a path and a label >= 0, got {item!r}"
            )
        parts = PurePosixPath(image.replace("\\", "/")).parts
        if len(parts) < keep_dirs + 1:
            raise InvalidValueError(path, f"[{i}]", "", f"{image!r} has fewer than {keep_dirs} directories")
        entries.append(("/".join(parts[-(keep_dirs + 1) :]), label))
    return entries


def write_test_list(entries: list[tuple[str, int]], output: str | Path) -> None:
    """A ``file,label`` CSV (what a ``manifest`` source reads), written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "label"])
    writer.writerows(entries)
    atomic_write_text(Path(output), buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert one of the authors' .pth test lists into a CSV.")
    parser.add_argument("pth", type=Path)
    parser.add_argument("csv", type=Path)
    parser.add_argument("--keep-dirs", type=int, default=1, help="directories kept before the file name")
    args = parser.parse_args(argv)
    entries = read_authors_pth(args.pth, keep_dirs=args.keep_dirs)
    write_test_list(entries, args.csv)
    print(f"{args.csv}: {len(entries)} images, {len({label for _, label in entries})} classes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
