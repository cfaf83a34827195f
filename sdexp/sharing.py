"""Several runs on one GPU: each job of a local sweep gets a slot, and its own CPUs.

A Stable ResNet step with small convolutions leaves most of a large GPU idle, so a sweep runs K
jobs at once on it (``hydra/launcher=gpu_shared``: Hydra's joblib launcher with K worker
processes, and optionally the CUDA MPS daemon, ``scripts/mps.sh``). K processes whose threads
roam over every core then contend for them: each job pins itself to 1/K of the CPUs this
process may use (its affinity) and sets torch's thread count to match.

The slot comes from the job's worker process: the first job a worker runs claims the lowest
free slot with an exclusive lock on ``<sweep dir>/.slots/<slot>.lock``, held for the worker's
life, so K workers hold K different slots however long their jobs take (``job.num % K`` would
give two running jobs the same CPUs as soon as jobs finish out of order). A worker that finds
no free slot (more workers than K) falls back to ``job.num % K``.

``PinThreads`` is a Hydra callback: Hydra calls ``on_job_start`` in the process that runs the
job, the joblib worker. Under SLURM the job's CPUs are already its own (``cpus_per_task``):
there it only sets torch's threads to them.

A run of its own takes the top-level ``threads`` option (``set_threads``): one torch thread
by default, which a sweep's jobs leave to their launcher.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)

_held: dict[str, tuple[int, Any]] = {}  # lock directory -> (slot, open lock file), per process


def claim_slot(directory: str | Path, slots: int) -> int | None:
    """The lowest slot in [0, slots) that no other live process holds, now held by this one
    until it exits (the same slot again on later calls); None if all are taken."""
    key = str(Path(directory).resolve())
    if key in _held:
        return _held[key][0]
    Path(directory).mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        lock = open(Path(directory) / f"{slot}.lock", "w")  # noqa: SIM115 - held on purpose
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        lock.write(str(os.getpid()))
        lock.flush()
        _held[key] = (slot, lock)
        return slot
    return None


def cpu_share(slot: int, slots: int, cpus: list[int]) -> list[int]:
    """Slot ``slot``'s contiguous share of ``cpus``: len(cpus) // slots of them (at least one;
    with more slots than CPUs, slots share them round-robin)."""
    cpus = sorted(cpus)
    if slots >= len(cpus):
        return [cpus[slot % len(cpus)]]
    size = len(cpus) // slots
    return cpus[slot * size : (slot + 1) * size]


def pin_threads(slot: int, slots: int) -> list[int]:
    """Pin this process to its share of the CPUs it may use, and torch's intra-op threads (and
    those of processes it starts, through OMP_NUM_THREADS) to as many; returns the CPUs."""
    import torch

    mine = cpu_share(slot, slots, list(os.sched_getaffinity(0)))
    os.sched_setaffinity(0, mine)
    torch.set_num_threads(len(mine))
    os.environ["OMP_NUM_THREADS"] = str(len(mine))
    return mine


class PinThreads(Callback):
    """Hydra callback (``hydra.callbacks``): pins every job to the CPUs of its slot of ``jobs``."""

    def __init__(self, jobs: int) -> None:
        if not isinstance(jobs, int) or jobs < 1:
            from sdexp.errors import ConfigError

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


def set_threads(threads: int | str | None) -> None:
    """torch's intra-op CPU threads for this job, from the top-level ``threads`` option: an
    integer sets them; null keeps torch's default (one per core); ``auto`` sets one for a run
    of its own and leaves a sweep's job (a Hydra multirun) what its launcher gave it: joblib
    its share of the cores (1 with 2 jobs on 2 cores), ``gpu_shared`` and SLURM the job's CPUs
    (``PinThreads``), the basic launcher torch's default.

    Why one: the networks here are small matrices or CIFAR images at batch 64, and on a
    machine that other jobs share, a second thread mostly waits for a busy core (README,
    Performance, has the measurements); on a GPU the CPU only launches kernels."""
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    check_threads(threads)
    if threads == "auto":
        in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        threads = None if in_sweep else 1
    if threads is not None:
        torch.set_num_threads(threads)


def check_threads(threads: int | str | None) -> None:
    """``threads``: an integer >= 1, auto or null (``set_threads``)."""
    if threads in ("auto", None):
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        from sdexp.errors import ConfigError

        raise ConfigError("threads", f"an integer >= 1, auto or null, got {threads!r}")
