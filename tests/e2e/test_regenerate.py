"""The committed CPU grids regenerate at HEAD: one cell of each, run again through the CLI as its
preset runs it, gives the committed test error to the last digit (and the same identity); and
every committed table and verdict is what the command named on its first line, run at HEAD on
the committed runs.csv, writes. A change that moves results or verdicts fails here instead of
silently staling ``docs/`` and README."""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from sdexp.analysis.cli import main
from sdexp.results import read_result
from tests.helpers import ROOT, user_env

#: The folders of docs/ that sdexp-table wrote from a committed runs.csv.
TABLES = ["hypothesis_cpu", "hypothesis_cpu/batches8", "hypothesis_cpu/100ep", "budget_cpu"]
TABLES += ["budget_cpu/100ep"]
WRITTEN = ["table2.md", "verdict.md", "cost.md", "table2.csv", "summary.csv", "runs.csv"]
WRITTEN += ["verdict.csv", "cost.csv"]


def without_stamp(path: Path) -> str:
    """A file sdexp-table wrote, less the command and commit that wrote it."""
    if path.suffix == ".md":
        return path.read_text().split("\n", 1)[1]
    return (
        pd.read_csv(path)
        .drop(columns=["command", "commit", "table_commit"], errors="ignore")
        .to_csv(index=False)
    )


@pytest.mark.parametrize("folder", TABLES)
def test_the_committed_tables_and_verdicts_regenerate_from_runs_csv(tmp_path, folder):
    """The command on verdict.md's first line reads the folder's runs.csv: run at HEAD into a
    temporary folder, it writes every table, verdict and cost file as committed."""
    docs = ROOT / "docs" / folder
    first = (docs / "verdict.md").read_text().splitlines()[0]
    command = shlex.split(first.split("`")[1])
    assert command[:2] == ["sdexp-table", f"docs/{folder}/runs.csv"], first
    out = command.index("--out") + 1
    assert command[out] == f"docs/{folder}"
    command[out] = str(tmp_path)
    command[1] = str(ROOT / command[1])
    assert main(command[1:]) == 0
    for name in WRITTEN:
        assert without_stamp(tmp_path / name) == without_stamp(docs / name), f"{folder}/{name}"


#: (preset, mode, budget, seed): a cell of ``docs/<preset>/runs.csv``; SenseMode's covers the
#: sensitivities and their batches too, Linear's another survival rule and the ResNet20.
CELLS = [("hypothesis_cpu", "sensemode", 0.2, 0), ("budget_cpu", "linear", 0.5, 0)]


def committed(preset: str, mode: str, budget: float, seed: int) -> pd.Series:
    runs = pd.read_csv(ROOT / "docs" / preset / "runs.csv")  # pandas 3 reads floats exactly
    match = runs[(runs["mode"] == mode) & (runs["budget"] == budget) & (runs["seed"] == seed)]
    assert len(match) == 1, f"docs/{preset}/runs.csv has {len(match)} rows for this cell"
    return match.iloc[0]


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "mode", "budget", "seed"), CELLS)
def test_a_committed_cell_regenerates_at_head(tmp_path, preset, mode, budget, seed):
    row = committed(preset, mode, budget, seed)
    # The preset's jobs run with one torch thread each (joblib's loky workers get
    # OMP_NUM_THREADS=1), and the thread count may change a convolution's rounding: so does this.
    command = [sys.executable, str(ROOT / "train.py"), f"+sweep={preset}", f"mode={mode}"]
    command += [f"budget={budget}", f"seed={seed}", "hydra.launcher.n_jobs=1"]
    command += [f"hydra.sweep.dir={tmp_path}"]
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=user_env(OMP_NUM_THREADS="1"),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (path,) = tmp_path.rglob("results.json")
    result = read_result(path.parent)
    assert result.status == "ok" and result.key.identity == row["identity"]
    assert result.test == row["test"], f"{preset}, {mode} b={budget} s={seed}: docs {row['test']!r}"


def test_the_sensitivity_noise_exponents_regenerate():
    """docs/sensitivity_noise/exponents.md is what the command on its third line writes from the
    committed noise.csv at HEAD (README: SenseMode's sensitivities and their noise)."""
    docs = ROOT / "docs" / "sensitivity_noise"
    committed = (docs / "exponents.md").read_text().splitlines()
    command = shlex.split(committed[2].split("`")[1])
    assert command[:2] == ["python", "scripts/sensitivity_noise.py"] and "--fit" in command
    out = Path(command[command.index("--out") + 1])
    assert out == Path("docs/sensitivity_noise")
    with tempfile.TemporaryDirectory() as folder:
        command[command.index("--out") + 1] = folder
        done = subprocess.run(
            [sys.executable, *command[1:]], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        written = (Path(folder) / "exponents.md").read_text().splitlines()
    assert written[3:] == committed[3:]
