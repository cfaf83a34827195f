"""Sweeps on a real SLURM cluster, as a user runs them (README, "On SLURM"; docs: what every stop
does): the smoke sweep and its table, a re-run that submits nothing, a job requeued by
``scontrol requeue``, preempted by a job of a higher partition, timed out (submitit's USR2),
cancelled by ``scancel``, refused by a live run's lock, a stopped sweep, the GPU preset on a
CPU-only cluster, ``slurm_shared`` and ``slurm_ddp``.

A run that must be stopped mid-way pauses (``tests.callbacks.PauseOnce``, at epoch 1 after
epoch 0's checkpoint) until a signal ends it; the requeued run finds the pause behind it and
goes on. Its results must equal an uninterrupted run's but for the times."""

from __future__ import annotations

import fcntl
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdexp.results import read_result
from sdexp.run.identity import run_key
from tests.helpers import (
    ROOT,
    compose_config,
    results_in,
    run_table,
    run_train,
    same_numbers,
    user_env,
    wait_for,
)

CPU = ["hydra/launcher=slurm_cpu"]
#: The run stopped mid-way in these tests: three epochs of the tiny toy run, logged to W&B
#: (offline), the default logger of a sweep.
LONG = ["mode=uniform", "budget=0.7", "trainer.max_epochs=3", "logger=wandb"]
PAUSE = ["+callbacks.pause._target_=tests.callbacks.PauseOnce"]
SRUN_WARNING = "The `srun` command is available"
#: The time-out test's ``signal_delay_s``: USR2 this long before the time limit.
SIGNAL_S = 50


def sweep_command(sweep: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "+sweep=smoke",
        *overrides,
        f"hydra.sweep.dir={sweep}",
    ]


def start_sweep(sweep: Path, *overrides: str) -> subprocess.Popen:
    """The sweep's command in the background, as a user starts it in a terminal."""
    return subprocess.Popen(
        sweep_command(sweep, *overrides),
        cwd=ROOT,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def run_dir(sweep: Path, *cell: str) -> Path:
    """Where the sweep writes the run of ``cell`` (its identity's directory)."""
    return sweep / run_key(compose_config(["+sweep=smoke", *cell]))[0].cell_dir


def job_of(run: Path) -> str:
    """The SLURM job (``<array>_<task>`` in a job array) whose run paused in ``run``, as the
    paused process sees it."""
    pid = int((run / "paused").read_text())
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in item
    )
    array, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else environ["SLURM_JOB_ID"]


def end_soon(job: str) -> None:
    """Bring the time limit of ``job`` to 60-120 s from now (SLURM counts it in minutes). SLURM
    sends USR2 ``SIGNAL_S`` before the limit or up to 60 s sooner (sbatch(1), ``--signal``):
    here at its first check of the limits (every 30 s) within ``SIGNAL_S`` + 30 s of it.
    A limit short from the start would send USR2 before a slow run has paused, or before
    submitit has set its handler in the job's first seconds (the job ends FAILED)."""
    shown = subprocess.run(
        ["scontrol", "show", "job", job], capture_output=True, text=True, check=True
    ).stdout
    hours, minutes, seconds = re.search(r"RunTime=(\d+):(\d+):(\d+)", shown).groups()
    elapsed = 3600 * int(hours) + 60 * int(minutes) + int(seconds)
    limit = -(-(elapsed + 60) // 60)
    subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={limit}"], check=True)


def states(job: str) -> list[str]:
    """Every state SLURM's accounting holds for ``job``, requeues included, oldest first."""
    done = subprocess.run(
        ["sacct", "-n", "-X", "--duplicates", "-j", job, "-o", "State"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def live_jobs(sweep: Path) -> list[str]:
    """The sweep's SLURM jobs that are pending or running."""
    arrays = {p.name.split("_")[0] for p in (sweep / ".submitit").iterdir() if p.name[0].isdigit()}
    done = subprocess.run(
        ["squeue", "-h", "-o", "%i", "-j", ",".join(sorted(arrays))],
        capture_output=True,
        text=True,
    )
    return done.stdout.split()


def job_logs(sweep: Path) -> str:
    return "".join(p.read_text() for p in sorted(sweep.glob(".submitit/*/*_log.*")))


@pytest.fixture(autouse=True)
def no_job_left(tmp_path):
    """Cancel whatever the test's sweeps left pending or running (a failed test)."""
    yield
    jobs = {p.name.split("_")[0] for p in tmp_path.rglob(".submitit/*") if p.name[0].isdigit()}
    if jobs:
        subprocess.run(["scancel", *sorted(jobs)], capture_output=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> object:
    """The result of the ``LONG`` run, uninterrupted, as a single local run."""
    out = tmp_path_factory.mktemp("uninterrupted")
    done = run_train("+sweep=smoke", *LONG, "seed=0", "hydra.mode=RUN", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    return read_result(out)


def test_the_smoke_sweep_runs_as_one_job_array_and_a_rerun_submits_nothing(tmp_path):
    sweep = tmp_path / "smoke"
    done = subprocess.run(
        sweep_command(sweep, *CPU), cwd=ROOT, env=user_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"Submitted 12 jobs: SLURM job array \d+\n", done.stdout)
    summary = f"Sweep {sweep}: 12 launched: 12 ok, 0 failed, 0 interrupted, 0 refused"
    assert summary in done.stdout
    assert {r.status for r in results_in(sweep).values()} == {"ok"} and len(results_in(sweep)) == 12
    assert SRUN_WARNING not in done.stdout + done.stderr + job_logs(sweep)
    table = run_table(str(sweep), "--out", str(tmp_path / "tables"))
    assert table.returncode == 0, table.stderr
    assert "Runs: 12 finished, 0 failed, 0 missing." in table.stdout

    jobs = set((sweep / ".submitit").iterdir())
    again = subprocess.run(
        sweep_command(sweep, *CPU), cwd=ROOT, env=user_env(), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "12 already done (skipped), 0 to launch" in again.stdout
    assert "Submitted" not in again.stdout and set((sweep / ".submitit").iterdir()) == jobs


@pytest.mark.parametrize("stop", ["requeue", "preemption", "time-out"])
def test_a_stopped_job_is_requeued_and_resumes_to_an_uninterrupted_runs_numbers(
    tmp_path, uninterrupted, stop
):
    """``scontrol requeue``; preemption by a job of partition ``high`` (SIGTERM, 10 s of grace:
    the run requeues its job); the time limit (submitit's USR2 ``signal_delay_s`` before it),
    brought near once the run has paused. Each resumes from last.ckpt, with the default logger
    (W&B, offline), whose service SLURM signals too."""
    sweep = tmp_path / "sweep"
    options = [*CPU, "hydra.launcher.cpus_per_task=2", *LONG, "seed=0", *PAUSE]
    if stop == "time-out":  # submitit calls a USR2 past min(80 %, limit - 10 min) a time-out
        options += ["hydra.launcher.timeout_min=10", f"hydra.launcher.signal_delay_s={SIGNAL_S}"]
    process = start_sweep(sweep, *options)
    run = run_dir(sweep, *LONG, "seed=0", *PAUSE)
    wait_for(run / "paused", process, limit_s=120)
    job = job_of(run)
    if stop == "requeue":
        subprocess.run(["scontrol", "requeue", job], check=True)
    elif stop == "preemption":
        subprocess.run(
            ["sbatch", "-p", "high", "-c", "2", "--mem=1G", "-o", "/dev/null", "--wrap", "true"],
            check=True,
            capture_output=True,
        )
    elif stop == "time-out":
        end_soon(job)
    out, err = finish(process)
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    assert "1 launched: 1 ok, 0 failed, 0 interrupted, 0 refused" in out
    log = (run / "train.log").read_text()
    assert log.count(f"resuming from {run}/checkpoints/last.ckpt after epoch 1 of 3") >= 1, log
    assert "REQUEUED" in states(job) or "PREEMPTED" in states(job), states(job)
    if stop == "preemption":
        assert f"job {job} was preempted: requeued, it resumes from its last checkpoint" in log
        assert "PREEMPTED" not in states(job)[-1:]
    if stop == "time-out":
        assert "this job is timed-out" in job_logs(sweep) and "Requeued job" in job_logs(sweep)
    (result,) = results_in(sweep).values()
    assert result.status == "ok" and same_numbers(result, uninterrupted)
    assert SRUN_WARNING not in out + err + job_logs(sweep)


def test_a_cancelled_job_is_named_the_others_are_waited_for_and_a_rerun_finishes_it(tmp_path):
    sweep = tmp_path / "sweep"
    cell = [*LONG, "seed=0,1", *PAUSE, "+callbacks.pause.seed=1"]
    process = start_sweep(sweep, *CPU, *cell)
    cancelled = run_dir(sweep, *LONG, "seed=1", *PAUSE, "+callbacks.pause.seed=1")
    wait_for(cancelled / "paused", process, limit_s=120)
    job = job_of(cancelled)
    subprocess.run(["scancel", job], check=True)
    out, err = finish(process)
    assert process.returncode == 1
    assert "2 launched: 1 ok, 0 failed, 1 interrupted, 0 refused" in out, out
    assert f"  interrupted: {cancelled} (SLURM job {job} ended CANCELLED" in out, out
    (line,) = [line for line in out.splitlines() if line.startswith(f"  interrupted: {cancelled}")]
    log = Path(line.split("; its log: ")[1].removesuffix(")"))
    assert "CANCELLED" in log.read_text(), line  # slurmstepd's "*** JOB ... CANCELLED ... ***"
    assert err.strip().splitlines()[-1] == (
        "error: 1 of 2 jobs did not end ok: 1 interrupted (listed above; run the same command "
        "to run them again)"
    )
    assert "Traceback" not in out + err
    finished = run_dir(sweep, *LONG, "seed=0", *PAUSE, "+callbacks.pause.seed=1")
    assert read_result(finished).status == "ok"  # waited for

    again = subprocess.run(
        sweep_command(sweep, *CPU, *cell), cwd=ROOT, env=user_env(), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 already done (skipped), 1 to launch" in again.stdout
    assert "resuming from" in (cancelled / "train.log").read_text()
    assert read_result(cancelled).status == "ok"


def test_a_refused_job_is_one_line_in_the_summary(tmp_path):
    """A live run holds the directory of the sweep's one run (its lock): the job's run is
    refused, its error travels back from the job, and the summary says so."""
    sweep = tmp_path / "sweep"
    run = run_dir(sweep, "mode=uniform", "budget=0.3", "seed=0")
    run.mkdir(parents=True)
    with open(run / "run.lock", "w") as lock:
        lock.write("pid 1 on another host, since noon\n")
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(
            sweep_command(sweep, *CPU, "mode=uniform", "budget=0.3", "seed=0"),
            cwd=ROOT,
            env=user_env(),
            capture_output=True,
            text=True,
        )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "1 launched: 0 ok, 0 failed, 0 interrupted, 1 refused" in done.stdout
    assert f"  refused: {run} (hydra.run.dir: {run} is in use by a live run" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert sorted(p.name for p in run.iterdir()) == ["run.lock"]


def test_a_stopped_sweep_cancels_its_jobs(tmp_path):
    """SIGINT (Ctrl-C) to the sweep while its jobs run: it cancels them, waits until they have
    ended, prints its summary and exits 130; nothing of the sweep runs on, and the same command
    would resume both runs."""
    sweep = tmp_path / "sweep"
    process = start_sweep(sweep, *CPU, *LONG, "seed=0,1", *PAUSE)
    runs = [run_dir(sweep, *LONG, f"seed={seed}", *PAUSE) for seed in (0, 1)]
    for run in runs:
        wait_for(run / "paused", process, limit_s=120)
    process.send_signal(signal.SIGINT)
    out, err = finish(process)
    assert process.returncode == 130, err[-3000:]
    assert "Cancelled the sweep's unfinished SLURM jobs (scancel): all have ended" in out
    assert "2 launched: 0 ok, 0 failed, 2 interrupted, 0 refused" in out, out
    assert err.strip().splitlines()[-1].startswith("error: interrupted (SIGINT)")
    assert live_jobs(sweep) == []
    again = subprocess.run(
        [*sweep_command(sweep, *CPU, *LONG, "seed=0,1", *PAUSE), "hydra.sweeper.dry_run=true"],
        cwd=ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
    )
    assert again.stdout.count("(resumes from its last checkpoint)") == 2, again.stdout


def test_the_gpu_preset_on_a_cpu_cluster_is_one_line_naming_what_no_node_has(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_train("+sweep=smoke", "hydra/launcher=slurm", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        "error: hydra.launcher.cpus_per_task: a job asks for 8 CPUs, but the "
    ), line
    assert "hydra/launcher=slurm_cpu" in line
    assert not (sweep / ".submitit").exists()


def test_slurm_shared_plans_and_runs_on_a_gpu_share(tmp_path):
    """``--gres=shard:1`` of the node's GPU (a gres on /dev/null here), two CPUs a job."""
    sweep = tmp_path / "sweep"
    cell = ["mode=uniform", "budget=0.3", "seed=0,1"]
    dry = run_train(
        "+sweep=smoke",
        "hydra/launcher=slurm_shared",
        *cell,
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.dry_run=true",
    )
    assert dry.returncode == 0 and "2 to launch" in dry.stdout, dry.stderr[-3000:]
    done = run_train(
        "+sweep=smoke", "hydra/launcher=slurm_shared", *cell, f"hydra.sweep.dir={sweep}"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 launched: 2 ok" in done.stdout
    assert job_logs(sweep).count("MPS control daemon on ") == 2
    assert "--gres=shard:1" in "".join(
        p.read_text() for p in sweep.glob(".submitit/*/*_submission.sh")
    )


def test_slurm_ddp_runs_two_ranks_that_agree(tmp_path):
    """``slurm_ddp``: a run's two ranks are the two tasks of its job (one CPU each, gloo);
    both draw the same masks and end with the same weights."""
    sweep, record = tmp_path / "sweep", tmp_path / "record"
    cpu_ddp = [
        "hydra/launcher=slurm_ddp",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=4",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "dataset.batch_size=16",
    ]
    options = [*cpu_ddp, "mode=sensemode", "budget=0.5", "seed=0", "trainer.max_epochs=2"]
    options += [
        "+callbacks.record._target_=tests.callbacks.RecordMasks",
        f"+callbacks.record.out={record}",
    ]
    done = run_train("+sweep=smoke", *options, f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(record / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["masks"] == ranks[1]["masks"] and len(ranks[0]["masks"]) == 2 * 8
    for name, value in ranks[0]["parameters"].items():
        assert torch.equal(value, ranks[1]["parameters"][name]), name
    (result,) = results_in(sweep).values()
    assert result.status == "ok" and result.survival == ranks[0]["survival"]
    assert SRUN_WARNING not in done.stdout + done.stderr + job_logs(sweep)
