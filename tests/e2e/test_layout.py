"""What starting a command or the core loads, in a fresh interpreter (``python -X importtime``):
the analysis commands (``sdexp-table``, ``sdexp-dashboard``) import neither torch, Lightning nor
Hydra; ``import sdexp`` gives the paper's core without Hydra or Lightning (the other layout
rules: tests/unit/test_layout.py)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import sdexp.analysis
from tests.helpers import ROOT, imported_packages, user_env

ANALYSIS = tuple(f"sdexp.analysis.{m.name}" for m in pkgutil.iter_modules(sdexp.analysis.__path__))
COMMANDS = (*ANALYSIS, "sdexp.tracking.dashboard")
LIGHTNING = ("pytorch_lightning", "lightning", "lightning_fabric")
HYDRA = ("hydra", "omegaconf")


def imported(code: str) -> set[str]:
    """The top-level packages a fresh interpreter imports to run ``code``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=user_env(),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return imported_packages(done.stderr)


def test_the_analysis_imports_neither_torch_lightning_nor_hydra():
    """As ``sdexp-table`` and ``sdexp-dashboard`` start: every module of the analysis."""
    assert len(ANALYSIS) > 10
    loaded = imported(f"import {', '.join(COMMANDS)}")
    assert loaded & {"torch", *LIGHTNING, *HYDRA} == set() and "sdexp" in loaded


def test_the_core_is_a_library_without_hydra_or_lightning():
    """``import sdexp`` gives the gate, the modes, the sensitivities and the models; torch loads
    when they are first used, Hydra and Lightning never."""
    names = ["SurvivalGate", "SenseMode", "Uniform", "Linear", "sensitivities", "CifarResNet"]
    names += ["VanillaResNet", "expected_depth"]
    bare = imported("import sdexp")
    loaded = imported(f"import sdexp; [getattr(sdexp, n) for n in {names!r}]")
    assert "torch" not in bare and "torch" in loaded
    assert loaded & {*LIGHTNING, *HYDRA} == set()
