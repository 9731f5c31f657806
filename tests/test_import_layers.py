"""Imports run one way along the flow (DESIGN.md): `core`, `workload` and `perf` import nothing
above them (the leaf modules `errors` and `sums` import nothing of servesim), and nothing in the
simulation imports the CLI, the server, the report or the planner. Read from every module's
source, imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import servesim

SRC = Path(servesim.__file__).parent
# what each lower package may import from servesim (itself included)
ALLOWED = {"core": {"core", "errors", "sums"}, "workload": {"core", "workload", "errors", "sums"},
           "perf": {"perf", "errors", "sums"}}
SIMULATION = ("core", "workload", "perf", "replica", "cluster", "metrics")
ON_TOP = {"cli", "serve", "report", "planner", "validation"}


def servesim_imports(path: Path) -> set[str]:
    """The servesim packages (first name after `servesim.`) a module imports; '' for `servesim` itself."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "servesim":
                found.add(parts[1] if len(parts) > 1 else "")
    return found


def modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_lower_packages_import_nothing_above_them(package):
    wrong = {str(p.relative_to(SRC)): sorted(servesim_imports(p) - ALLOWED[package]) for p in modules(package)}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_simulation_imports_nothing_that_sits_on_top():
    files = [p for pkg in SIMULATION for p in modules(pkg)] + [SRC / "simulation.py"]
    wrong = {str(p.relative_to(SRC)): sorted(servesim_imports(p) & ON_TOP) for p in files}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_reader_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import servesim.perf.roofline\ndef g():\n"
                 "    from servesim.validation.silicon_file import open_measured\n"
                 "    from servesim import simulate\n    from . import x\n")
    assert servesim_imports(f) == {"perf", "validation", ""}
