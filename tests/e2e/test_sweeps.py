"""Sweeps as a user runs them: the presets' grids, the grid sweeper, skipping finished runs,
failed jobs, Ctrl-C, an earlier layout's runs, resuming after preemption (submitit). (A single
run killed and resumed: tests/e2e/test_rundir.py; planning in process: tests/unit/test_sweep.py.)"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from sdexp.results import RunResult, write_result
from sdexp.run.identity import run_key
from sdexp.run.training import train
from tests.helpers import (
    CONF,
    ROOT,
    command_output,
    compose_config,
    config_options,
    copy_of,
    grid_lines,
    imported_packages,
    results_in,
    run_table,
    run_train,
    same_numbers,
    stable_fields,
    table_row,
    user_env,
    wait_for,
)

# --- the presets: a dry run plans the grid and writes nothing ---------------------------------


def dry_listing(preset: str, tmp_path) -> tuple[str, list[str], list[str]]:
    """``python train.py +sweep=PRESET hydra.sweeper.dry_run=true``: its output, its planned runs
    and left-out cells; its closing line counts them, and nothing is launched or written."""
    dry = ["hydra.sweeper.dry_run=true", f"hydra.sweep.dir={tmp_path}"]
    done = run_train(f"+sweep={preset}", *dry)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    cells = int(re.match(r"Planning (\d+) cells", lines[0])[1])
    runs, left_out = grid_lines(done.stdout)
    merged = cells - len(left_out) - len(runs)  # the no-SD baseline, once per seed
    summary = f": {cells} cells, {len(left_out)} left out (infeasible for their mode), {merged} "
    assert summary in lines[-1] and f"= {len(runs)} runs: " in lines[-1]
    assert len(runs) > 0 and any(line.startswith("Setup ") for line in lines)
    assert not any(tmp_path.iterdir())  # a dry run launches and writes nothing
    return done.stdout, runs, left_out


CHECKED_BELOW = {"table2_cifar10", "budget_cpu"}  # their grids in full: the next two tests


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(set(config_options("sweep")) - CHECKED_BELOW))
def test_every_preset_plans_its_grid_without_running(preset, tmp_path):
    dry_listing(preset, tmp_path)


@pytest.mark.slow
def test_table2_dry_listing_is_the_paper_grid(tmp_path):
    """Per seed: 3 modes x 9 budgets minus linear's 4 infeasible budgets, plus 1 baseline run;
    x 4 seeds (the preset's seeds 0..3): 96 runs."""
    stdout, runs, left_out = dry_listing("table2_cifar10", tmp_path)
    for seed in range(4):
        mine = [line for line in runs if re.search(rf"\bseed={seed}\b", line)]
        skipped = [line for line in left_out if re.search(rf"\bseed={seed}\b", line)]
        assert len(mine) == 3 * 9 - 4 + 1 == 24
        assert len(skipped) == 4
        assert all(re.search(rf"mode=linear budget=0\.[1-4] seed={seed}  ", s) for s in skipped)
        baseline = [line for line in mine if "mode=none" in line]
        assert len(baseline) == 1 and "budget=1.0" in baseline[0]
        for mode, budgets in (("sensemode", 9), ("uniform", 9), ("linear", 5)):
            assert sum(f"mode={mode} " in line for line in mine) == budgets
    assert "144 cells, 16 left out (infeasible for their mode), 32 merged" in stdout
    assert "= 96 runs: 0 already done (skipped), 96 to launch" in stdout
    (setup,) = [line for line in stdout.splitlines() if line.startswith("Setup ")]
    assert "cifar10, resnet110 (L = 54), recipe reference: 164 epochs, batch 64" in setup
    assert "epochs counted from 1" in setup and "dropped blocks decay" in setup
    assert "shortcut avgpool, normalize False, reports the best-validation checkpoint" in setup


@pytest.mark.slow
def test_budget_cpu_dry_listing(tmp_path):
    """The CPU-sized Budget Hypothesis (issue 13), per seed: SenseMode and Uniform at 0.1..0.9,
    Linear at 0.5..0.9 (L = 9: from 4/9), the baseline once; 24 runs x 4 seeds."""
    stdout, runs, left_out = dry_listing("budget_cpu", tmp_path)
    assert len(runs) == 24 * 4 and len(left_out) == 4 * 4
    budgets = [f"{b / 10:g}" for b in range(1, 10)]
    for mode, expected in (("sensemode", budgets), ("uniform", budgets), ("linear", budgets[4:])):
        for seed in range(4):
            found = [b for b in budgets if f"mode={mode} budget={b} seed={seed} " in "".join(runs)]
            assert found == expected, (mode, seed)
    assert all("mode=linear budget=0." in line for line in left_out)
    baseline = [line for line in runs if "mode=none" in line]
    assert len(baseline) == 4 and all("budget=1.0" in line for line in baseline)
    assert "144 cells, 16 left out (infeasible for their mode), 32 merged" in stdout
    assert "= 96 runs: 0 already done (skipped), 96 to launch" in stdout
    (setup,) = [line for line in stdout.splitlines() if line.startswith("Setup ")]
    assert "digits, resnet20 (L = 9), recipe short: 50 epochs, batch 64" in setup


@pytest.mark.slow
def test_a_dry_run_leaves_the_slow_checks_to_the_launch(tmp_path):
    """Planning imports neither Lightning nor torch's compiler (seconds); the options that need
    them are checked when the sweep launches, before any job runs."""
    bad = ["+sweep=smoke", "+trainer.max_epoch=1", f"hydra.sweep.dir={tmp_path / 'smoke'}"]
    command = [sys.executable, "-X", "importtime", str(ROOT / "train.py"), *bad]
    dry = subprocess.run(
        [*command, "hydra.sweeper.dry_run=true"], capture_output=True, text=True, env=user_env()
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in dry.stderr.splitlines()}
    assert not {"pytorch_lightning", "torchvision", "torch._dynamo"} & imported
    assert "the sweep checks those when it launches" in dry.stdout
    launch = run_train(*bad)
    assert launch.returncode == 1 and "Traceback" not in launch.stderr
    assert "trainer.max_epoch: not an option of pytorch_lightning.Trainer" in launch.stderr
    assert not (tmp_path / "smoke").exists()  # nothing launched


# --- a sweep end to end ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.xdist_group("smoke")
def test_smoke_sweep_runs_skips_and_aggregates(smoke_sweep, tmp_path):
    """README's smoke sweep (the session's ``smoke_sweep``): 12 runs in directories named by
    their identity; then, in a copy of it, the same command again, spelled otherwise, after a
    lost and a corrupt results.json, and the table."""
    first = command_output(smoke_sweep)
    assert first.returncode == 0, first.stderr
    assert "16 cells, 2 left out (infeasible for their mode), 2 merged" in first.stdout
    assert "= 12 runs: 0 already done (skipped), 12 to launch" in first.stdout
    sweep = copy_of(smoke_sweep / "outputs" / "sweeps" / "smoke", tmp_path / "smoke")
    args = ["+sweep=smoke", f"hydra.sweep.dir={sweep}", "logger=csv"]
    results = results_in(sweep)
    assert len(results) == 12 and all(r.status == "ok" for r in results.values())
    assert all(name == r.key.cell_dir for name, r in results.items())  # named by identity
    cells = {(r.key.mode, r.key.budget, r.key.seed) for r in results.values()}
    assert ("linear", 0.3, 0) not in cells and ("none", 1.0, 1) in cells
    grid = json.loads((sweep / "sweep.json").read_text())
    assert sorted(c["dir"] for c in grid["cells"]) == sorted(results)

    # Re-running the same command skips every finished run; after a "crash" only the lost one
    # runs, and a results.json that cannot be read is named and counts as not finished.
    written = {name: (sweep / name / "results.json").stat().st_mtime_ns for name in results}
    again = run_train(*args, PYTHONPROFILEIMPORTTIME="1")  # -X importtime
    assert "12 already done (skipped), 0 to launch" in again.stdout, again.stdout
    assert "pytorch_lightning" not in imported_packages(again.stderr)  # nothing to launch: no check
    # However the command spells the same runs: a fast path, a default spelled out (the toy
    # recipe's lr), other orders, 0.70.
    respelled = ["speed.cuda_graphs=true", "optimizer.lr=0.001", "budget=0.70,0.3", "seed=1,0"]
    respelled += ["mode=none,linear,uniform,sensemode", "hydra.sweeper.dry_run=true"]
    dry = run_train(*args, *respelled)
    assert "= 12 runs: 12 already done (skipped), 0 to launch" in dry.stdout, dry.stdout
    lost, corrupt = [name for name in results if "/uniform-" in name][:2]
    (sweep / lost / "results.json").unlink()
    (sweep / corrupt / "results.json").write_text("{")
    dry = run_train(*args, "hydra.sweeper.dry_run=true")
    assert f"{sweep / corrupt / 'results.json'}: unreadable" in dry.stdout, dry.stdout
    assert "10 already done (skipped), 2 to launch" in dry.stdout
    third = run_train(*args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert "10 already done (skipped), 2 to launch" in third.stdout, third.stdout
    after = {name: (sweep / name / "results.json").stat().st_mtime_ns for name in results}
    assert {name for name in results if after[name] != written[name]} == {lost, corrupt}
    assert stable_fields(results_in(sweep)[lost]) == stable_fields(results[lost])

    done = run_table(str(sweep))  # the README's next command
    assert done.returncode == 0, done.stderr
    table = done.stdout
    assert table_row(table, "Linear", "ours")[2] == "-"  # the infeasible cell, as in the paper
    assert "Runs: 12 finished, 0 failed, 0 missing." in table
    for name in ("table2.md", "table2.csv", "summary.csv", "table2_toy_vanilla_1ep.png"):
        assert (sweep / name).exists(), name


@pytest.mark.slow
def test_an_edited_preset_is_another_setup(tmp_path):
    """Editing the preset (width 32 -> 64) used to find the old runs in the new runs'
    directories: now they are another setup's, in directories of their own, and the earlier
    runs stay. A directory that holds another run's files (put there by hand) is still refused
    until the user chooses another directory or overwrite=true."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)  # the project's configs, as a user edits them
    sweep = tmp_path / "smoke"
    grid = ["--config-path", str(conf), "+sweep=smoke", "seed=0", "budget=0.7"]
    grid += ["mode=uniform,none", "logger=csv", f"hydra.sweep.dir={sweep}"]
    assert run_train(*grid).returncode == 0
    first = {name: (sweep / name / "results.json").read_bytes() for name in results_in(sweep)}
    preset = conf / "sweep" / "smoke.yaml"
    preset.write_text(preset.read_text() + "model:\n  width: 64\n")  # the tiny runs' 32

    dry = run_train(*grid, "hydra.sweeper.dry_run=true")
    assert "0 already done (skipped), 2 to launch" in dry.stdout and "conflict" not in dry.stdout
    planned = re.findall(rf"-> {sweep}/(\S+)", dry.stdout)
    assert len(planned) == 2 and not set(planned) & set(first)
    assert len({name.split("/")[0] for name in [*planned, *first]}) == 2  # two setups
    (sweep / planned[0]).mkdir(parents=True)
    shutil.copy(sweep / next(iter(first)) / "results.json", sweep / planned[0])
    refused = run_train(*grid)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "Nothing was launched" in refused.stderr and "overwrite=true" in refused.stderr
    assert "model.width: 32 -> 64" in refused.stdout

    done = run_train(*grid, "overwrite=true")
    assert done.returncode == 0, done.stderr[-3000:]
    widths = {name: r.config["model"]["width"] for name, r in results_in(sweep).items()}
    assert widths == {**dict.fromkeys(first, 32), **dict.fromkeys(planned, 64)}
    assert all((sweep / name / "results.json").read_bytes() == first[name] for name in first)
    assert "2 already done (skipped)" in run_train(*grid).stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+sweep=smoke", "budget=1.5"], "budget: the mean survival probability L_bar/L must lie"),
        (
            ["+sweep=smoke", "hydra.sweep.subdir=x"],
            "hydra.sweep.subdir: the budget grid names each run's directory by its identity",
        ),
        (
            ["+sweep=table2_cifar10", "seed=0", "mode=uniform", "budget=0.5"]
            + ["dataset.download=false", "dataset.data_dir=MISSING"],
            "dataset.data_dir: cifar10 is not in",
        ),
    ],
)
def test_bad_sweep_input_fails_before_anything_runs(tmp_path, overrides, message):
    overrides = [o.replace("MISSING", str(tmp_path / "data")) for o in overrides]
    sweep_dir = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    done = run_train(*overrides, sweep_dir, PYTHONPROFILEIMPORTTIME="1")  # -X importtime
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "sweep").exists()
    if "budget=1.5" in overrides:  # a cell's budget is checked before what imports Lightning
        assert "pytorch_lightning" not in imported_packages(done.stderr)


@pytest.mark.slow
def test_a_job_refused_by_a_live_run_is_counted_refused(tmp_path):
    """Two sweeps into one directory: the other's live run holds one cell's directory (its
    lock). That job's run is refused and writes nothing there; the summary counts it refused,
    not ok (it used to read the other run's results.json as its own), and the sweep exits 1."""
    sweep = tmp_path / "sweep"
    grid = ["+sweep=smoke", "mode=uniform", "budget=0.3", "seed=0,1", "logger=none"]
    held = sweep / run_key(compose_config([*grid[:3], "seed=1", "logger=none"]))[0].cell_dir
    held.mkdir(parents=True)
    with open(held / "run.lock", "w") as lock:
        lock.write("pid 1 on another host, since noon\n")
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = run_train(*grid, f"hydra.sweep.dir={sweep}")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "2 launched: 1 ok, 0 failed, 0 interrupted, 1 refused" in done.stdout, done.stdout
    assert f"  refused: {held} (hydra.run.dir: {held} is in use by a live run" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == (
        "error: 1 of 2 jobs did not end ok: 1 refused (listed above; run the same command to run "
        "them again)"
    )
    assert sorted(p.name for p in held.iterdir()) == ["run.lock"]


@pytest.mark.slow
def test_a_failed_job_is_reported_and_counted(failed_sweep, tmp_path):
    """Two jobs whose loss diverges (the session's ``failed_sweep``)."""
    done = command_output(failed_sweep.parent)
    assert done.returncode == 1
    assert "2 of 2 jobs did not end ok: 2 failed (listed above" in done.stderr
    assert "2 launched: 0 ok, 2 failed" in done.stdout
    assert re.search(
        rf"  failed: {failed_sweep}/[0-9a-f]{{6}}/uniform-b0.7-s0-[0-9a-f]{{6}} \(", done.stdout
    )
    assert "Traceback" not in done.stderr
    assert {r.status for r in results_in(failed_sweep).values()} == {"failed"}
    table = run_table(str(failed_sweep), "--out", str(tmp_path))
    assert table.returncode == 0, table.stderr
    assert "Runs: 0 finished, 2 failed, 0 missing." in table.stdout


@pytest.mark.slow
def test_the_plan_names_left_out_cells_and_merges_duplicates(tmp_path):
    """A left-out cell's line names its budget (its reason is about it), even where every
    listed cell shares it; cells that are the same run are merged and counted."""
    grid = ["+sweep=smoke", "mode=linear,linear", "budget=0.3,0.30", "seed=0,1"]
    done = run_train(*grid, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert done.returncode == 0, done.stderr[-3000:]
    runs, left_out = grid_lines(done.stdout)
    reason = "(mode=linear needs budget >= 0.4375 with L=8 blocks)"
    assert left_out == [
        f"   -  left out  mode=linear budget=0.3 seed={s}  {reason}" for s in (0, 1)
    ]
    assert not runs
    summary = "8 cells, 2 left out (infeasible for their mode), 6 merged (6 duplicates) = 0 runs"
    assert summary in done.stdout
    assert not (tmp_path / "sweep").exists()  # nothing to launch, nothing written


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "name"), [(signal.SIGINT, "SIGINT (Ctrl-C)"), (signal.SIGTERM, "SIGTERM")]
)
def test_a_signal_stops_a_sweep_with_its_closing_summary(tmp_path, signum, name):
    """Ctrl-C (SIGINT to the terminal's process group) or SIGTERM (a scheduler's stop) while the
    first of two jobs trains: the job says what it keeps, the sweeper prints its closing summary
    and one line on stderr naming the signal, and exits with its status (130, 143); the second
    job never starts, and the first resumes when the command runs again."""
    sweep = tmp_path / "sweep"
    grid = ["mode=uniform", "budget=0.7", "seed=0,1", "trainer.max_epochs=2", "logger=csv"]
    pause = "+callbacks.pause._target_=tests.callbacks.PauseOnce"  # at epoch 1, batch 1
    command = [sys.executable, str(ROOT / "train.py"), "+sweep=smoke", *grid, pause]
    command.append(f"hydra.sweep.dir={sweep}")
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a shell's job
    )
    cells = [["+sweep=smoke", *grid[:2], f"seed={seed}", *grid[3:], pause] for seed in (0, 1)]
    jobs = [sweep / run_key(compose_config(cell))[0].cell_dir for cell in cells]
    wait_for(jobs[0] / "paused", process)
    os.killpg(process.pid, signum)  # SIGINT: what Ctrl-C in a terminal sends
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in out + err
    summary = f"Sweep {sweep}: 1 launched: 0 ok, 0 failed, 1 interrupted"
    assert summary in out and "; 1 not launched; 0 already done, 0 left out" in out, out
    assert f"  interrupted: {jobs[0]}\n" in out and out.endswith(f"Table: sdexp-table {sweep}\n")
    job, sweeper = err.strip().splitlines()  # the job's line, then the sweeper's
    assert job == (
        f"error: job 1/2: stopped by {name}: checkpoints/last.ckpt (after epoch 1 of 2) "
        f"is kept: the same command resumes from it: {jobs[0]}"
    )
    assert sweeper == (
        f"error: interrupted ({signal.Signals(signum).name}): run the same command to go on "
        "(finished runs are skipped, interrupted ones resume from their last checkpoint)"
    )
    assert (jobs[0] / "checkpoints" / "last.ckpt").exists() and not jobs[1].exists()

    again = run_train(*command[2:], "hydra.sweeper.dry_run=true")
    assert f"-> {jobs[0]}  (resumes from its last checkpoint)" in again.stdout, again.stdout
    assert "0 already done (skipped), 2 to launch" in again.stdout


@pytest.mark.slow
def test_a_signal_while_planning_is_one_line_and_launches_nothing(tmp_path):
    """Ctrl-C while the sweeper plans a 144-cell grid (seconds): it used to exit with status 130
    and not a word."""
    sweep = tmp_path / "sweep"
    command = [sys.executable, str(ROOT / "train.py"), "+sweep=budget_cpu"]
    process = subprocess.Popen(
        [*command, f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout.readline() == f"Planning 144 cells into {sweep} ...\n"
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130 and out == "", out
    assert err.splitlines() == [
        "error: stopped by SIGINT (Ctrl-C) while planning the sweep: nothing was launched"
    ]
    assert not sweep.exists()


@pytest.mark.slow
def test_a_sweep_directory_an_older_sdexp_wrote_is_one_line(tmp_path):
    """A run right under the sweep directory (an older sdexp named runs by their overrides):
    one line, exit status 1, nothing launched or changed."""
    sweep = tmp_path / "sweep"
    cell = ["+sweep=smoke", "mode=uniform", "budget=0.7", "seed=0"]
    key, config = run_key(compose_config(cell))
    older = sweep / "budget=0.7,mode=uniform,seed=0"
    write_result(older, RunResult(key, config, "ok", metric="mse", test_final=1.0))
    record = (older / "results.json").read_bytes()
    done = run_train(*cell, f"hydra.sweep.dir={sweep}")
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"error: hydra.sweep.dir: {sweep} was written by an older sdexp (a run right under it: "
        f"{older.name}): start a new sweep directory"
    ]
    assert sorted(p.name for p in sweep.iterdir()) == [older.name]
    assert (older / "results.json").read_bytes() == record


# --- resuming ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes(tmp_path):
    """A small grid through submitit_local: one job gets the preemption signal (USR2) mid-epoch,
    submitit requeues it, it resumes from last.ckpt and ends as an uninterrupted run."""
    sweep = tmp_path / "sweep"
    grid = ["mode=uniform", "budget=0.7", "seed=0,1", "trainer.max_epochs=2", "logger=csv"]
    command = [sys.executable, str(ROOT / "train.py"), "+sweep=smoke", *grid]
    command += [f"hydra.sweep.dir={sweep}", "hydra/launcher=submitit_local"]
    command += ["+callbacks.pause._target_=tests.callbacks.PauseOnce", "+callbacks.pause.seed=1"]
    env = user_env()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, stderr=subprocess.PIPE
    )
    paused = [o.replace("0,1", "1") for o in grid] + command[-2:]  # the job that pauses
    job = sweep / run_key(compose_config(["+sweep=smoke", *paused]))[0].cell_dir
    wait_for(job / "paused", process)
    os.kill(int((job / "paused").read_text()), signal.SIGUSR2)  # what SLURM sends on preemption
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]

    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))
    assert "this job is preempted" in logs and "Requeued job" in logs
    job_log = (job / "train.log").read_text()
    assert job_log.count(f"resuming from {job}/checkpoints/last.ckpt") == 1
    results = results_in(sweep)
    assert len(results) == 2 and all(r.status == "ok" for r in results.values())
    reference = compose_config(
        ["+sweep=smoke", *[o.replace("0,1", "1") for o in grid], f"output_dir={tmp_path / 'ref'}"]
    )
    straight = train(reference)
    assert same_numbers(results[str(job.relative_to(sweep))], straight)


# --- launchers and clusters ----------------------------------------------------------------------
