"""Several runs per GPU on the CPU: the launcher presets compose, every job gets its own slot
and CPUs, and scripts/mps.sh's paths that need no GPU (--print, no driver tools, a stand-in
for nvidia-cuda-mps-control)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sdexp.results import read_result
from sdexp.run.sharing import (
    MPSDaemon,
    claim_slot,
    cpu_share,
    mps_control,
    runs_sharing_device,
)
from tests.helpers import FAST_TOY, ROOT, SWEEP, run_train, user_env

MPS = ROOT / "scripts" / "mps.sh"


def claimer(directory: Path, slots: int, hold_s: float) -> subprocess.Popen:
    code = (
        "import sys, time; from sdexp.run.sharing import claim_slot; "
        f"print(claim_slot({str(directory)!r}, {slots}), flush=True); time.sleep({hold_s})"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_slots_are_held_by_live_processes(tmp_path):
    """Each live process holds one slot; a slot comes free when its holder ends."""
    assert claim_slot(tmp_path, 2) == 0
    assert claim_slot(tmp_path, 2) == 0  # the same process: the same slot
    holder = claimer(tmp_path, 2, hold_s=30)
    assert holder.stdout.readline().strip() == "1"
    late = claimer(tmp_path, 2, hold_s=0)
    assert late.communicate(timeout=60)[0].strip() == "None"  # both taken
    holder.kill()
    holder.wait()
    again = claimer(tmp_path, 2, hold_s=0)
    assert again.communicate(timeout=60)[0].strip() == "1"


def test_pinning_sets_affinity_and_threads():
    cpus = sorted(os.sched_getaffinity(0))
    slots = 2 if len(cpus) > 1 else 1
    code = (
        "import os, torch; from sdexp.run.sharing import pin_threads; "
        f"mine = pin_threads({slots - 1}, {slots}); "
        "print(mine, sorted(os.sched_getaffinity(0)), torch.get_num_threads(), "
        "os.environ['OMP_NUM_THREADS'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = cpu_share(slots - 1, slots, cpus)
    assert done.stdout.split("] ")[0] + "]" == str(expected)
    assert done.stdout.strip().endswith(f"{expected} {len(expected)} {len(expected)}")


@pytest.mark.slow
def test_a_shared_gpu_sweep_pins_its_jobs(tmp_path):
    """The preset as a user runs it (on the CPU): two jobs at once, each in its own slot; no MPS
    control program here, which the sweep says in one line before going on without it."""
    if mps_control() is not None:
        pytest.skip("this machine has nvidia-cuda-mps-control: the sweep would start MPS")
    sweep = tmp_path / "sweep"
    done = run_train(
        "-m",
        *FAST_TOY,
        "seed=0,1,2",
        "logger=none",
        "hydra/launcher=gpu_shared",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line for line in done.stdout.splitlines() if line.startswith("MPS:")]
    assert said == [
        "MPS: not started (nvidia-cuda-mps-control not found): the runs share the GPU without it"
    ]
    logs = [p.read_text() for p in sorted(sweep.glob("*/train.log"))]
    assert len(logs) == 3
    pins = [re.search(r"slot (\d) of 2, CPUs \[([\d, ]+)\], (\d+) torch threads", t) for t in logs]
    assert all(pins), logs
    assert {p.group(1) for p in pins} == {"0", "1"}  # two workers, two slots
    for pin in pins:
        assert len(pin.group(2).split(",")) == int(pin.group(3))
    results = [read_result(p.parent) for p in sweep.glob("*/results.json")]
    assert len(results) == 3
    assert {(r.device, r.device_share) for r in results} == {("cpu", 0.5)}  # 2 runs at once
    assert runs_sharing_device() == 1  # outside a sweep: a run has its device to itself


# --- scripts/mps.sh ---------------------------------------------------------------------------


def mps(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(MPS), *args], capture_output=True, text=True, env=user_env(**env), timeout=60
    )


def test_mps_print_needs_no_gpu(tmp_path):
    pipes = {"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path / "p"), "MPS_CONTROL": "mpsctl"}
    start = mps("start", "--print", **pipes)
    assert start.returncode == 0
    assert start.stdout.splitlines() == [
        f"mkdir -p {tmp_path / 'p'} /tmp/nvidia-log",
        f"CUDA_MPS_PIPE_DIRECTORY={tmp_path / 'p'} CUDA_MPS_LOG_DIRECTORY=/tmp/nvidia-log "
        "mpsctl -d",
    ]
    assert mps("stop", "--print", **pipes).stdout.startswith("echo quit | CUDA_MPS_PIPE")
    assert "get_server_list" in mps("status", "--print", **pipes).stdout
    assert not (tmp_path / "p").exists()  # printed, not run


def test_mps_without_driver_tools_says_so(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    path = f"{empty}:/usr/bin:/bin"
    if Path("/usr/local/nvidia/bin/nvidia-cuda-mps-control").exists():
        pytest.skip("this machine has the driver's MPS control")
    done = mps("start", PATH=path)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "mps: nvidia-cuda-mps-control not found (no NVIDIA driver tools here): "
        "runs share the GPU without MPS"
    )
    assert mps("bogus").returncode == 2 and mps("start", "--now").returncode == 2


STAND_IN = """\
#!/usr/bin/env bash
# nvidia-cuda-mps-control's interface: -d starts the daemon, otherwise commands on stdin.
dir=$CUDA_MPS_PIPE_DIRECTORY
if [ "${1:-}" = -d ]; then mkfifo "$dir/control"; echo started >>"$dir/calls"; exit 0; fi
read -r command
[ -e "$dir/control" ] || { echo "Cannot find MPS control daemon process" >&2; exit 1; }
echo "$command" >>"$dir/calls"
if [ "$command" = quit ]; then rm "$dir/control"; fi
"""


def test_mps_start_status_stop_with_a_stand_in(tmp_path):
    control = tmp_path / "mps-control"
    control.write_text(STAND_IN)
    control.chmod(0o755)
    env = {"MPS_CONTROL": str(control), "CUDA_MPS_PIPE_DIRECTORY": str(tmp_path / "pipe")}
    env["CUDA_MPS_LOG_DIRECTORY"] = str(tmp_path / "log")
    assert mps("status", **env).returncode == 3
    started = mps("start", **env)
    assert started.returncode == 0 and started.stdout.startswith("mps: started"), started.stderr
    assert mps("status", **env).returncode == 0
    assert mps("start", **env).stdout.startswith("mps: already running")
    assert mps("stop", **env).stdout.strip() == "mps: stopped"
    assert mps("status", **env).returncode == 3
    assert mps("stop", **env).stdout.startswith("mps: not running")
    calls = (tmp_path / "pipe" / "calls").read_text().split()
    assert calls.count("started") == 1 and calls.count("quit") == 1


def test_mps_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(MPS)]).returncode == 0
    assert os.access(MPS, os.X_OK)


# --- the sweep's own MPS daemon (hydra/launcher=gpu_shared: sdexp.run.sharing.MPSDaemon)
# -----------


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """The stand-in nvidia-cuda-mps-control, its pipe and log directories, as the environment
    says; returns the file of the commands it received."""
    control = tmp_path / "mps-control"
    control.write_text(STAND_IN)
    control.chmod(0o755)
    monkeypatch.setenv("MPS_CONTROL", str(control))
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path / "pipe"))
    monkeypatch.setenv("CUDA_MPS_LOG_DIRECTORY", str(tmp_path / "log"))
    return tmp_path / "pipe" / "calls"


def test_the_sweep_starts_mps_and_stops_it(stand_in, capsys):
    daemon = MPSDaemon()
    daemon.on_multirun_start(SWEEP)
    assert capsys.readouterr().out.startswith("MPS: started for this sweep (")
    assert stand_in.read_text().split() == ["started", "get_server_list"]
    daemon.on_multirun_end(SWEEP)
    daemon.stop()  # again at exit: stopped once
    assert capsys.readouterr().out == "MPS: stopped the daemon this sweep started\n"
    assert stand_in.read_text().split()[-1] == "quit" and stand_in.read_text().count("quit") == 1


def test_the_sweep_leaves_a_running_daemon_alone(stand_in, capsys):
    stand_in.parent.mkdir()
    subprocess.run([os.environ["MPS_CONTROL"], "-d"], check=True)
    daemon = MPSDaemon()
    daemon.on_multirun_start(SWEEP)
    daemon.on_multirun_end(SWEEP)
    out = capsys.readouterr().out
    assert out.startswith("MPS: a daemon already runs (") and out.count("\n") == 1
    assert "quit" not in stand_in.read_text()


def test_a_dry_run_starts_no_daemon(stand_in, capsys):
    MPSDaemon().on_multirun_start(OmegaConf.create({"hydra": {"sweeper": {"dry_run": True}}}))
    assert capsys.readouterr().out == "" and not stand_in.exists()


@pytest.mark.slow
def test_a_failed_sweep_stops_its_daemon_too(stand_in):
    """Hydra skips on_multirun_end when a job failed (a NaN loss here): the daemon the sweep
    started is stopped as its process exits."""
    sweep = stand_in.parent.parent / "sweep"
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", *FAST_TOY, "optimizer.lr=1e30"]
        + ["logger=none", "hydra/launcher=gpu_shared", "hydra.launcher.n_jobs=1"]
        + [f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=user_env(),  # the stand-in's variables, set by the fixture
    )
    assert done.returncode == 1 and "NonFiniteLossError" in done.stderr
    said = [line for line in done.stdout.splitlines() if line.startswith("MPS:")]
    assert said[0].startswith("MPS: started for this sweep") and len(said) == 2
    assert said[1] == "MPS: stopped the daemon this sweep started"
    assert stand_in.read_text().split() == ["started", "get_server_list", "quit"]


@pytest.mark.slow
def test_a_run_takes_one_thread_and_a_sweeps_job_its_launchers(tmp_path):
    """threads=auto (the default): one torch thread for a run of its own; a job of a sweep (the
    basic launcher here) keeps torch's default, as a fresh process has it; an integer is set
    in either. (No OMP_NUM_THREADS here: torch's default is one thread per core.)"""
    record = "+callbacks.threads._target_=tests.callbacks.RecordThreads"
    run = tmp_path / "run"
    done = run_train(*FAST_TOY, "logger=none", record, f"hydra.run.dir={run}", OMP_NUM_THREADS=None)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST_TOY, "logger=none", record, "threads=auto,3", f"hydra.sweep.dir={sweep}"]
    done = run_train(*args, OMP_NUM_THREADS=None)
    assert done.returncode == 0, done.stderr[-3000:]
    default = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env=user_env(OMP_NUM_THREADS=None),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    threads = [(d / "threads").read_text() for d in (run, sweep / "0", sweep / "1")]
    assert threads == ["1", default, "3"]
