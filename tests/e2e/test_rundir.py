"""A run directory holds one run: its identity decides skip and resume, another run's files stop
the run with one line and two ways out, a live run keeps others out, failures are loud.

Each scenario is run as a user runs it (``python train.py ...``) on real files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from sdexp.results import read_result
from sdexp.run.training import train
from tests.helpers import (
    CRASHING,
    FAST_TOY,
    ROOT,
    compose_config,
    copy_of,
    history_steps,
    read_only,
    run_train,
    same_numbers,
    user_env,
    wait_for,
)

TOY = [*FAST_TOY, "logger=none"]
RESUMED = "resuming from"  # the run's line when it resumes


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The run stopped with exit status 2 and one line of error, no traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    return line


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.slow
def test_another_run_in_the_directory_is_discarded_with_overwrite(finished_run, tmp_path):
    """The finished run of another budget and mode (a copy of the session's ``finished_run``):
    without overwrite=true the run stops in one line (tests/e2e/test_faults.py); with it, the
    run discards the other's files and trains from the start, not from its checkpoint."""
    run_dir = copy_of(finished_run, tmp_path / "run")
    assert read_result(run_dir).key.budget == 0.3
    done = run_train(*TOY, "budget=0.9", "overwrite=true", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    result = read_result(run_dir)
    assert result.key.budget == 0.9 and set(result.survival) == {0.9}
    assert f"{RESUMED} {run_dir}/checkpoints/last" not in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_a_checkpoint_of_another_run_is_not_resumed(crashed_run, tmp_path):
    """The session's ``crashed_run`` (width 16) killed, say: only its checkpoint is left."""
    run_dir = copy_of(crashed_run, tmp_path / "run")
    (run_dir / "results.json").unlink()
    width_32 = [o for o in CRASHING if o != "model.width=16"]
    line = one_line_error(run_train(*width_32, f"hydra.run.dir={run_dir}"))
    assert "checkpoints/last.ckpt is of another run (model.width: 16 -> 32)" in line


@pytest.mark.slow
def test_a_truncated_checkpoint_is_moved_aside_and_the_run_starts_over(crashed_run, tmp_path):
    """It used to stop the run (and its whole sweep) until overwrite=true."""
    run_dir = copy_of(crashed_run, tmp_path / "run")
    last = run_dir / "checkpoints" / "last.ckpt"
    truncated = last.read_bytes()[: last.stat().st_size // 2]
    last.write_bytes(truncated)
    done = run_train(*CRASHING, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stderr.splitlines()  # the one warning, naming the file
    assert line.startswith(f"warning: {last} is unreadable (")
    assert line.endswith("moved aside to last.ckpt.unreadable, and the run starts over")
    assert (run_dir / "checkpoints" / "last.ckpt.unreadable").read_bytes() == truncated
    assert RESUMED not in done.stdout
    assert read_result(run_dir).status == "ok"


@pytest.mark.slow
def test_temporary_files_of_a_killed_write_are_removed_when_the_run_claims_its_directory(
    crashed_run, tmp_path
):
    """A process killed (SIGKILL) while it wrote a checkpoint leaves its ``.best.ckpt.<pid>.tmp``
    (18 MB for ResNet110): it used to stay forever, even after the run finished. A refused run
    leaves them, as everything else there; the run that claims the directory removes them."""
    run_dir = copy_of(crashed_run, tmp_path / "run")
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.kill()
    killed.wait()
    stale = [
        run_dir / "checkpoints" / f".best.ckpt.{killed.pid}.tmp",
        run_dir / "checkpoints" / f".last.ckpt.{killed.pid}.tmp",
        run_dir / f".results.json.{killed.pid}.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    (run_dir / "checkpoints" / "notes.tmp").write_text("not a write of a run")
    width_32 = [o for o in CRASHING if o != "model.width=16"]
    assert run_train(*width_32, f"hydra.run.dir={run_dir}").returncode == 2  # refused
    assert all(path.exists() for path in stale)
    done = run_train(*CRASHING, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
    assert [path for path in stale if path.exists()] == []
    for path in stale:
        assert (
            f"removed {path}, left by process {killed.pid} killed while writing it" in done.stdout
        )
    assert (run_dir / "checkpoints" / "notes.tmp").exists()
    assert f"{RESUMED} {run_dir}/checkpoints/last.ckpt" in done.stdout
    assert read_result(run_dir).status == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("content", ["", "{half a file"])
def test_an_unreadable_results_file_counts_as_not_finished(tmp_path, content):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(content)
    done = run_train(*TOY, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{run_dir / 'results.json'}: unreadable" in (run_dir / "train.log").read_text()
    assert read_result(run_dir).status == "ok"
    assert oct((run_dir / "results.json").stat().st_mode & 0o777) == oct(0o666 & ~umask())


@pytest.mark.slow
def test_an_unwritable_checkpoint_folder_fails_the_run(tmp_path):
    """Lightning swallows the PermissionError: the run used to end "ok" without checkpoints."""
    run_dir = tmp_path / "run"
    with read_only(run_dir / "checkpoints"):
        done = run_train(*TOY, f"hydra.run.dir={run_dir}")
    assert done.returncode == 1
    result = read_result(run_dir)
    assert result.status == "failed"
    assert result.reason.startswith("CheckpointWriteError: could not write the checkpoint")
    assert "checkpoints/" in result.reason


# SenseMode at budget 0.5, W&B offline with a history row every step, paused (PauseOnce) before
# batch 4 of epoch 1, after epoch 0's checkpoint (step 8).
PAUSED = [*FAST_TOY, "mode=sensemode", "budget=0.5", "trainer.log_every_n_steps=1"]
PAUSED += ["logger=wandb", "+callbacks.pause._target_=tests.callbacks.PauseOnce"]
PAUSED += ["+callbacks.pause.batch=4"]


@pytest.mark.slow
def test_a_live_run_keeps_its_directory_and_once_killed_the_same_command_resumes_it(tmp_path):
    """A second run into the directory of a live one stops in one line and changes nothing.
    Once the first is dead (SIGKILL, mid-epoch), the same command resumes it from last.ckpt and
    ends as an uninterrupted run: the same numbers. Its W&B history continues from the
    checkpoint's step, 8 (nothing logged at lower steps again; the killed process never got to
    write its offline run)."""
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), *PAUSED, f"hydra.run.dir={run_dir}"]
    env = user_env()
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(run_dir / "paused", first)

        def files() -> dict:  # but W&B's own: the live run's wandb-core writes there
            found = [p for p in run_dir.rglob("*") if p.is_file()]
            return {p: p.read_bytes() for p in found if "wandb" not in p.relative_to(run_dir).parts}

        before = files()
        second = run_train(*PAUSED, f"hydra.run.dir={run_dir}")
        line = one_line_error(second)
        assert f"{run_dir} is in use by a live run (pid {first.pid}" in line
        # its record of the command (.hydra), its log and its lock holder unchanged
        assert files() == before
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    assert not (run_dir / "results.json").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()  # written at the end of epoch 0

    third = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"{RESUMED} {run_dir}/checkpoints/last" in (run_dir / "train.log").read_text()
    resumed = read_result(run_dir)
    assert resumed.status == "ok"
    straight = [o for o in PAUSED if "callbacks" not in o and not o.startswith("logger=")]
    straight += [f"output_dir={tmp_path / 'straight'}", "logger=none"]
    assert same_numbers(resumed, train(compose_config(straight)))
    *_, last = sorted((run_dir / "wandb").glob("offline-run-*"))
    steps = history_steps(last)
    assert min(steps) >= 8 and steps == sorted(steps)  # 8: the checkpoint's step
