"""bench/gpu/wheels.py without the network: the carried set takes vrft's own pins, and the requirement
check finds what is missing, too old or unknown. (The download and the dry run itself need PyPI:
`bench/gpu/check.sh --dry-run`, not part of the suite.)"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_wheels", ROOT / "bench" / "gpu" / "wheels.py")
wheels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheels)


def test_the_carried_set_uses_vrfts_pins_and_replaces_what_the_machine_lacks() -> None:
    carried = wheels.carried()
    with open(ROOT / "pyproject.toml", "rb") as f:
        pins = {
            wheels.normalize(Requirement(r).name): str(Requirement(r).specifier)
            for r in tomllib.load(f)["project"]["dependencies"]
        }
    for name in ("transformers", "trl", "datasets", "peft", "pycocotools"):
        assert pins[name] == f"=={carried[name]}"
    device = wheels.device_packages()
    assert device["torch"] == "2.11.0" and device["transformers"] == "5.17.0"
    assert not {"trl", "datasets", "pycocotools", "dill", "multiprocess"} & set(device)


def test_unmet_requirements_are_missing_too_old_or_unverified() -> None:
    sources = {
        "pkg 1.0": [
            Requirement("present>=2"),
            Requirement("old>=2"),
            Requirement("absent"),
            Requirement("unknown>=1"),
            Requirement("unpinned"),
            Requirement("other; python_version < '3.9'"),
            Requirement("extra-only; extra == 'x'"),
        ]
    }
    available = {"present": "2.1", "old": "1.9", "unknown": None, "unpinned": None}
    errors, unverified = wheels.unmet(sources, available)
    assert errors == [
        "pkg 1.0 needs old>=2: found 1.9",
        "pkg 1.0 needs absent: not installed and not carried",
    ]
    assert unverified == ["pkg 1.0 needs unknown>=1: version on the machine not recorded"]
    assert wheels.unmet(sources, available, ignore=["old", "absent"])[0] == []
