"""The wheel set bench/gpu/check.sh carries to the GPU machine: build it here, check it there.

``build`` downloads the wheels named in ``wheels.txt`` for CPython 3.12 on manylinux x86_64 into
``.gpu-wheels/`` (removing any other version left there), then checks, without the machine, that
every requirement of those wheels and of vrft itself is met by a carried wheel or by the machine's
recorded packages (``device-packages.txt``), and that the wheels plus the working tree stay under
the 64 MiB a device call may carry. ``check`` runs in the target interpreter (the machine, or the
dry run's Python 3.12) with the wheels on ``PYTHONPATH`` and checks the same against what is really
installed there.

    python bench/gpu/wheels.py build            # here, before a device call (check.sh --dry-run does it)
    python3 bench/gpu/wheels.py check           # there, after installing the wheels (check.sh does it)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename
from packaging.version import Version

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WHEELS_DIR = ROOT / ".gpu-wheels"
#: What one device call may carry: the working tree plus the carried folders.
BUDGET_BYTES = 64 * 2**20
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
#: The machine's interpreter, for requirement markers.
MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
#: Test tools the `gpu` tests need besides vrft's dependencies.
TEST_TOOLS = ["pytest>=8", "pytest-timeout>=2.3"]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lines(path: Path) -> Iterable[str]:
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            yield line


def vrft_requirements() -> list[Requirement]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]


def carried() -> dict[str, str]:
    """``wheels.txt`` as {name: version}; a bare name takes vrft's ``==`` pin from pyproject.toml."""
    pins = {
        normalize(r.name): next((s.version for s in r.specifier if s.operator == "=="), None)
        for r in vrft_requirements()
    }
    wanted = {}
    for line in _lines(HERE / "wheels.txt"):
        name, _, version = line.partition("==")
        name = normalize(name)
        if not version:
            version = pins.get(name) or ""
            if not version:
                sys.exit(
                    f"bench/gpu/wheels.txt: {name}: no version given and pyproject.toml does not pin it with =="
                )
        wanted[name] = version
    return wanted


def device_packages() -> dict[str, str | None]:
    """``device-packages.txt`` as {name: version or None where the version was not recorded}."""
    packages = {}
    for line in _lines(HERE / "device-packages.txt"):
        name, _, version = line.partition("==")
        packages[normalize(name)] = version or None
    return packages


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode("utf-8")
    return [
        Requirement(line.split(":", 1)[1].strip())
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    ]


def applies(requirement: Requirement) -> bool:
    return requirement.marker is None or requirement.marker.evaluate(MARKERS)


def wheels_in(directory: Path) -> dict[str, tuple[str, Path]]:
    found: dict[str, tuple[str, Path]] = {}
    for path in sorted(directory.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(path.name)
        if normalize(name) in found:
            sys.exit(f"{directory}: two wheels of {name}: {found[normalize(name)][1].name} and {path.name}")
        found[normalize(name)] = (str(version), path)
    return found


def unmet(
    sources: dict[str, list[Requirement]], available: dict[str, str | None], ignore: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """Requirements of ``sources`` that ``available`` ({name: version or None}) does not meet: (errors,
    unverified), unverified being those on a package whose version is unknown."""
    errors, unverified = [], []
    skipped = {normalize(n) for n in ignore}
    for source, requirements in sources.items():
        for requirement in filter(applies, requirements):
            name = normalize(requirement.name)
            if name in skipped:
                continue
            if name not in available:
                errors.append(f"{source} needs {requirement}: not installed and not carried")
            elif available[name] is None:
                if requirement.specifier:
                    unverified.append(f"{source} needs {requirement}: version on the machine not recorded")
            elif not requirement.specifier.contains(Version(available[name]), prereleases=True):
                errors.append(f"{source} needs {requirement}: found {available[name]}")
    return errors, unverified


def tree_bytes() -> int:
    """The working tree that travels with a device call: tracked and untracked, not ignored, files."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    return sum((ROOT / p).stat().st_size for p in listed if p and (ROOT / p).is_file())


def build(dest: Path) -> int:
    wanted = carried()
    dest.mkdir(parents=True, exist_ok=True)
    for name, (version, path) in wheels_in(dest).items():
        if wanted.get(name) != version:
            path.unlink()
    have = wheels_in(dest)
    missing = [f"{name}=={version}" for name, version in wanted.items() if name not in have]
    if missing:
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
                "--implementation",
                "cp",
                *platforms,
                "-d",
                str(dest),
                *missing,
            ],
            check=True,
        )
    have = wheels_in(dest)
    if set(have) != set(wanted):
        sys.exit(f"{dest}: expected wheels of {sorted(wanted)}, found {sorted(have)}")

    available: dict[str, str | None] = {**device_packages(), **{n: v for n, (v, _) in have.items()}}
    sources = {
        "vrft": vrft_requirements(),
        **{f"{n} {v}": wheel_requirements(p) for n, (v, p) in have.items()},
    }
    errors, unverified = unmet(sources, available)
    sizes = {name: path.stat().st_size for name, (_, path) in have.items()}
    wheel_bytes, tree = sum(sizes.values()), tree_bytes()
    for name, (version, path) in sorted(have.items()):
        print(f"  {name:14} {version:12} {sizes[name] / 2**20:6.2f} MiB  {path.name}")
    print(
        f"wheels {wheel_bytes / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB "
        f"= {(wheel_bytes + tree) / 2**20:.1f} MiB of the {BUDGET_BYTES / 2**20:.0f} MiB a device call carries"
    )
    if unverified:
        names = sorted({line.split(" needs ", 1)[1].split(":")[0] for line in unverified})
        print(
            f"not verifiable here (versions on the machine not recorded; check.sh checks them there): "
            f"{', '.join(names)}"
        )
    if wheel_bytes + tree > BUDGET_BYTES:
        errors.append("the wheels and the working tree exceed what a device call carries")
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 1 if errors else 0


def installed() -> dict[str, str | None]:
    return {
        normalize(d.metadata["Name"]): d.version
        for d in importlib.metadata.distributions()
        if d.metadata["Name"]
    }


def check(ignore: list[str]) -> int:
    """In the target interpreter: every carried wheel is the version imported, and every requirement of
    the carried wheels, of vrft and of the test tools is installed at a version that meets it."""
    wanted = carried()
    errors = []
    for name, version in wanted.items():
        try:
            found = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found = None
        if found != version:
            errors.append(
                f"carried {name}=={version} is not what this interpreter finds ({found}): is the "
                "wheel folder on PYTHONPATH, before the site packages?"
            )
    sources: dict[str, list[Requirement]] = {
        "vrft": vrft_requirements(),
        "tests": [Requirement(r) for r in TEST_TOOLS],
    }
    for name in wanted:
        try:
            sources[name] = [Requirement(r) for r in importlib.metadata.requires(name) or []]
        except importlib.metadata.PackageNotFoundError:
            pass
    more, _ = unmet(sources, installed(), ignore)
    errors += more
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    print(
        f"{sys.executable} {sys.version.split()[0]}: {len(wanted)} carried wheels, "
        f"{sum(len(list(filter(applies, r))) for r in sources.values())} requirements checked, "
        f"{len(errors)} unmet"
    )
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser(
        "build", help="download the wheel set and check it against the machine's list"
    )
    build_parser.add_argument("--dest", type=Path, default=WHEELS_DIR)
    check_parser = commands.add_parser("check", help="check the installed set in this interpreter")
    check_parser.add_argument(
        "--ignore", default="", help="comma-separated names not to require (dry run only)"
    )
    args = parser.parse_args(argv)
    if args.command == "build":
        return build(args.dest)
    return check([n for n in args.ignore.split(",") if n])


if __name__ == "__main__":
    sys.exit(main())
