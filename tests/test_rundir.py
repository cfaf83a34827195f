"""A run directory holds one run: its identity decides skip and resume, another run's files stop
the run with one line and two ways out, a live run keeps others out, failures are loud.

Each scenario is run as a user runs it (``python train.py ...``) on real files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from sdexp.results import read_result
from tests.conftest import FAST_TOY, ROOT, run_train, user_env
from tests.test_sweeps import wait_for

TOY = [*FAST_TOY, "logger=none"]
RESUMED = "resuming from"  # the run's line when it resumes
CRASH_AT_EPOCH_1 = ["+callbacks.crash._target_=tests.helpers.CrashOnce", "+callbacks.crash.epoch=1"]


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The run stopped with exit status 2 and one line of error, no traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    return line


@pytest.mark.slow
def test_another_budget_in_the_same_directory_stops_until_overwrite(tmp_path):
    """It used to resume the 0.9 run's checkpoint and write its numbers as budget 0.3's."""
    run_dir = tmp_path / "run"
    assert run_train(*TOY, "budget=0.9", f"hydra.run.dir={run_dir}").returncode == 0
    done = run_train(*TOY, "budget=0.3", f"hydra.run.dir={run_dir}")
    line = one_line_error(done)
    assert f"{run_dir}: results.json is of another run (budget: 0.9 -> 0.3" in line
    assert "hydra.run.dir" in line and "overwrite=true" in line
    assert read_result(run_dir).key.budget == 0.9  # untouched

    done = run_train(*TOY, "budget=0.3", "overwrite=true", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    result = read_result(run_dir)
    assert result.key.budget == 0.3 and set(result.survival) == {0.3}
    assert f"{RESUMED} {run_dir}/checkpoints/last" not in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    run_dir = tmp_path / "run"
    crashed = run_train(*TOY, *CRASH_AT_EPOCH_1, "model.width=16", f"hydra.run.dir={run_dir}")
    assert crashed.returncode == 1 and (run_dir / "checkpoints" / "last.ckpt").exists()
    (run_dir / "results.json").unlink()  # killed, say: only the checkpoint is left
    line = one_line_error(run_train(*TOY, *CRASH_AT_EPOCH_1, f"hydra.run.dir={run_dir}"))
    assert "checkpoints/last.ckpt is of another run (model.width: 16 -> 32)" in line


@pytest.mark.slow
def test_a_truncated_checkpoint_is_moved_aside_and_the_run_starts_over(tmp_path):
    """It used to stop the run (and its whole sweep) until overwrite=true."""
    run_dir = tmp_path / "run"
    assert run_train(*TOY, *CRASH_AT_EPOCH_1, f"hydra.run.dir={run_dir}").returncode == 1
    last = run_dir / "checkpoints" / "last.ckpt"
    truncated = last.read_bytes()[: last.stat().st_size // 2]
    last.write_bytes(truncated)
    done = run_train(*TOY, *CRASH_AT_EPOCH_1, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stderr.splitlines()  # the one warning, naming the file
    assert line.startswith(f"warning: {last} is unreadable (")
    assert line.endswith("moved aside to last.ckpt.unreadable, and the run starts over")
    assert (run_dir / "checkpoints" / "last.ckpt.unreadable").read_bytes() == truncated
    assert RESUMED not in done.stdout
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


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def read_only(folder: Path):
    """``folder`` made unwritable, also for root (the immutable attribute), then restored."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("root without chattr: no way to make a folder unwritable")
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"chattr +i not supported here: {done.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


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


@pytest.mark.slow
def test_a_live_run_keeps_its_directory(tmp_path):
    """A second run into the directory of a live one stops; once the first is dead (SIGKILL),
    the same command resumes it."""
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), *TOY, f"hydra.run.dir={run_dir}"]
    command += ["+callbacks.pause._target_=tests.helpers.PauseOnce"]
    env = user_env()
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(run_dir / "paused", first)
        files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        second = run_train(
            *TOY, "+callbacks.pause._target_=tests.helpers.PauseOnce", f"hydra.run.dir={run_dir}"
        )
        line = one_line_error(second)
        assert f"{run_dir} is in use by a live run (pid {first.pid}" in line
        # its record of the command (.hydra), its log and its lock holder unchanged
        assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    third = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert third.returncode == 0, third.stderr[-3000:]
    assert read_result(run_dir).status == "ok"
    assert f"{RESUMED} {run_dir}/checkpoints/last" in (run_dir / "train.log").read_text()
