"""A sweep's jobs on SLURM (``hydra/launcher=slurm*``): hydra-submitit-launcher's, extended.

hydra-submitit-launcher stops at the first job that ended without a result (``scancel``, a node
failure, out of memory) and prints no summary. ``SlurmJobs`` checks the jobs' request against the
partition's nodes first, waits for every job (a requeued one too: ``sdexp.run.slurm``) and returns
what each ended as (``JobEnded`` with SLURM's state where it has no result); on a stop it cancels
its jobs and waits until they have ended, so that none runs on into the next sweep's.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from sdexp.errors import ConfigError
from sdexp.run.failures import JobEnded

#: How long a stopped sweep waits for its cancelled jobs to end (SLURM's KillWait: 30 s default).
CANCEL_WAIT_S = 120


def sinfo(partition: str | None) -> list[dict[str, Any]]:
    """The nodes of ``partition`` (None: the default one): CPUs, memory (MB) and gres of each."""
    command = ["sinfo", "--noheader", "--Node", "--format", "%P|%c|%m|%G"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    rows = [line.split("|") for line in done.stdout.splitlines()]
    return [
        {"cpus": int(cpus), "mem_mb": int(memory.rstrip("+")), "gres": gres_counts(gres)}
        for name, cpus, memory, gres in rows
        if (partition is None and name.endswith("*")) or name.rstrip("*") == partition
    ]


def gres_counts(text: str) -> dict[str, int]:
    """``gpu:1,shard:4`` (or ``gpu:a100:2(S:0-1)``) -> ``{"gpu": 1, "shard": 4}``."""
    counts: dict[str, int] = {}
    for item in filter(None, text.replace("(null)", "").split(",")):
        name, *rest = item.split("(")[0].split(":")
        count = rest[-1] if rest and rest[-1].isdigit() else "1"
        counts[name] = counts.get(name, 0) + int(count)
    return counts


def request_problem(params: dict, nodes: list[dict]) -> ConfigError | None:
    """Why no node of ``nodes`` can run a job asking ``params`` (the launcher's options)."""
    partition = params.get("partition") or "the default partition"
    if not nodes:
        return ConfigError("hydra.launcher.partition", f"SLURM has no partition {partition}")
    tasks = params.get("tasks_per_node") or 1
    wanted = [
        ("cpus_per_task", (params.get("cpus_per_task") or 1) * tasks, "cpus", "CPUs"),
        ("mem_gb", (params.get("mem_gb") or 0) * 1024, "mem_mb", "MB of memory"),
    ]
    for option, asked, have, what in wanted:
        most = max(node[have] for node in nodes)
        if asked > most:
            return ConfigError(
                f"hydra.launcher.{option}",
                f"a job asks for {asked} {what}, but the nodes of {partition} have at most "
                f"{most} (sinfo): lower it, choose another partition (hydra.launcher.partition), "
                "or on a cluster without GPUs use hydra/launcher=slurm_cpu",
            )
    gres = {"gpu": params.get("gpus_per_node") or 0} | gres_counts(params.get("gres") or "")
    for name, asked in gres.items():
        most = max(node["gres"].get(name, 0) for node in nodes)
        if asked > most:
            option = "gpus_per_node" if name == "gpu" and params.get("gpus_per_node") else "gres"
            return ConfigError(
                f"hydra.launcher.{option}",
                f"a job asks for {asked} {name} per node, but the nodes of {partition} have "
                f"{most or 'none'} (sinfo): on a cluster without GPUs use "
                "hydra/launcher=slurm_cpu",
            )
    return None


class SlurmJobs(submitit_launcher.SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher, waiting for every job. Each job runs this
    object (submitit pickles it), as hydra-submitit-launcher's jobs run its launcher."""

    def check_request(self) -> None:
        """ConfigError if no node of the partition can run a job as configured."""
        try:
            nodes = sinfo(self.params.get("partition"))
        except (OSError, subprocess.SubprocessError) as error:
            why = getattr(error, "stderr", None) or str(error)
            raise ConfigError(
                "hydra/launcher",
                f"SLURM does not answer here (sinfo: {' '.join(why.split())}): run the sweep on "
                "a machine of the cluster, or choose another launcher",
            ) from None
        if (problem := request_problem(self.params, nodes)) is not None:
            raise problem

    def executor(self):
        """submitit's executor with the launcher's options, as hydra-submitit-launcher makes it."""
        import submitit

        folder, timeouts = self.params["submitit_folder"], self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(
            folder=folder, cluster=self._EXECUTOR, **{f"{self._EXECUTOR}_max_num_timeout": timeouts}
        )
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        options = {
            key if key in shared else f"{self._EXECUTOR}_{key}": value
            for key, value in self.params.items()
            if key not in ("submitit_folder", "max_num_timeout")
        }
        executor.update_parameters(**options)
        return executor

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Submit the jobs as one job array; return what each ended as, in their order."""
        self.check_request()
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        state = Singleton.get_state()
        arguments = [
            (list(overrides), "hydra.sweep.dir", number, f"job_id_for_{number}", state)
            for number, overrides in enumerate(job_overrides, start=initial_job_idx)
        ]
        try:
            jobs = self.executor().map_array(self, *zip(*arguments, strict=True))
        except subprocess.CalledProcessError as error:
            output = error.output.decode() if isinstance(error.output, bytes) else error.output
            said = " ".join((output or str(error)).split())
            raise ConfigError("hydra/launcher", f"sbatch refused the jobs: {said}") from None
        array = jobs[0].job_id.split("_")[0]
        print(f"Submitted {len(jobs)} jobs: SLURM job array {array}", flush=True)
        try:
            for job in jobs:
                job.wait()
        except BaseException:  # the sweep is stopped: its jobs too
            cancel(jobs)
            raise
        return [outcome(job) for job in jobs]


def outcome(job) -> JobReturn:
    """What ``job`` ended as: its ``JobReturn``, or a failed one holding ``JobEnded``."""
    try:
        return job.results()[0]
    except Exception:  # noqa: BLE001 - submitit's errors for a job without a result
        return JobReturn(
            status=JobStatus.FAILED,
            _return_value=JobEnded(job.job_id, job.state, str(job.paths.stderr)),
        )


def cancel(jobs: list) -> None:
    """Cancel the jobs that have not ended, and wait until SLURM no longer lists them
    (``CANCEL_WAIT_S`` at most; a second Ctrl-C stops waiting); say so in one line."""
    ids = [job.job_id for job in jobs if not job.done()]
    if not ids:
        return
    subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
    deadline = time.monotonic() + CANCEL_WAIT_S
    with contextlib.suppress(KeyboardInterrupt):
        while (ids := listed(ids)) and time.monotonic() < deadline:
            time.sleep(1)
    ended = f"; still ending: {' '.join(ids)}" if ids else ": all have ended"
    print(f"Cancelled the sweep's unfinished SLURM jobs (scancel){ended}", flush=True)


def listed(ids: list[str]) -> list[str]:
    """The jobs of ``ids`` that SLURM still lists as pending, running or completing."""
    command = ["squeue", "--noheader", "--format", "%i", "--jobs", ",".join(ids)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return [job for job in done.stdout.split() if job in ids]
