"""The existence gate: which (image, category) pairs an ``existence_gated`` evaluation asks for boxes.

The authors decided once per evaluation set, from a fixed per-image category list, which categories
to ask each checkpoint to detect — the same list for the base model, SFT and RFT. Letting every
checkpoint answer its own yes/no prompt instead would let a checkpoint lose AP at the gate (SFT
never trains on the yes/no prompt) rather than at detection. So the gate is computed once — from
the base model's answers, from the ground truth, or read from the authors' own list — written as
``gate.json`` and shared by every checkpoint evaluated on the same split; its recall (share of
annotated pairs it lets through, an upper bound on detection recall) travels with every result and
into the report.

The authors' lists (``exist_map_coco_Qwen2_vl_2B_baseline.json``: COCO val2017, 5,000 images;
``exist_map_lvis_Qwen2_vl_2B_baseline.json``: LVIS v1 val, 19,809 images) map an image id to the
category names the base model said were there; a pair is open when its category is listed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vrft.answers import normalize_label, parse_yes_no
from vrft.config import ConfigError
from vrft.paper_files import content_sha256, read_text

GATE_FILE = "gate.json"
GATE_FORMAT = "vrft.gate/1"


@dataclass
class Gate:
    """``open[(image_id, category)]``: ask for boxes there. ``source`` names who decided
    (``base_model:<name>`` or ``ground_truth``); ``manifest_sha256`` pins the eval split."""

    source: str
    manifest_sha256: str
    open: dict[tuple[str, str], bool]
    metrics: dict[str, float]
    answers: dict[tuple[str, str], str | None] | None = (
        None  # the base model's parsed yes/no, when it decided
    )
    file_sha256: str = ""  # the authors' gate list it was read from (decompressed content)

    def to_json(self) -> dict[str, Any]:
        pairs = [
            {
                "image_id": i,
                "category": c,
                "open": o,
                **({"answer": self.answers.get((i, c))} if self.answers is not None else {}),
            }
            for (i, c), o in sorted(self.open.items())
        ]
        return {
            "format": GATE_FORMAT,
            "source": self.source,
            "manifest_sha256": self.manifest_sha256,
            **({"file_sha256": self.file_sha256} if self.file_sha256 else {}),
            "metrics": self.metrics,
            "pairs": pairs,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), allow_nan=False), encoding="utf-8")

    def check(self, pairs: Sequence[tuple[str, str]], manifest_sha256: str, where: str) -> None:
        """The gate must be for this eval split and cover every pair asked."""
        if self.manifest_sha256 and manifest_sha256 and self.manifest_sha256 != manifest_sha256:
            raise ConfigError(
                f"{where}: the gate was computed on another dataset (manifest "
                f"{self.manifest_sha256[:12]} != {manifest_sha256[:12]})"
            )
        missing = [p for p in pairs if p not in self.open]
        if missing:
            raise ConfigError(
                f"{where}: the gate has no decision for {len(missing)} pair(s), e.g. image "
                f"{missing[0][0]!r} category {missing[0][1]!r} (computed with another image cap?)"
            )


def load_gate(path: str | Path) -> Gate:
    """A gate from ``gate.json`` (or from an evaluation directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / GATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable gate file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != GATE_FORMAT:
        raise ConfigError(f"{path}: format is not {GATE_FORMAT!r}")
    open_: dict[tuple[str, str], bool] = {}
    answers: dict[tuple[str, str], str | None] = {}
    for n, pair in enumerate(data.get("pairs") or []):
        try:
            key = (str(pair["image_id"]), str(pair["category"]))
            open_[key] = bool(pair["open"])
        except (KeyError, TypeError):
            raise ConfigError(f"{path}: pairs[{n}]: expected image_id, category and open") from None
        if "answer" in pair:
            answers[key] = pair["answer"]
    return Gate(
        str(data.get("source", "")),
        str(data.get("manifest_sha256", "")),
        open_,
        {k: float(v) for k, v in (data.get("metrics") or {}).items()},
        answers or None,
        str(data.get("file_sha256", "")),
    )


def gate_metrics(
    open_: dict[tuple[str, str], bool],
    present: set[tuple[str, str]],
    known_absent: set[tuple[str, str]] | None = None,
) -> dict[str, float]:
    """Recall (annotated pairs let through) and accuracy over pairs whose presence is known.

    ``known_absent`` (federated datasets such as LVIS) limits the negatives to verified-absent
    pairs; ``None`` means every pair not in ``present`` is absent (COCO).
    """
    recall = [open_[p] for p in open_ if p in present]
    accuracy = [
        open_[p] == (p in present) for p in open_ if p in present or known_absent is None or p in known_absent
    ]
    out = {"pairs": float(len(open_)), "open": float(sum(open_.values()))}
    if recall:
        out["recall"] = float(np.mean(recall))
    if accuracy:
        out["accuracy"] = float(np.mean(accuracy))
    return out


def ground_truth_gate(
    pairs: Sequence[tuple[str, str]],
    present: set[tuple[str, str]],
    manifest_sha256: str,
    known_absent: set[tuple[str, str]] | None = None,
) -> Gate:
    open_ = {p: p in present for p in pairs}
    return Gate("ground_truth", manifest_sha256, open_, gate_metrics(open_, present, known_absent))


def answered_gate(
    pairs: Sequence[tuple[str, str]],
    answers: Sequence[str | None],
    source: str,
    present: set[tuple[str, str]],
    manifest_sha256: str,
    known_absent: set[tuple[str, str]] | None = None,
) -> Gate:
    """A gate from a model's yes/no answers: open only on an explicit yes (unreadable is not yes)."""
    open_ = {p: parse_yes_no(a) is True for p, a in zip(pairs, answers, strict=True)}
    return Gate(
        source, manifest_sha256, open_, gate_metrics(open_, present, known_absent), dict(zip(pairs, answers))
    )


def read_authors_gate(path: str) -> dict[str, set[str]]:
    """The authors' gate list: image id -> normalised category names the base model said are there.

    ``path`` is a file or a shipped ``paper:`` name; anything but a JSON object of lists of names is a
    one-line error naming the file and the entry.
    """
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected an object {{image id: [category names]}}, got {type(data).__name__}"
        )
    listed = {}
    for image_id, names in data.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{path}: image {image_id!r}: expected a list of category names, got {names!r}")
        listed[str(image_id)] = {normalize_label(n) for n in names}
    return listed


def authors_file_gate(
    path: str,
    pairs: Sequence[tuple[str, str]],
    present: set[tuple[str, str]],
    known_absent: set[tuple[str, str]] | None = None,
) -> Gate:
    """A gate from the authors' list: open where the image lists the category (names compared after
    :func:`vrft.answers.normalize_label`, so ``kitchen_table`` is ``kitchen table``). An image the list
    does not have is an error: it was made for another image set."""
    listed = read_authors_gate(path)
    missing = sorted({image for image, _ in pairs if image not in listed})
    if missing:
        raise ConfigError(
            f"{path}: no entry for {len(missing)} eval image(s), e.g. {missing[0]!r}: the authors' lists "
            "cover COCO val2017 and LVIS v1 val only"
        )
    open_ = {(image, category): normalize_label(category) in listed[image] for image, category in pairs}
    source = f"authors_file:{Path(str(path).split(':', 1)[-1]).name}"
    return Gate(
        source, "", open_, gate_metrics(open_, present, known_absent), file_sha256=content_sha256(path)
    )
