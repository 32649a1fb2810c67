"""The run folder's schema module: one place for the file names, below run and report."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from camscope.io import runfolder

PACKAGE = Path(__file__).resolve().parents[1] / "camscope"


def _imports(path: Path) -> set[str]:
    """Every camscope module a file imports (at any depth: lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("camscope")}


def test_report_and_io_never_import_run():
    for folder in ("report", "io"):
        for path in sorted((PACKAGE / folder).glob("*.py")):
            bad = {
                m for m in _imports(path) if m == "camscope.run" or m.startswith("camscope.run.")
            }
            assert not bad, f"{path.name} imports {sorted(bad)}"


def test_schema_module_imports_only_io():
    mods = _imports(PACKAGE / "io" / "runfolder.py")
    assert all(m.startswith(("camscope.io", "camscope.errors")) for m in mods), mods


def test_importing_report_loads_no_run_module():
    code = (
        "import sys, camscope.report, camscope.io.runfolder\n"
        "print(sorted(m for m in sys.modules if m.startswith('camscope.run')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_old_module_name_is_the_same_schema():
    from camscope.run import results

    for name in runfolder.__all__:
        assert getattr(results, name) is getattr(runfolder, name), name


def test_names():
    assert runfolder.part_name("p", 3) == "part-p-000003.parquet"
    assert [runfolder.grid_page_name(i) for i in (1, 2)] == ["grid.png", "grid-2.png"]
    assert runfolder.map_path("d", "gradcam", "a", "png") == Path("d/gradcam/a.png")
    assert set(runfolder.REPORT_FILES) <= set(runfolder.DERIVED_FILES)
    assert f"camscope {runfolder.FORMAT_VERSION} run" == runfolder.FORMAT_NAME


def test_versions_come_from_one_place():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from click.testing import CliRunner

    import camscope
    from camscope._version import __version__
    from camscope.cli import main

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "camscope._version.__version__"
    assert camscope.__version__ == __version__
    assert CliRunner().invoke(main, ["--version"]).output.strip().endswith(__version__)
    literal = [
        p.name
        for p in PACKAGE.rglob("*.py")
        if p.name != "_version.py" and f'"{__version__}"' in p.read_text(encoding="utf-8")
    ]
    assert not literal, literal


def test_one_exception_formatter():
    """Causes are made one line by camscope.errors.one_line only (no private copies)."""
    import re

    pattern = re.compile(r'" "\.join\((str\()?(exc|msg|text|message|cause)\b')
    copies = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if p.name != "errors.py" and pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert not copies, copies
