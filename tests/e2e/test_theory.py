"""``python -m sdexp.theory`` as a user runs it: a quick experiment writes its CSVs, plot and
summary and logs them to W&B offline (the experiments themselves:
tests/integration/test_theory.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT, user_env, wandb_record


@pytest.mark.slow
def test_a_quick_run_writes_its_files_and_logs_them_to_wandb_offline(tmp_path):
    """As a user runs it: the output directory gets the CSVs, the PNG and the summary naming
    the command; the W&B run (offline) the summary's numbers and the figure."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sdexp.theory",
            "experiment=depth_quick",
            "logger=wandb",
            f"hydra.run.dir={tmp_path}",
        ],
        check=True,
        cwd=ROOT,
        env=user_env(WANDB_SILENT="true"),
        capture_output=True,
    )
    assert {"depth.png", "summary.md", "distribution.csv", "bounds.csv"} <= {
        path.name for path in tmp_path.iterdir()
    }
    assert "python -m sdexp.theory experiment=depth_quick" in (tmp_path / "summary.md").read_text()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run_dir.rglob("media/images/depth/figure_*.png"))
    record = wandb_record(run_dir)
    assert record["name"] == "theory-depth" and record["config"]["experiment"]["depth"] == 100
    assert record["summary"]["depth/bound_holds"] == 1 and record["summary"]["wall_time_s"] > 0
