"""Fault injection, through the command line as a user runs it, with real files and real
signals: whatever stops a run is one line on stderr and an exit status (2 bad input, 1 a failed
run, 130/143 SIGINT/SIGTERM), never a traceback; a run that had started says "failed" and why in
its results.json; no temporary file is left; nothing of another run changes.

Every scenario writes beside a finished run (the session's ``finished_run``), whose files are
hashed before and after each scenario."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from sdexp.results import read_result
from tests.helpers import (
    FAST_TOY,
    ROOT,
    history_steps,
    imported_packages,
    read_only,
    user_env,
    wait_for,
)

TOY = [*FAST_TOY, "logger=none"]


def command(*args: str, module: str | None = None, importtime: bool = True) -> list[str]:
    """``python train.py ARGS`` (or ``python -m MODULE ARGS``), with the import times on stderr
    (``-X importtime``): a refusal must come before Lightning is imported."""
    entry = ["-m", module] if module else [str(ROOT / "train.py")]
    return [sys.executable, *(["-X", "importtime"] if importtime else []), *entry, *args]


def run(*args: str, module: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*args, module=module), cwd=cwd, capture_output=True, text=True, env=user_env()
    )


def stderr_lines(done: subprocess.CompletedProcess) -> list[str]:
    """stderr less ``-X importtime``'s lines."""
    return [line for line in done.stderr.splitlines() if not line.startswith("import time:")]


def the_line(done: subprocess.CompletedProcess, status: int) -> str:
    """The process ended with ``status``, one line on stderr (returned), no traceback."""
    lines = stderr_lines(done)
    assert done.returncode == status, "\n".join(lines[-30:])
    assert "Traceback" not in done.stdout + done.stderr
    assert len(lines) == 1, lines
    return lines[0]


def digest(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with its content's hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else ""
        for p in sorted(folder.rglob("*"))
    }


def temporary_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def place(finished_run, request) -> Path:
    """The scenario's own folder beside the finished run; the finished run unchanged after."""
    before = digest(finished_run)
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
    folder = finished_run.parent / name
    folder.mkdir()
    yield folder
    assert digest(finished_run) == before
    assert temporary_files(folder) == [] and temporary_files(finished_run) == []


# --- refused before anything runs: exit status 2 ----------------------------------------------


def under_a_file(place: Path) -> Path:
    (place / "file").write_text("a regular file")
    return place / "file" / "run"


def checkpoints_a_file(place: Path) -> Path:
    (place / "run").mkdir()
    (place / "run" / "checkpoints").write_text("not a folder")
    return place / "run"


def results_a_folder(place: Path) -> Path:
    (place / "run" / "results.json").mkdir(parents=True)
    return place / "run"


REFUSED = {
    "width_-1": (["model.width=-1"], "error: model.width: a positive integer, got -1"),
    "two_cpu_devices": (
        ["trainer.devices=2"],
        "error: trainer.devices: 2 devices need trainer=ddp",
    ),
    "no_training_batch": (
        ["trainer.limit_train_batches=0"],
        "error: trainer.limit_train_batches: a number of batches (at least 1) or a fraction",
    ),
    "gpu_on_a_cpu": (["trainer.accelerator=gpu"], "error: trainer.accelerator: gpu: "),
    "run_dir_under_a_file": (under_a_file, "error: hydra.run.dir: cannot create"),
    "checkpoints_a_file": (checkpoints_a_file, "checkpoints is not a directory, where the run"),
    "results_json_a_folder": (results_a_folder, "results.json is not a file, where the run"),
}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", REFUSED)
def test_a_refused_run_is_one_line_and_exit_status_2(place, scenario):
    setup, expected = REFUSED[scenario]
    if scenario == "gpu_on_a_cpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    overrides, run_dir = (setup, place / "run") if isinstance(setup, list) else ([], setup(place))
    before = digest(place)
    done = run(*TOY, *overrides, f"hydra.run.dir={run_dir}")
    assert the_line(done, 2).startswith("error: ") and expected in done.stderr
    assert "pytorch_lightning" not in imported_packages(done.stderr)  # refused within seconds
    after = digest(place)
    assert {k: v for k, v in after.items() if before.get(k) != v} in ({}, {"run": ""})


@pytest.mark.slow
def test_a_run_dir_in_a_read_only_place_is_one_line(place):
    with read_only(place / "locked"):
        done = run(*TOY, f"hydra.run.dir={place / 'locked' / 'run'}")
    line = the_line(done, 2)
    assert line.startswith(f"error: hydra.run.dir: cannot create {place / 'locked' / 'run'}")


@pytest.mark.slow
@pytest.mark.parametrize("named", [False, True], ids=["default_dir", "named_dir"])
def test_a_refused_command_leaves_no_directory_it_made(place, named):
    """Without hydra.run.dir the command makes outputs/runs/<date>/<time>/, with it the
    directory named (and its parents that were missing): a refused command removes what it
    made (model.width=0: the first of REFUSED's kind). A named one used to stay, empty; so did
    outputs/runs/. A directory that was there before stays."""
    (place / "before").mkdir()
    named_dir = [f"hydra.run.dir={place / 'before' / 'new' / 'run'}"] if named else []
    done = run(*TOY, "model.width=0", *named_dir, cwd=place)
    assert the_line(done, 2) == "error: model.width: a positive integer, got 0"
    assert "pytorch_lightning" not in imported_packages(done.stderr)  # refused within seconds
    assert [str(p.relative_to(place)) for p in place.rglob("*")] == ["before"]


@pytest.mark.slow
def test_a_theory_experiment_with_a_negative_size_is_one_line(place):
    done = run(
        "experiment=gradient_quick", "experiment.num_samples=-1", module="sdexp.theory", cwd=place
    )
    assert the_line(done, 2) == "error: experiment.num_samples: an integer, at least 1, got -1"
    assert "pytorch_lightning" not in imported_packages(done.stderr)  # refused within seconds
    assert list(place.iterdir()) == []  # outputs/theory/gradient_quick/ used to stay, empty


#: Hydra's own errors, composing the config before the task runs: its block of lines (or a
#: 92-line traceback for a YAML error) and exit status 1 became one line and exit status 2.
COMPOSITION = {
    "unknown_option": (
        ["mode=sensemod"],
        "error: mode=sensemod: no such option of mode (its options: linear, none, sensemode, "
        "uniform)",
    ),
    "unknown_added_option": (
        ["+sweep=smok"],
        "error: sweep=smok: no such option of sweep (its options: budget_cpu, hypothesis_cpu, "
        "hypothesis_cpu_replication, smoke, table2_cifar10, table2_cifar100, "
        "table2_cifar100_resnet56, table2_cifar10_resnet56)",
    ),
    "added_group_without_plus": (
        ["sweep=smoke"],
        "error: Could not override 'sweep'. No match in the defaults list. To append to your "
        "default list use +sweep=smoke",
    ),
    "override_that_does_not_parse": (["budget=["], "error: no viable alternative at input '['"),
    "deleted_key": (["~budget"], "error: budget: missing: the run needs it; set it (budget=...)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", COMPOSITION)
def test_a_config_that_does_not_compose_is_one_line(place, scenario):
    overrides, expected = COMPOSITION[scenario]
    done = run(*TOY, *overrides, cwd=place)
    assert the_line(done, 2).startswith(expected)
    assert "pytorch_lightning" not in imported_packages(done.stderr)
    assert list(place.iterdir()) == []


@pytest.mark.slow
def test_invalid_yaml_in_an_edited_config_is_one_line(place):
    """A copy of conf/ with an unclosed list in mode/uniform.yaml, passed with --config-path (as
    README says for the configs of an installed copy)."""
    conf = Path(shutil.copytree(ROOT / "conf", place / "conf"))
    (conf / "mode" / "uniform.yaml").write_text("_target_: sdexp.survival.Uniform\nx: [1, 2\n")
    done = run("--config-path", str(conf), *TOY, f"hydra.run.dir={place / 'run'}")
    assert the_line(done, 2) == (
        f"error: {conf / 'mode' / 'uniform.yaml'}, line 3, column 1: not valid YAML (while "
        "parsing a flow sequence expected ',' or ']', but got '<stream end>')"
    )
    assert not (place / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["experiment.modes=[banana]"], "experiment.modes: one of none, uniform, linear, got"),
        (["experiment.modes=[sensemode]"], "experiment.modes: one of none, uniform, linear, got"),
        (["experiment.budgets=[0.5,1.5]"], "experiment.budgets: a budget in (0, 1], got 1.5"),
    ],
)
def test_a_theory_list_argument_out_of_range_is_one_line(place, overrides, expected):
    """A mode the theory cannot compute used to stop it with Hydra's InstantiationException and
    exit status 1, after it had started."""
    done = run("experiment=gradient_quick", *overrides, module="sdexp.theory", cwd=place)
    assert the_line(done, 2).startswith(f"error: {expected}")
    assert "pytorch_lightning" not in imported_packages(done.stderr)
    assert list(place.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("dry", [False, True], ids=["launch", "dry_run"])
def test_a_sweep_directory_under_a_regular_file_is_one_line(place, dry):
    """It used to end in a 39-line traceback, and the dry run said all was fine."""
    (place / "file").write_text("a regular file")
    sweep = ["+sweep=smoke", "mode=uniform", "budget=0.3", "seed=0", "logger=none"]
    sweep += [f"hydra.sweep.dir={place / 'file' / 'sweep'}"]
    done = run(*sweep, *(["hydra.sweeper.dry_run=true"] if dry else []))
    assert the_line(done, 1) == (
        f"error: hydra.sweep.dir: cannot create {place / 'file' / 'sweep'} ({place / 'file'} is "
        "not a directory)"
    )
    assert (place / "file").read_text() == "a regular file"


@pytest.mark.slow
def test_another_run_in_the_directory_changes_nothing_of_it(finished_run, place):
    """Another budget in the finished run's directory stops until the user chooses another
    directory or overwrite=true (tests/e2e/test_rundir.py): it used to resume the finished
    run's checkpoint and write its numbers as the other budget's. The refused run used to
    rewrite the finished run's .hydra/config.yaml and overrides.yaml (its budget) and append its
    error to the finished run's train.log."""
    done = run(*TOY, "mode=sensemode", "budget=0.5", f"hydra.run.dir={finished_run}")
    line = the_line(done, 2)
    assert line.startswith(f"error: hydra.run.dir: {finished_run}: results.json is of another run")
    assert "budget: 0.3 -> 0.5" in line  # and the fixture checks every byte of it
    assert "hydra.run.dir" in line and "overwrite=true" in line  # the two ways out


# --- a run that had started: exit status 1 and a failed results.json --------------------------


@pytest.mark.slow
def test_a_nan_loss_is_one_line_and_a_failed_results_json(place):
    done = run(*TOY, "optimizer.lr=1e6", f"hydra.run.dir={place / 'run'}")
    line = the_line(done, 1)
    assert line.startswith("error: NonFiniteLossError: training loss is nan at epoch 0")
    result = read_result(place / "run")
    assert result.status == "failed" and result.reason.startswith("NonFiniteLossError: training")
    assert line.removeprefix("error: ") in (place / "run" / "train.log").read_text()


@pytest.mark.slow
def test_a_diverged_test_metric_is_a_failed_run_in_strict_json(place):
    """``optimizer.momentum=2`` diverges with a finite training loss and an infinite test MSE:
    the run used to end ok with "test": Infinity in its results.json (no JSON to a strict parser),
    and the table's verdict said "every seed has d = -inf"."""
    run_dir = place / "sweep" / "run"
    done = run(*TOY, "optimizer.momentum=2", f"hydra.run.dir={run_dir}")
    line = the_line(done, 1)
    reason = "NonFiniteMetricError: test_final inf, test_loss inf: not finite, the run diverged"
    assert line.startswith(f"error: {reason} (stored as null) (failed after ")
    data = json.loads((run_dir / "results.json").read_text(), parse_constant=pytest.fail)
    assert data["status"] == "failed" and data["reason"].startswith(reason)
    assert data["test_final"] is data["test"] is data["test_loss"] is None
    assert line.removeprefix("error: ") in (run_dir / "train.log").read_text()
    # A results.json an earlier version wrote: ok, with Infinity. The table counts both failed.
    earlier = {**data, "status": "ok", "reason": None, "test_final": math.inf, "seed": 1}
    earlier["identity"] = "0" * 16
    (place / "sweep" / "earlier").mkdir()
    (place / "sweep" / "earlier" / "results.json").write_text(json.dumps(earlier))
    table = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdexp.analysis.cli",
            str(place / "sweep"),
            "--out",
            str(place / "t"),
        ],
        capture_output=True,
        text=True,
        env=user_env(),
    )
    assert table.returncode == 0 and table.stderr == "", table.stderr
    runs = pd.read_csv(place / "t" / "runs.csv")
    assert list(runs.status) == ["failed", "failed"] and runs.test.isna().all()
    assert "Runs: 0 finished, 2 failed, 0 missing." in table.stdout and "inf" not in table.stdout


@pytest.fixture
def full_disk(place) -> Path:
    """A 200 KB tmpfs (root only): the first checkpoint fits, the second does not."""
    disk = place / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; no other source of ENOSPC for a directory")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_a_failed_results_json(full_disk):
    run_dir = full_disk / "run"
    done = run(*TOY, f"hydra.run.dir={run_dir}")
    line = the_line(done, 1)
    assert "CheckpointWriteError: could not write the checkpoint" in line
    assert "No space left on device" in line
    result = read_result(run_dir)
    assert result.status == "failed" and "No space left on device" in result.reason
    assert temporary_files(full_disk) == []


@pytest.mark.slow
def test_a_full_disk_before_the_first_checkpoint_names_the_file(full_disk):
    """A disk full before the run writes anything: the run's line used to be "OSError: [Errno
    28] No space left on device", naming no file (a write's error does not)."""
    subprocess.run(["dd", "if=/dev/zero", f"of={full_disk / 'filler'}", "bs=4k"], check=False)
    done = run(*TOY, f"hydra.run.dir={full_disk / 'run'}")
    line = the_line(done, 1)
    assert (
        line
        == f"error: OSError: [Errno 28] No space left on device: '{full_disk / 'run'}/run.lock'"
    )
    assert temporary_files(full_disk) == []


# --- signals: exit status 130/143, the last complete checkpoint, then the same command ---------

EPOCHS = ["trainer.max_epochs=3", "optimizer.lr=0"]  # lr 0: validation never improves


def epoch_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_and_the_same_command_resumes(place, signum):
    """SIGTERM reaches a run paused mid-epoch 3 from outside; SIGINT is sent by the run to
    itself while it writes the checkpoint of epoch 3 (a 1 MB ``.best.ckpt.*.tmp`` used to stay).
    Either way two epochs were done: last.ckpt holds epoch 2 although the validation never
    improved after epoch 1 (it used to be written only beside a new best). The SIGINT run's
    directory is then moved: it resumes there with no warning (Lightning's "dirpath has changed"
    and "not empty"). The SIGTERM run's W&B history (a row every step) goes on, when resumed,
    from the checkpoint's step, 16, and skips the steps its W&B run already holds: the step of
    epoch 3 it trained before it paused. (The moved SIGINT run's W&B id, made from its
    directory, is another.)"""
    run_dir = place / "run"
    if signum == signal.SIGTERM:
        stop = ["+callbacks.stop._target_=tests.callbacks.PauseOnce", "+callbacks.stop.epoch=2"]
    else:
        stop = ["+callbacks.stop._target_=tests.callbacks.SignalWhileSaving"]
        stop += [f"+callbacks.stop.signum={int(signum)}", "+callbacks.stop.epoch=2"]
    logged = ["logger=wandb", "trainer.log_every_n_steps=1"]
    args = [*FAST_TOY, *logged, *EPOCHS, *stop, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(  # without -X importtime: a full stderr pipe would block it
        command(*args, importtime=False),
        cwd=ROOT,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if signum == signal.SIGTERM:
        wait_for(run_dir / "paused", process)
        os.kill(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=600)
    done = subprocess.CompletedProcess(process.args, process.returncode, out.decode(), err.decode())
    line = the_line(done, 128 + signum)
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT (Ctrl-C)"
    assert line == (
        f"error: stopped by {name}: checkpoints/last.ckpt (after epoch 2 of 3) is kept: the same "
        f"command resumes from it: {run_dir}"
    )
    assert epoch_of(run_dir / "checkpoints" / "last.ckpt") == 1  # counted from 0
    assert epoch_of(run_dir / "checkpoints" / "best.ckpt") == 0
    assert not (run_dir / "results.json").exists() and temporary_files(run_dir) == []
    assert line.removeprefix("error: ") in (run_dir / "train.log").read_text()

    if signum == signal.SIGINT:
        run_dir = run_dir.rename(place / "moved")
    args[-1] = f"hydra.run.dir={run_dir}"
    again = run(*args)
    assert again.returncode == 0 and stderr_lines(again) == [], again.stderr[-3000:]
    assert f"resuming from {run_dir}/checkpoints/last.ckpt after epoch 2 of 3" in again.stdout
    result = read_result(run_dir)
    assert result.status == "ok" and result.test_best is not None
    assert len(result.epoch_times_s) == 3  # the epochs before the stop too
    assert epoch_of(run_dir / "checkpoints" / "last.ckpt") == 2  # the final model
    if signum == signal.SIGTERM:  # the moved run is a W&B run of its own: its id is its directory's
        wandb_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
        first, second = (history_steps(r) for r in wandb_runs)
        assert min(second) >= 16 and second == sorted(second)  # 16: the checkpoint's step
        assert max(first) >= 16 and min(second) > max(first)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_at_start_up_is_never_swallowed(place, signum):
    """A signal at any moment of a run's start (the imports of Hydra, torch and Lightning, the
    config's check, the data, the Trainer) stops it with one line and 128 + the signal's number.
    A SIGTERM or SIGINT during ``import pytorch_lightning`` used to be swallowed (a catch-all
    inside triton's import) and the run trained to its end; one during Hydra's composition
    became another error; one during the imports of the command's module, a traceback. (Before
    Python reaches the command's code, its interpreter's start-up, tenths of a second, a signal
    does what Python does by default: the offsets start after it, also on a loaded machine.)"""
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT (Ctrl-C)"
    for offset in (1.5, 2.2, 2.9, 3.6, 4.3):
        run_dir = place / f"run-{offset}"
        args = [*FAST_TOY, "trainer.max_epochs=300", "logger=csv", f"hydra.run.dir={run_dir}"]
        process = subprocess.Popen(
            command(*args, importtime=False),
            cwd=ROOT,
            env=user_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(offset)
        process.send_signal(signum)
        out, err = process.communicate(timeout=600)
        assert not (run_dir / "results.json").exists(), offset
        assert process.returncode == 128 + signum, (offset, out[-2000:], err[-2000:])
        (line,) = err.strip().splitlines()
        assert line.startswith(f"error: stopped by {name}"), (offset, line)


# --- unreadable checkpoints -------------------------------------------------------------------


# --- the pieces, in process -----------------------------------------------------------------
