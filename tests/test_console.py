"""What a person reads: a run's few lines, a sweep's job count and closing summary, the theory
commands' lines, and plots that show every series."""

from __future__ import annotations

import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from sdexp.table2 import Table
from sdexp.table_plot import Plot, error_bars, figure, save_plot
from tests.conftest import FAST_TOY, ROOT, run_train, user_env


@pytest.mark.slow
def test_a_toy_run_prints_a_few_lines_and_ends_with_its_result(tmp_path):
    """The README's first command, its output redirected to a file (as in every SLURM job)."""
    run_dir = tmp_path / "run"
    log = tmp_path / "console.txt"
    command = [sys.executable, str(ROOT / "train.py"), "dataset=toy", "model=vanilla"]
    command += ["mode=sensemode", "budget=0.3", f"hydra.run.dir={run_dir}"]
    with log.open("w") as out:
        done = subprocess.run(command, cwd=ROOT, env=user_env(), stdout=out, stderr=out)
    assert done.returncode == 0, log.read_text()[-3000:]
    lines = log.read_text().splitlines()
    assert len(lines) < 30, "\n".join(lines)
    assert lines[0].startswith("Training toy, vanilla (L = 50), mode sensemode at budget 0.3")
    assert any(line.startswith("W&B: logged offline to ") for line in lines)
    last = lines[-1]
    assert last.startswith("ok: test MSE ") and last.endswith(f"{run_dir}/results.json")
    # The quickstart learns: its test MSE is well below the targets' variance.
    mse = float(last.split("test MSE ")[1].split()[0])
    variance = float(last.split("variance is ")[1].split(")")[0])
    assert mse < variance / 2, last
    # And README shows what it prints, to the digit (the run is deterministic on one thread).
    readme = (ROOT / "README.md").read_text()
    shown = re.search(
        r"\nok: test MSE (\S+) \(final model; the test targets' variance is (\S+)\)", readme
    )
    assert shown is not None and shown.groups() == (f"{mse:.4g}", f"{variance:.3g}"), last
    epoch = re.search(r"\nepoch 30/30: train/loss (\S+), val/mse (\S+),", readme)
    assert epoch is not None and f"epoch 30/30: train/loss {epoch[1]}, val/mse {epoch[2]}," in (
        log.read_text()
    )


@pytest.mark.slow
def test_a_sweep_counts_its_jobs_and_sums_up(tmp_path):
    sweep = tmp_path / "sweep"
    grid = ["+sweep=smoke", "seed=0", "budget=0.7", "mode=uniform,none", "logger=csv"]
    done = run_train(*grid, f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == f"Planning 2 cells into {sweep} ..."
    assert "recipe toy: 1 epoch, batch 32," in lines[1]  # the smoke preset's one epoch
    starts = [line for line in lines if line.startswith("job ")]
    assert [line.split(":")[0] for line in starts] == ["job 1/2", "job 2/2"]
    assert f"Sweep {sweep}: 2 launched: 2 ok, 0 failed" in done.stdout
    assert lines[-1] == f"Table: sdexp-table {sweep}"
    assert "[HYDRA]" not in done.stdout  # the launchers' own lines are off


@pytest.mark.slow
def test_a_failed_sweep_job_is_listed_in_the_summary(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_train(
        "+sweep=smoke",
        "seed=0",
        "budget=0.7",
        "mode=uniform",
        "optimizer.lr=1e4",
        "trainer.log_every_n_steps=1",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 1
    assert "1 launched: 0 ok, 1 failed" in done.stdout
    (failed,) = [line for line in done.stdout.splitlines() if line.startswith("  failed: ")]
    assert failed.startswith(f"  failed: {sweep}/") and "/uniform-b0.7-s0-" in failed
    assert failed.endswith("(NonFiniteLossError: training loss is inf at epoch 0, step 1)")


def in_log(printed: str, log: Path) -> list[str]:
    """The lines of ``printed`` that the log file does not hold (it prefixes time and source)."""
    logged = log.read_text()
    unprefixed = (re.sub(r"^(warning|error): ", "", line) for line in printed.splitlines())
    return [line for line in unprefixed if f"] - {line}" not in logged]


@pytest.mark.slow
def test_a_short_run_prints_no_warning_and_logs_what_it_prints(tmp_path):
    """Fewer batches per epoch than the logging interval (Lightning warns about it), with a
    logger: no warning printed. A warning that does occur (a test callback's) is one line on
    stderr and in train.log, like every line the run prints."""
    run_dir = tmp_path / "run"
    done = run_train(
        *FAST_TOY,
        "trainer.log_every_n_steps=50",  # 8 batches per epoch
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
    assert "warning" not in done.stdout.lower(), done.stdout
    assert in_log(done.stdout, run_dir / "train.log") == []
    run_dir = tmp_path / "warned run"  # a space: the printed wandb sync command quotes it
    warned = ["+callbacks.warn._target_=tests.helpers.Warn", f"hydra.run.dir={run_dir}"]
    done = run_train(*FAST_TOY, "logger=wandb", *warned)
    assert done.returncode == 0, done.stderr[-3000:]
    [warning] = done.stderr.splitlines()  # warnings and errors go to stderr, one line each
    assert warning.startswith("warning: ") and "warning" not in done.stdout.lower()
    assert warning.endswith("UserWarning: a warning no run expects")
    assert in_log(done.stdout + done.stderr, run_dir / "train.log") == []
    [wandb_line] = [line for line in done.stdout.splitlines() if line.startswith("W&B: ")]
    sync = shlex.split(wandb_line.split("(upload: ")[1].removesuffix(")"))
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert sync == ["wandb", "sync", str(offline)]


def test_the_theory_commands_say_what_they_do_and_where_they_wrote(tmp_path):
    """normality trains with a Lightning Trainer: none of Lightning's lines (GPU available, its
    tips, "`Trainer.fit` stopped") or warnings are printed; what is printed is in theory.log."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdexp.theory",
            "experiment=normality_quick",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
    first, *_, last = done.stdout.splitlines()
    assert first.startswith("Theorem 2, Figs. 4 and 5") and first.endswith("running ...")
    assert last.startswith("done in ") and "normality.png" in last and last.endswith(str(tmp_path))
    assert len(done.stdout.splitlines()) == 2
    assert in_log(done.stdout, tmp_path / "theory.log") == []


def table(metric: str, rows: list[tuple]) -> Plot:
    """The plot of the Table of one setup from (mode, budget, n, mean, std) rows."""
    frame = pd.DataFrame(
        [
            {"mode": m, "variant": "", "budget": b, "n": n, "mean": mean, "std": std}
            | {"ok": n, "failed": 0, "missing": 0 if n else 1}
            for m, b, n, mean, std in rows
        ]
    )
    setup = {"setup": "abc123", "dataset": "toy", "model": "vanilla", "stable": True}
    setup |= {"epochs": 1, "recipe": "toy", "metric": metric, "report": "final"}
    return Table(frame.assign(**setup, num_blocks=8)).plot()


def test_error_bars_stay_within_the_metric_range():
    below, above = error_bars("error", [1.0, 99.0], [3.0, 3.0])
    assert below == [1.0, 3.0] and above == [3.0, 1.0]  # never below 0 % or above 100 %
    assert error_bars("mse", [0.1], [0.5]) == [[0.1], [0.5]]  # an MSE is not negative
    assert error_bars("mse", [0.1], [math.nan]) == [[0.0], [0.0]]  # one seed: no bar
    t = table("error", [("uniform", 0.5, 4, 1.0, 3.0), ("uniform", 0.7, 4, 99.0, 3.0)])
    (bars,) = [c for c in figure(t).axes[0].containers if isinstance(c, ErrorbarContainer)]
    (segments,) = bars.lines[2]
    low, high = zip(*[(s[0][1], s[1][1]) for s in segments.get_segments()], strict=True)
    assert low == (0.0, 96.0) and high == (4.0, 100.0)  # as drawn


def test_a_plot_without_finished_runs_says_so(tmp_path):
    empty = table("mse", [("uniform", 0.5, 0, math.nan, math.nan)])
    assert save_plot(empty, tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"
    texts = [t.get_text() for t in figure(empty).axes[0].texts]
    assert "no finished run in this setup" in texts
    full = table("mse", [("uniform", 0.5, 2, 0.3, 0.1), ("sensemode", 0.5, 2, 0.4, 0.1)])
    axes = figure(full).axes[0]
    assert "no finished run in this setup" not in [t.get_text() for t in axes.texts]
    xs = {round(line.get_xdata()[0], 6) for line in axes.lines if len(line.get_xdata())}
    assert len(xs) == 2  # the two modes' points at b = 0.5 side by side, not on top
