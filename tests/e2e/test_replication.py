"""The pre-registered replication of hypothesis_cpu's large-budget half (issue 25,
``docs/hypothesis_cpu_replication/PLAN.md``): the preset plans the 80 runs the plan names; once
results are committed, the plan's commit precedes them (an ancestor, older, PLAN.md alone in it
and unchanged since, quoted by the results' README) and one committed cell regenerates at HEAD.
The last two skip, saying why, while no results are committed."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest

from sdexp.results import read_result
from tests.helpers import ROOT, grid_lines, run_train, user_env

PRESET = "hypothesis_cpu_replication"
FOLDER = ROOT / "docs" / PRESET
PLAN = f"docs/{PRESET}/PLAN.md"
RESULTS = f"docs/{PRESET}/runs.csv"
ORIGINAL_SETUP = "e444de"  # hypothesis_cpu's setup: the replication on data_seed 0 is it


def test_the_preset_plans_the_80_runs_of_the_plan(tmp_path):
    """b = 0.8 only, SenseMode and Uniform, data splits 1 and 2, seeds 20-39: 80 runs in two
    setups that differ from hypothesis_cpu's only in the split."""
    dry = ["hydra.sweeper.dry_run=true", f"hydra.sweep.dir={tmp_path}"]
    done = run_train(f"+sweep={PRESET}", *dry)
    assert done.returncode == 0, done.stderr[-3000:]
    runs, left_out = grid_lines(done.stdout)
    assert len(runs) == 80 and not left_out
    assert "80 cells, 0 left out (infeasible for their mode), 0 merged = 80 runs" in done.stdout
    pattern = r"mode=(\w+) seed=(\d+) dataset\.data_seed=(\d)\s+-> \S+/\w+-b([\d.]+)-s"
    found = [re.search(pattern, line) for line in runs]
    cells = {(m[1], m[4], int(m[2]), int(m[3])) for m in found}  # mode, budget, seed, split
    modes = ("sensemode", "uniform")
    assert cells == {(m, "0.8", s, d) for m in modes for s in range(20, 40) for d in (1, 2)}
    setups = [line for line in done.stdout.splitlines() if line.startswith("Setup ")]
    assert len({line.split(":")[0] for line in setups}) == 2
    original = run_train(f"+sweep={PRESET}", "dataset.data_seed=0", "seed=0", *dry)
    assert f"Setup {ORIGINAL_SETUP}:" in original.stdout  # only the split tells them apart


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"no git history here (git {' '.join(args)}: {done.stderr.strip()})")
    return done.stdout.strip()


def test_the_plan_was_committed_before_the_results():
    """PLAN.md came alone in a commit that is an ancestor of, and older than, the first commit
    holding the results (runs.csv), and has not changed since; the results' README quotes it."""
    if not (FOLDER / "runs.csv").exists():
        pytest.skip(f"no results committed yet ({RESULTS}): the replication has not run")
    (plan,) = git("log", "--format=%H", "--follow", "--", PLAN).splitlines()  # never changed
    first = git("log", "--format=%H", "--diff-filter=A", "--", RESULTS).splitlines()[-1]
    assert git("show", "--format=", "--name-only", plan).splitlines() == [PLAN]
    assert plan != first
    ancestor = subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", plan, first])
    assert ancestor.returncode == 0, f"{plan[:7]} is not an ancestor of {first[:7]}"
    planned, resulted = (int(git("show", "-s", "--format=%ct", c)) for c in (plan, first))
    assert planned < resulted, "the plan's commit is not older than the results'"
    assert plan[:7] in (FOLDER / "README.md").read_text(), "the results must quote the plan"


@pytest.mark.slow
def test_a_committed_replication_cell_regenerates_at_head(tmp_path):
    """SenseMode, data split 1, seed 20, run again through the CLI as the preset runs it: the
    identity of a committed row of runs.csv, and its test error to the last digit."""
    if not (FOLDER / "runs.csv").exists():
        pytest.skip(f"no results committed yet ({RESULTS}): the replication has not run")
    command = [sys.executable, str(ROOT / "train.py"), f"+sweep={PRESET}", "mode=sensemode"]
    command += ["budget=0.8", "seed=20", "dataset.data_seed=1", "hydra.launcher.n_jobs=1"]
    command += [f"hydra.sweep.dir={tmp_path}"]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=900,
        env=user_env(OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (path,) = tmp_path.rglob("results.json")
    result = read_result(path.parent)
    runs = pd.read_csv(FOLDER / "runs.csv", dtype={"identity": str})
    (row,) = runs[runs.identity == result.key.identity].itertuples()
    assert result.status == "ok" and result.test == row.test
