"""The layers of vrft's code, checked and drawn: ``python tools/import_graph.py [--check | --mermaid]``.

vrft installs as one package whose ``vrft.components`` and ``vrft.pipelines`` live in the top-level
``components/`` and ``pipelines/`` folders (pyproject's ``package-dir``). Import-linter (through
grimp) reads a package from one directory, so this script first lays the sources out as they are
installed, in a temporary directory, then runs on that copy:

* ``--check`` (what ``make lint`` runs): ``lint-imports`` with the contracts in pyproject.toml (the
  layers cli -> pipelines -> components -> library, every module of ``vrft`` in a layer, no import
  cycles between the modules of ``vrft.pipelines`` or ``vrft.components``);
* ``--mermaid`` (the default): the import graph between the rooms of the tree as a Mermaid
  flowchart, one box per layer (docs/architecture.md shows it; a test keeps it current).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("cli", "pipelines", "components", "library")
#: The rooms drawn: packages and modules of each layer, at the depth a reader navigates by.
ROOMS = {
    "cli": ("vrft.cli",),
    "pipelines": (
        "vrft.pipelines.dag",
        "vrft.pipelines.plan",
        "vrft.pipelines.validate",
        "vrft.pipelines.kfp_client",
        "vrft.pipelines.backend_version",
        "vrft.pipelines.preflight",
        "vrft.pipelines.local",
        "vrft.pipelines.cluster_settings",
        "vrft.pipelines.airflow",
    ),
    "components": (
        "vrft.components.dataset",
        "vrft.components.train",
        "vrft.components.evaluate",
        "vrft.components.report",
        "vrft.components.runtime",
        "vrft.components.cluster",
        "vrft.components.pytorchjob",
        "vrft.components.resources",
    ),
    "library": (
        "vrft.stage",
        "vrft.experiment",
        "vrft.data",
        "vrft.train",
        "vrft.evaluate",
        "vrft.report",
        "vrft.models",
        "vrft.tracking",
        "vrft.storage",
        "vrft.signals",
        "vrft.preflight",
        "vrft.inputs",
        "vrft.paper_mode",
    ),
}
#: Library modules everything uses (config parsing, atomic files, rewards, prompts): drawn as one
#: box so that the picture stays readable.
BASICS = "vrft (config, io, rewards, answers, prompts, tasks)"


def installed_layout(target: Path) -> Path:
    """Copy the Python sources into ``target`` as pyproject's ``package-dir`` installs them."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        package_dirs = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(package_dirs.items()):
        destination = target.joinpath(*package.split("."))
        for source in (ROOT / folder).rglob("*.py"):
            if "__pycache__" in source.parts:
                continue
            relative = source.relative_to(ROOT / folder)
            if relative.parts[0] in {p.split(".")[-1] for p in package_dirs if p != package and "." in p}:
                continue  # a sub-package mapped elsewhere (vrft.components is not vrft/components/)
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination / relative)
    return target


def _in_copy(argv: list[str], copy: Path) -> subprocess.CompletedProcess[str]:
    """Run a Python command on the copy: run from it (not from the checkout, whose ``vrft/`` and the
    editable install would be found first), with it first on the path."""
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.run(argv, cwd=copy, env=env, text=True, capture_output=True, check=False)


def check(copy: Path) -> int:
    lint = Path(sys.executable).with_name("lint-imports")
    result = _in_copy([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], copy)
    sys.stdout.write(
        result.stdout[result.stdout.find("Contracts") :] if result.returncode == 0 else result.stdout
    )
    sys.stderr.write(result.stderr)
    return result.returncode


_EDGES = """
import json, sys, grimp
rooms = json.loads(sys.argv[1])
graph = grimp.build_graph("vrft")
def room(module):
    for name in rooms:
        if module == name or module.startswith(name + "."):
            return name
    return "basics"
edges = set()
for importer in graph.modules:
    for imported in graph.find_modules_directly_imported_by(importer):
        a, b = room(importer), room(imported)
        if a != b and not (a == "basics" and b == "basics"):
            edges.add((a, b))
print(json.dumps(sorted(edges)))
"""


def edges(copy: Path) -> list[tuple[str, str]]:
    """Direct imports between rooms (``basics`` for the library modules drawn as one box)."""
    import json

    rooms = [name for layer in LAYERS for name in ROOMS[layer]]
    result = _in_copy([sys.executable, "-c", _EDGES, json.dumps(rooms)], copy)
    if result.returncode:
        raise SystemExit(result.stderr)
    return [tuple(edge) for edge in json.loads(result.stdout)]


def mermaid(copy: Path) -> str:
    """The import graph as a Mermaid flowchart (importer --> imported), one subgraph per layer."""
    found = edges(copy)
    node = {name: name.replace(".", "_") for layer in LAYERS for name in ROOMS[layer]}
    node["basics"] = "basics"
    lines = ["flowchart TB"]
    for layer in LAYERS:
        lines.append(f"  subgraph {layer}")
        for name in ROOMS[layer]:
            lines.append(f'    {node[name]}["{name}"]')
        if layer == "library":
            lines.append(f'    basics["{BASICS}"]')
        lines.append("  end")
    for importer, imported in found:
        if imported == "basics" and importer != "vrft.cli" and not importer.startswith("vrft.components"):
            continue  # everyone uses the basics: drawn only once per layer above the library
        lines.append(f"  {node[importer]} --> {node[imported]}")
    return "\n".join(lines) + "\n"


def upward_imports(copy: Path) -> list[tuple[str, str]]:
    """Imports from a lower layer into a higher one (the contract keeps this empty)."""
    rank = {name: LAYERS.index(layer) for layer in LAYERS for name in ROOMS[layer]}
    rank["basics"] = LAYERS.index("library")
    return [(a, b) for a, b in edges(copy) if rank[b] < rank[a]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="run lint-imports (make lint)")
    what.add_argument("--mermaid", action="store_true", help="print the import graph (default)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vrft-layout-") as tmp:
        copy = installed_layout(Path(tmp))
        if args.check:
            return check(copy)
        sys.stdout.write(mermaid(copy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
