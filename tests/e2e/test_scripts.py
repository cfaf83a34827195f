"""The measurement scripts of ``scripts/`` run as a user runs them, at a small size: the
sensitivities' noise (README: how mode.batches was chosen) and the GPU check's pool of concurrent
runs on the CPU (its arithmetic: tests/unit/test_gpu_check.py)."""

from __future__ import annotations

import subprocess
import sys
from argparse import Namespace

import numpy as np
import pandas as pd
import pytest

from tests.helpers import ROOT, load_script, user_env


@pytest.fixture(scope="module")
def check():
    return load_script("gpu_check")


@pytest.mark.slow
def test_the_noise_script_measures_profiles_against_batches(tmp_path):
    """scripts/sensitivity_noise.py (README: how mode.batches was chosen), at a small size: two
    seeds, k = 1 and 2; one row per seed and k, and a summary naming its command."""
    command = [sys.executable, str(ROOT / "scripts" / "sensitivity_noise.py"), "dataset=digits"]
    command += ["model=resnet56", "model.depth=20", "--seeds", "0-1", "--batches", "1", "2"]
    command += ["--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=user_env())
    assert done.returncode == 0, done.stderr[-2000:]
    noise = pd.read_csv(tmp_path / "noise.csv")
    assert sorted(zip(noise.seed, noise.batches, strict=True)) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert noise["p_rel_l2@0.2"].between(0, 2).all() and (noise.num_blocks == 9).all()
    assert noise.loc[noise.batches == 1, "t_median"].isna().all()  # one batch: no spread
    summary = (tmp_path / "summary.md").read_text()
    assert "scripts/sensitivity_noise.py dataset=digits" in summary and "2 seeds" in summary
    exponents = pd.read_csv(tmp_path / "noise.csv").pipe(check_exponents, tmp_path)
    assert list(exponents.k) == ["1, 2: 2k <= 8 (disjoint images)"] * 2  # 500 images: 8 batches


def check_exponents(noise: pd.DataFrame, folder) -> pd.DataFrame:
    """exponents.md's table, each exponent the mean of the seeds' log-log slopes."""
    text = (folder / "exponents.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table = pd.DataFrame(
        [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]], columns=header
    )
    slopes = [
        np.polyfit(np.log(g.batches), np.log(g["p_rel_l2@0.2"]), 1)[0]
        for _, g in noise.groupby("seed")
    ]
    assert float(table.exponent[0]) == pytest.approx(np.mean(slopes), rel=2e-3)
    return table


@pytest.mark.slow
def test_the_pool_runs_rounds_of_k_runs_at_once(check, tmp_path, capsys):
    """Part c on the CPU: two workers, rounds K = 1 and 2, one line on MPS (absent here)."""
    args = Namespace(quick=True, precision="32-true")
    found = check.runs_per_gpu(args, check.QUICK, tmp_path, 300, speed_found={})
    assert found["variant"] == "graphed" and "error" not in found, found.get("error")
    assert [r["jobs"] for r in found["rounds"]] == [1, 2]
    assert all(r["finished"] == r["jobs"] and r["images_per_s"] > 0 for r in found["rounds"])
    assert len(found["rounds"][1]["per_run"]) == 2
    assert found["mps"].startswith("MPS: not started")
    report = check.report({"info": {"device": "CPU", "software": "torch"}, "runs": found}, tmp_path)
    assert "- K = 2: " in report and "the four presets' training images" in report
    assert (tmp_path / "gpu_check.json").exists()
