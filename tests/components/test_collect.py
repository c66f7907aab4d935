"""The collect step: one per sweep iteration, each extending the previous list of evaluation references
(fixed signatures on any backend); a reference without its manifest hash is refused."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from vrft.components.evaluate import collect

pytestmark = pytest.mark.timeout(60)


def evaluation(iteration: str, label: str) -> SimpleNamespace:
    uri = f"s3://vrft/runs/r1/{iteration}/evaluate-{label}/evaluation-{label}/"
    return SimpleNamespace(metadata={"uri": uri, "manifest_sha256": f"{iteration}-{label}"})


def output(tmp_path, name: str) -> SimpleNamespace:
    return SimpleNamespace(metadata={}, path=str(tmp_path / name))


def test_each_collect_appends_its_iteration_to_the_previous_list(tmp_path):
    first = output(tmp_path, "first")
    collect([(label, evaluation("shots-1", label)) for label in ("base", "sft", "rft")], first)
    second = output(tmp_path, "second")
    refs = collect(
        [("sft", evaluation("shots-2", "sft")), ("rft", evaluation("shots-2", "rft"))], second, previous=first
    )
    assert [(r["label"], r["manifest_sha256"]) for r in refs] == [
        ("base", "shots-1-base"),
        ("sft", "shots-1-sft"),
        ("rft", "shots-1-rft"),
        ("sft", "shots-2-sft"),
        ("rft", "shots-2-rft"),
    ]
    assert second.metadata["evaluations"] == refs == json.loads((tmp_path / "second").read_text())


def test_references_without_a_manifest_hash_or_an_empty_previous_list_are_refused(tmp_path):
    unverifiable = SimpleNamespace(metadata={"uri": "s3://vrft/x/"})
    with pytest.raises(ValueError, match="evaluation\\(s\\) sft carry no artifact URI and manifest hash"):
        collect([("sft", unverifiable)], output(tmp_path, "a"))
    with pytest.raises(ValueError, match="previous iteration's list of evaluations is empty"):
        collect(
            [("sft", evaluation("shots-1", "sft"))], output(tmp_path, "b"), previous=output(tmp_path, "c")
        )
