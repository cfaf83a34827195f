"""The package's layers, as README's "Code layout" states them: the core imports nothing above it,
no module imports another that imports it back, the analysis commands import neither torch nor
Lightning (tests/e2e/test_layout.py), and no module grows past 450 lines. Read from the sources
(their import statements, wherever they stand: in functions and under TYPE_CHECKING too)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "sdexp"
CORE = ("gate", "survival", "subnetwork", "sensitivity", "models")  # the paper's SD itself


def module_name(path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The sdexp modules that module ``name`` imports, anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sdexp"):
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in MODULES and m != name}


def test_the_core_imports_nothing_above_it():
    allowed = {f"sdexp.{m}" for m in (*CORE, "errors")}
    for name in CORE:
        assert imports(f"sdexp.{name}") <= allowed, name


def test_no_module_imports_in_a_circle():
    graph = {name: imports(name) for name in MODULES}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        pytest.fail(f"an import circle: {' -> '.join(error.args[1])}")


def test_no_module_is_over_450_lines():
    lines = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in lines.items() if n > 450} == {}
