"""The analysis commands start light: ``sdexp-table`` and ``sdexp-dashboard`` import neither torch
nor Lightning (README, "Code layout"; the other layout rules: tests/unit/test_layout.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT, user_env

ANALYSIS = ("sdexp.analysis.cli", "sdexp.analysis.per_budget", "sdexp.tracking.dashboard")


def test_the_analysis_imports_neither_torch_nor_lightning():
    """In a fresh interpreter, as ``sdexp-table`` and ``sdexp-dashboard`` start."""
    heavy = ("torch", "pytorch_lightning", "lightning", "lightning_fabric")
    code = f"import sys, {', '.join(ANALYSIS)}; print(sorted(set({heavy!r}) & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=user_env(), cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
