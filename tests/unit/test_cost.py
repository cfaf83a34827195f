"""What a sweep cost, from its runs' results.json (``sdexp.analysis.cost``, shown by
``sdexp-table``): on fabricated results, with the times, devices and shares a real run records."""

from __future__ import annotations

import pytest

from sdexp.analysis.cost import UNKNOWN, cost
from sdexp.analysis.runs import collect
from sdexp.results import RunResult


def test_a_result_says_what_it_cost():
    result = RunResult.__new__(RunResult)
    result.train_time_s, result.device_share = 7200.0, 0.125
    assert result.device_hours == pytest.approx(0.25)
    result.train_time_s = None  # a run that never started training
    assert result.device_hours is None


def test_the_cost_sums_the_runs_times_their_share(cost_results):
    frame = collect([cost_results]).frame
    found = cost(frame, {s: s[:6] for s in frame.setup.unique()}).set_index("device")
    h200 = found.loc["NVIDIA H200"]
    assert h200.runs == 8
    assert h200.device_hours == pytest.approx((7 * 2.0 + 1.0) / 8)
    assert h200.failed_hours == pytest.approx(1.0 / 8)
    assert found.loc["NVIDIA A100"].device_hours == pytest.approx(1.5)
    assert found.loc[UNKNOWN].device_hours == pytest.approx(0.5)  # share 1: the default
    assert found.loc["NVIDIA A100"].setup == found.loc[UNKNOWN].setup != h200.setup
