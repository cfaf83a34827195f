"""What a run reads of its SLURM job (``sdexp.run.slurm``), on ``scontrol``'s output as SLURM 22.05
prints it; tests/cluster/ preempts real jobs."""

from __future__ import annotations

import pytest

from sdexp.run.slurm import fields, in_job, job_id

#: ``scontrol show job`` of a job in its preemption grace time (abridged, SLURM 22.05.8).
PREEMPTED = """JobId=20 JobName=job4.sh
   UserId=root(0) GroupId=root(0) MCS_label=N/A
   Priority=4294901750 Nice=0 Account=(null) QOS=(null)
   JobState=RUNNING Reason=None Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0
   RunTime=00:00:04 TimeLimit=365-00:00:00 TimeMin=N/A
   SubmitTime=2026-12-07T16:29:29 EligibleTime=2026-12-07T16:29:29
   PreemptEligibleTime=2026-12-07T16:29:29 PreemptTime=2026-12-07T16:29:33
   Partition=debug AllocNode:Sid=vm:3154
"""


def test_scontrol_fields_are_read_as_key_value_pairs():
    shown = fields(PREEMPTED)
    assert shown["JobState"] == "RUNNING" and shown["PreemptTime"] == "2026-12-07T16:29:33"
    assert shown["Partition"] == "debug" and shown["Requeue"] == "1"


def test_a_task_of_a_job_array_is_named_as_scontrol_takes_it(monkeypatch):
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    assert job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "21")
    assert job_id() == "21"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "20")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert job_id() == "20_1"


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, False),
        ({"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "submitit"}, True),
        ({"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "interactive"}, False),
        ({"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "bash"}, False),
    ],
)
def test_a_task_of_a_job_step_is_in_a_job(monkeypatch, environment, expected):
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert in_job() is expected
