"""Several runs on one GPU: each job of a local sweep gets a slot, and its own CPUs.

A Stable ResNet step leaves most of a large GPU idle, so a sweep runs K jobs at once on it,
each pinned to 1/K of the CPUs (``PinThreads``) by the lowest free slot, locked for the worker
process's life: ``job.num % K`` would give two running jobs the same CPUs.

``MPSDaemon`` runs the CUDA MPS daemon for the sweep when it can: the K runs' kernels then run
side by side instead of taking turns (8 graphed bf16 ResNet110 runs on an H200: 24,475 img/s in
all with MPS, 7,870 without; docs/performance/2026-12-04_h200/).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.experimental.callback import Callback

from sdexp.errors import ConfigError
from sdexp.run.console import in_multirun

log = logging.getLogger(__name__)

_held: dict[str, tuple[int, FileLock]] = {}  # lock directory -> (slot, its lock), per process


def claim_slot(directory: str | Path, slots: int) -> int | None:
    """The lowest slot in [0, slots) that no other live process holds, now held by this one
    until it exits (the same slot again on later calls); None if all are taken."""
    key = str(Path(directory).resolve())
    if key in _held:
        return _held[key][0]
    Path(directory).mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        lock = FileLock(Path(directory) / f"{slot}.lock", timeout=0)
        try:
            lock.acquire()  # released by the kernel when this process ends
        except (Timeout, OSError):
            continue
        _held[key] = (slot, lock)
        return slot
    return None


def cpu_share(slot: int, slots: int, cpus: list[int]) -> list[int]:
    """Slot ``slot``'s contiguous share of ``cpus`` (more slots than CPUs: one, round-robin)."""
    cpus = sorted(cpus)
    if slots >= len(cpus):
        return [cpus[slot % len(cpus)]]
    size = len(cpus) // slots
    return cpus[slot * size : (slot + 1) * size]


def pin_threads(slot: int, slots: int) -> list[int]:
    """Pin this process and torch's threads to its share of the CPUs it may use; returns them."""
    import torch

    mine = cpu_share(slot, slots, list(os.sched_getaffinity(0)))
    os.sched_setaffinity(0, mine)
    torch.set_num_threads(len(mine))
    os.environ["OMP_NUM_THREADS"] = str(len(mine))
    return mine


def device_kind(device) -> str:
    """A ``torch.device``'s kind, as results.json records it: the GPU's name, or "cpu"."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def runs_sharing_device() -> int:
    """How many runs train at once on this device: a local sweep's workers, else 1."""
    from hydra.core.hydra_config import HydraConfig

    if not in_multirun():
        return 1
    jobs = HydraConfig.get().launcher.get("n_jobs")
    return jobs if isinstance(jobs, int) and jobs > 1 else 1


class PinThreads(Callback):
    """Hydra callback: pins every job to the CPUs of its slot of ``jobs`` (under SLURM the job's
    CPUs are its own already: only torch's threads are set)."""

    def __init__(self, jobs: int) -> None:
        if not isinstance(jobs, int) or jobs < 1:
            raise ConfigError("hydra.launcher.n_jobs", f"a number of jobs >= 1, got {jobs!r}")
        self.jobs = jobs

    def on_job_start(self, config, **kwargs: Any) -> None:
        import torch

        if os.environ.get("SLURM_JOB_ID"):
            threads = len(os.sched_getaffinity(0))
            torch.set_num_threads(threads)
            log.info(f"SLURM job: {threads} torch threads on the job's own CPUs")
            return
        job = config.hydra.job
        slot = claim_slot(Path(config.hydra.sweep.dir) / ".slots", self.jobs)
        if slot is None:
            slot = int(job.get("num") or 0) % self.jobs
            log.warning(f"no free slot of {self.jobs}: job {job.get('num')} takes slot {slot}")
        cpus = pin_threads(slot, self.jobs)
        log.info(
            f"job {job.get('num')}: slot {slot} of {self.jobs}, CPUs {cpus}, "
            f"{torch.get_num_threads()} torch threads"
        )


#: Where the CUDA MPS daemon and its clients meet, and its logs: CUDA's defaults, for both.
MPS_DIRECTORIES = {
    "CUDA_MPS_PIPE_DIRECTORY": "/tmp/nvidia-mps",
    "CUDA_MPS_LOG_DIRECTORY": "/tmp/nvidia-log",
}
MPS_SEARCHED = "/usr/local/nvidia/bin/nvidia-cuda-mps-control"  # where drivers in containers are
WITHOUT = "the runs share the GPU without it"


def mps_control() -> str | None:
    """``nvidia-cuda-mps-control``: ``MPS_CONTROL`` (tests), on PATH, or the driver's; or None."""
    if os.environ.get("MPS_CONTROL"):
        return shutil.which(os.environ["MPS_CONTROL"])
    found = shutil.which("nvidia-cuda-mps-control")
    return found or (MPS_SEARCHED if os.access(MPS_SEARCHED, os.X_OK) else None)


def mps_answers(control: str) -> bool:
    """Whether a daemon answers on the pipe directory (``get_server_list``)."""
    pipe = Path(os.environ["CUDA_MPS_PIPE_DIRECTORY"]) / "control"
    if not pipe.exists():
        return False
    try:
        asked = subprocess.run(
            [control], input="get_server_list\n", capture_output=True, text=True, timeout=5
        )
    except subprocess.TimeoutExpired:
        return False
    return asked.returncode == 0


def start_mps(wait_s: float = 5.0) -> tuple[str | None, str]:
    """Start the MPS daemon if it can: the control program if it did (else None), and a line."""
    for name, default in MPS_DIRECTORIES.items():
        os.environ.setdefault(name, default)
    pipes, logs = (os.environ[name] for name in MPS_DIRECTORIES)
    control = mps_control()
    if control is None:
        return None, f"MPS: not started (nvidia-cuda-mps-control not found): {WITHOUT}"
    if mps_answers(control):
        return None, f"MPS: a daemon already runs ({pipes}): the runs use it; it is left running"
    Path(pipes).mkdir(parents=True, exist_ok=True)
    Path(logs).mkdir(parents=True, exist_ok=True)
    started = subprocess.run([control, "-d"], capture_output=True, text=True, timeout=30)
    if started.returncode != 0:
        said = (started.stderr or started.stdout).strip().splitlines()
        why = said[0] if said else f"exit status {started.returncode}"
        return None, f"MPS: not started ({control} -d: {why}): {WITHOUT}"
    for _ in range(int(wait_s / 0.1)):
        if mps_answers(control):
            return control, f"MPS: started for this sweep ({pipes}, logs in {logs})"
        time.sleep(0.1)
    return None, f"MPS: not started (no answer within {wait_s:g} s, see {logs}): {WITHOUT}"


def stop_mps(control: str) -> str:
    """Ask the daemon to quit (its server ends once its clients have); one line."""
    subprocess.run([control], input="quit\n", capture_output=True, text=True, timeout=30)
    return "MPS: stopped the daemon this sweep started"


class MPSDaemon(Callback):
    """Hydra callback: the MPS daemon for the sweep, when it can, stopped when the sweep ends or
    this process exits (Hydra skips ``on_multirun_end`` when the sweep raises)."""

    def __init__(self) -> None:
        self.control: str | None = None

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        if config.hydra.sweeper.get("dry_run"):
            return  # nothing runs
        self.control, line = start_mps()
        print(line, flush=True)
        if self.control is not None:
            atexit.register(self.stop)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self.control is not None:
            control, self.control = self.control, None
            print(stop_mps(control), flush=True)


def set_threads(threads: int | str | None) -> None:
    """torch's CPU threads (``threads``: an integer; null, torch's default; ``auto``, one, or a
    sweep's launcher's): the networks are small, and a second thread mostly waits for a core."""
    import torch

    check_threads(threads)
    if threads == "auto":
        threads = None if in_multirun() else 1
    if threads is not None:
        torch.set_num_threads(threads)


def check_threads(threads: int | str | None) -> None:
    """``threads``: an integer >= 1, auto or null (``set_threads``)."""
    if threads in ("auto", None):
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError("threads", f"an integer >= 1, auto or null, got {threads!r}")
