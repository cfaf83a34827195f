"""The cluster layer: sweeps on a real SLURM cluster (``hydra/launcher=slurm_cpu`` and friends).

Every test here submits real jobs to the cluster whose ``sinfo`` answers on this machine (CI
starts one with ``scripts/slurm_cluster.sh up``: one node, a ``high`` partition that preempts
``debug`` after 10 s of grace, a GPU gres on /dev/null with shards); without one they are
skipped, saying how to start it. They run one after another (one pytest-xdist group): they
preempt and cancel jobs, and the node has room for few at a time."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def cluster_problem() -> str | None:
    """Why no SLURM cluster can take the tests here, or None."""
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo not found)"
    for command in (["sinfo", "-h", "-o", "%P %a"], ["sacct", "-n", "-X", "-S", "now"]):
        try:
            subprocess.run(command, capture_output=True, timeout=15, check=True)
        except (OSError, subprocess.SubprocessError) as error:
            return f"{' '.join(command[:1])} does not answer ({type(error).__name__})"
    partitions = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True)
    if not {"debug*", "high"} <= set(partitions.stdout.split()):
        return "the cluster lacks the partitions debug (default) and high (preempting debug)"
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the group marker
def pytest_collection_modifyitems(config, items) -> None:
    """Mark this layer's tests ``cluster`` and ``slow``, one xdist group; skip them where no
    cluster answers."""
    problem = cluster_problem() if any("tests/cluster" in str(i.path) for i in items) else None
    skip = pytest.mark.skip(
        reason=f"{problem}: start a single-node cluster with scripts/slurm_cluster.sh up "
        "(as root, on Debian 12)"
    )
    for item in items:
        if "tests/cluster" not in str(item.path):
            continue
        item.add_marker(pytest.mark.cluster)
        item.add_marker(pytest.mark.slow)
        item.add_marker(pytest.mark.xdist_group("slurm"))
        if problem:
            item.add_marker(skip)
