"""A run inside a SLURM job: whether it is one, and what preemption does to it.

SLURM preempts a job (``PreemptMode=REQUEUE``) by sending SIGTERM to every process of the job
and, after the partition's ``GraceTime``, SIGKILL; a job still running then is requeued. A run
stops on SIGTERM at once, with its last checkpoint (``sdexp.run.failures.stop_on_signals``), and its
job would end inside the grace time: SLURM then counts it COMPLETED or FAILED and does not
requeue it, and the sweep waits for a result that never comes. So a run stopped by SIGTERM
asks SLURM whether its job is being preempted and, where the partition requeues preempted
jobs, requeues it itself (``requeue_if_preempted``), as SLURM would have after the grace time:
the job starts again and the run resumes from ``checkpoints/last.ckpt``. A SIGTERM of
``scancel`` or of the time limit is not a preemption: those jobs end.

This is the one requeue on SIGTERM. submitit requeues on its own signal (USR2, sent
``signal_delay_s`` before the time limit); Lightning's SLURM auto-requeue (USR1) is off
(``cluster_environment``).

Lightning's own SLURM detection warns on every run of a machine with ``srun`` on its PATH (a
cluster's login node, this project's CI) that ``srun`` "is available but not used": a run
chooses its cluster environment here (``in_job``), and that warning is off
(``sdexp.run.console.IGNORED_WARNINGS``).

No Lightning at import: the command line loads this module.
"""

from __future__ import annotations

import os
import re
import subprocess

#: How long a ``scontrol`` call may take (the controller answers in milliseconds).
SCONTROL_TIMEOUT_S = 20


def in_job() -> bool:
    """Whether this process is a task of a SLURM job step (``srun``, or submitit's batch
    script), as Lightning's ``SLURMEnvironment.detect`` decides, without its warning: a job's
    interactive shell (job name ``bash`` or ``interactive``) is not one."""
    interactive = os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive")
    return "SLURM_NTASKS" in os.environ and not interactive


def cluster_plugins() -> list:
    """The Trainer's cluster environment inside a SLURM job: SLURM's, with Lightning's
    auto-requeue off (``requeue_if_preempted`` and submitit requeue); elsewhere none (Lightning's
    own choice)."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if in_job() else []


def job_id() -> str | None:
    """The job's id as ``scontrol`` takes it: ``<array job>_<task>`` for a task of a job
    array (what submitit submits), else the job's own."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def scontrol(*arguments: str) -> str:
    """``scontrol`` 's output; ``OSError`` or ``subprocess.SubprocessError`` if it fails."""
    done = subprocess.run(
        ["scontrol", *arguments],
        capture_output=True,
        text=True,
        timeout=SCONTROL_TIMEOUT_S,
        check=True,
    )
    return done.stdout


def fields(text: str) -> dict[str, str]:
    """``Key=value`` pairs of ``scontrol show`` 's output."""
    return dict(re.findall(r"(\w+)=(\S*)", text))


def preempted(job: str) -> bool:
    """Whether SLURM is preempting ``job`` now into a requeue: a preemption time is set, the job
    still runs (in its grace time), it may be requeued, and its partition's ``PreemptMode``
    requeues (not CANCEL or SUSPEND)."""
    shown = fields(scontrol("show", "job", job))
    if shown.get("PreemptTime", "None") in ("None", "Unknown", ""):
        return False
    if shown.get("JobState") != "RUNNING" or shown.get("Requeue") != "1":
        return False
    partition = fields(scontrol("show", "partition", shown.get("Partition", "")))
    return "REQUEUE" in partition.get("PreemptMode", "").upper()


def requeue_if_preempted() -> str | None:
    """Requeue this job if SLURM is preempting it (``preempted``); return what happened, for
    the run's last line, or None where there was nothing to do (not a SLURM job, not a
    preemption). Never raises: a run stopped by a signal must end."""
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
