"""tools/import_graph.py: the layers hold (no import points upwards) and docs/architecture.md shows the
graph as the code is."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


@pytest.fixture(scope="module")
def layout():
    with tempfile.TemporaryDirectory() as tmp:
        yield import_graph.installed_layout(Path(tmp))


def test_the_installed_layout_has_the_three_package_folders(layout: Path) -> None:
    assert (layout / "vrft" / "components" / "runtime.py").is_file()
    assert (layout / "vrft" / "pipelines" / "local" / "runner.py").is_file()
    assert (layout / "vrft" / "tracking" / "tracker.py").is_file()
    assert not (layout / "vrft" / "pipelines" / "pipelines").exists()


def test_no_import_points_upwards(layout: Path) -> None:
    assert import_graph.upward_imports(layout) == []


def test_the_contracts_hold() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "import_graph.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_the_architecture_page_shows_the_current_graph(layout: Path) -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert "```mermaid\n" + import_graph.mermaid(layout) + "```" in page, (
        "docs/architecture.md is out of date: paste the output of `python tools/import_graph.py`"
    )
