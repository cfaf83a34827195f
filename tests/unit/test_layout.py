"""The package's layout (README, "Code layout"), read from the sources (their import statements,
wherever they stand: in functions and under TYPE_CHECKING too): the paper's core and the
contracts at the top, every other module in a wing; what each wing may import; no module
imports another that imports it back; none grows past 450 lines. (What importing a command or
the core loads: tests/e2e/test_layout.py.)"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "sdexp"
#: The paper's SD (pure torch) with its data and recipe, and the one exception type for bad input.
CORE = ("gate", "survival", "subnetwork", "sensitivity", "models", "data", "loader", "synthetic")
CORE += ("recipe", "errors")
#: What every wing reads and writes: results.json, sweep.json, predictions.csv, the code's record.
CONTRACTS = ("results", "predictions", "provenance")
WINGS = ("run", "sweep", "analysis", "tracking", "theory")
#: What each part may import (besides itself and the package's ``__init__``, its version).
ALLOWED = {
    "core": {"core"},
    "contracts": {"contracts"},
    "run": {"core", "contracts"},  # nothing of the analysis or the tracking
    "sweep": {"core", "contracts", "run"},
    "analysis": {"contracts"},  # files in, files out: nothing of the core (torch) or the run
    "tracking": {"contracts"} | {"errors"},
    "theory": {"core", "contracts", "run", "tracking"},
}


def module_name(path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def part(name: str) -> str:
    """The part of the package module ``name`` belongs to: core, contracts or its wing."""
    first = name.split(".")[1] if "." in name else "sdexp"
    if first in CORE:
        return "core"
    return "contracts" if first in CONTRACTS else first


def imports(name: str) -> set[str]:
    """The sdexp modules that module ``name`` imports, anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sdexp"):
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in MODULES and m != name}


def test_every_module_is_in_the_core_the_contracts_or_a_wing():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert top == {*CORE, *CONTRACTS} and folders == set(WINGS)


@pytest.mark.parametrize("wing", ALLOWED)
def test_each_part_imports_only_what_it_may(wing):
    wrong = {
        (name, imported)
        for name in MODULES
        if part(name) == wing
        for imported in imports(name)
        if imported != "sdexp"
        and part(imported) != wing
        and part(imported) not in ALLOWED[wing]
        and imported.removeprefix("sdexp.") not in ALLOWED[wing]
    }
    assert wrong == set()


def test_no_module_imports_in_a_circle():
    graph = {name: imports(name) for name in MODULES}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        pytest.fail(f"an import circle: {' -> '.join(error.args[1])}")


def test_no_module_is_over_450_lines():
    lines = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in lines.items() if n > 450} == {}
