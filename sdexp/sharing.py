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
