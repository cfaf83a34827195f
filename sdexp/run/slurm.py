"""A run inside a SLURM job: whether it is one, and what preemption does to it.

SLURM preempts a job with SIGTERM and, after ``GraceTime``, SIGKILL, and requeues a job still
running then. A run stops on SIGTERM at once, so its job would end inside the grace time, never
requeued, and the sweep would wait for it forever: the run requeues its job itself where SLURM
is preempting it into a requeue (``requeue_if_preempted``). No Lightning at import.
"""

from __future__ import annotations

import os
import re
import subprocess

#: How long a ``scontrol`` call may take (the controller answers in milliseconds).
TIMEOUT_S = 20


def in_job() -> bool:
    """Whether this process is a task of a SLURM job step, as Lightning decides, silently."""
    interactive = os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive")
    return "SLURM_NTASKS" in os.environ and not interactive


def cluster_plugins() -> list:
    """The Trainer's cluster environment: in a SLURM job SLURM's, without auto-requeue."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if in_job() else []


def job_id() -> str | None:
    """The job's id as ``scontrol`` takes it (``<array job>_<task>`` in a job array)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def scontrol(*arguments: str) -> str:
    """``scontrol`` 's output; ``OSError`` or ``subprocess.SubprocessError`` if it fails."""
    command = ["scontrol", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=True)
    return done.stdout


def fields(text: str) -> dict[str, str]:
    """``Key=value`` pairs of ``scontrol show`` 's output."""
    return dict(re.findall(r"(\w+)=(\S*)", text))


def preempted(job: str) -> bool:
    """Whether SLURM is preempting ``job`` now into a requeue: a preemption time is set, the job
    still runs, may be requeued, and its partition's ``PreemptMode`` requeues."""
    shown = fields(scontrol("show", "job", job))
    if shown.get("PreemptTime", "None") in ("None", "Unknown", ""):
        return False
    if shown.get("JobState") != "RUNNING" or shown.get("Requeue") != "1":
        return False
    partition = fields(scontrol("show", "partition", shown.get("Partition", "")))
    return "REQUEUE" in partition.get("PreemptMode", "").upper()


def requeue_if_preempted() -> str | None:
    """Requeue this job if SLURM is preempting it; what happened, or None where there was
    nothing to do. Never raises: a run stopped by a signal must end."""
    job = job_id()
    if job is None:
        return None
    try:
        if not preempted(job):
            return None
        scontrol("requeue", job)
    except (OSError, subprocess.SubprocessError) as error:
        why = getattr(error, "stderr", None) or str(error)
        return f"job {job} was preempted, and could not be requeued ({' '.join(why.split())})"
    return f"job {job} was preempted: requeued, it resumes from its last checkpoint"
