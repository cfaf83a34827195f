"""The suite's own promise (docs/development.md, Tests): under README's test command (``pytest``,
whose addopts ask ``-n auto --dist loadgroup``) the tests of an xdist group run on one worker.
The cluster layer needs it (its tests preempt, requeue and cancel jobs on a node with room for
few), and the readers of the session's smoke sweep share the worker that builds it.

pytest-xdist schedules a group by the ``@group`` suffix it gives the node ids on the workers;
pytest 9 ignores that suffix (pytest-xdist issue #1386: the groups are silently dropped), which is
why pyproject.toml keeps pytest below 9. This test reads the ids of its own session."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("suite")
def test_the_tests_of_a_group_are_scheduled_as_one(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("checks pytest-xdist's --dist loadgroup: run it with README's pytest")
    assert request.node.nodeid.endswith("@suite"), request.node.nodeid
    ids = [item.nodeid for item in request.session.items]
    cluster = [i for i in ids if i.startswith("tests/cluster/")]  # marked by its conftest
    assert all(i.endswith("@slurm") for i in cluster), cluster
    readers = [i for i in ids if "test_a_sweep_counts_its_jobs_and_sums_up" in i]
    assert all(i.endswith("@smoke") for i in readers), readers
