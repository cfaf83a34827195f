"""What a person reads: a run's few lines, a sweep's job count and closing summary, the theory
commands' lines (the plots: tests/unit/test_table_plot.py)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import FAST_TOY, ROOT, command_output, run_train, user_env


@pytest.mark.slow
def test_a_toy_run_prints_a_few_lines_and_ends_with_its_result(tmp_path):
    """README's first command, its output redirected to a file (as in every SLURM job)."""
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
    # And README and Getting started show what it prints, to the digit (the run is
    # deterministic on one thread).
    for page in ("README.md", "docs/getting-started.md"):
        shown_on = (ROOT / page).read_text()
        shown = re.search(
            r"\nok: test MSE (\S+) \(final model; the test targets' variance is (\S+)\)", shown_on
        )
        assert shown is not None and shown.groups() == (f"{mse:.4g}", f"{variance:.3g}"), page
        epoch = re.search(r"\nepoch 30/30: train/loss (\S+), val/mse (\S+),", shown_on)
        assert epoch is not None, page
        assert f"epoch 30/30: train/loss {epoch[1]}, val/mse {epoch[2]}," in log.read_text(), page


@pytest.mark.slow
@pytest.mark.xdist_group("smoke")
def test_a_sweep_counts_its_jobs_and_sums_up(smoke_sweep):
    """README's smoke sweep (the session's ``smoke_sweep``): 12 jobs of one epoch."""
    done = command_output(smoke_sweep)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = "outputs/sweeps/smoke"  # the preset's directory, where the command ran
    assert (smoke_sweep / sweep / "sweep.json").exists()
    lines = done.stdout.splitlines()
    assert lines[0] == f"Planning 16 cells into {sweep} ..."
    assert "recipe toy: 1 epoch, batch 32," in lines[1]  # the smoke preset's one epoch
    starts = [line for line in lines if line.startswith("job ")]
    assert [line.split(":")[0] for line in starts] == [f"job {k}/12" for k in range(1, 13)]
    assert f"Sweep {sweep}: 12 launched: 12 ok, 0 failed" in done.stdout
    assert lines[-1] == f"Table: sdexp-table {sweep}"
    assert "[HYDRA]" not in done.stdout  # the launchers' own lines are off


@pytest.mark.slow
def test_a_failed_sweep_job_is_listed_in_the_summary(failed_sweep):
    """The session's ``failed_sweep``: its Uniform job's line names the run and why."""
    done = command_output(failed_sweep.parent)
    assert done.returncode == 1
    assert "2 launched: 0 ok, 2 failed" in done.stdout
    failed = [line for line in done.stdout.splitlines() if line.startswith("  failed: ")]
    (uniform,) = [line for line in failed if "/uniform-b0.7-s0-" in line]
    assert uniform.startswith(f"  failed: {failed_sweep}/")
    assert uniform.endswith("(NonFiniteLossError: training loss is inf at epoch 0, step 1)")


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
    warned = ["+callbacks.warn._target_=tests.callbacks.Warn", f"hydra.run.dir={run_dir}"]
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
