"""What a sweep cost, from its runs' results.json (``sdexp.cost``, shown by ``sdexp-table``): on
fabricated results, with the times, devices and shares a real run records."""

from __future__ import annotations

import json

import pytest

from sdexp.cost import UNKNOWN, cost
from sdexp.results import CELL, RunKey, RunResult, config_hash, without, write_result
from sdexp.runs import collect
from tests.conftest import run_table, table_rows


def fabricate(root, seed: int, status="ok", hours=1.0, device="NVIDIA H200", share=1.0, lr=0.1):
    """A run's results.json: ``hours`` of training time on ``device``, holding ``share`` of it."""
    config = {"optimizer": {"lr": lr}, "mode": "uniform", "budget": 0.5, "seed": seed}
    key = RunKey(
        dataset="cifar10",
        model="resnet110",
        mode="uniform",
        budget=0.5,
        seed=seed,
        recipe="reference",
        epochs=164,
        stable=True,
        num_blocks=54,
        identity=config_hash(config),
        setup=config_hash(without(config, CELL)),
    )
    result = RunResult(key, config, status, test_final=7.0, train_time_s=3600 * hours)
    result.device, result.device_share = device, share
    write_result(root / f"lr={lr},seed={seed}", result)


@pytest.fixture
def sweep(tmp_path):
    """Eight runs that shared an H200 (an eighth each), one of them failed after half its time;
    another setup's two runs on an A100, one of an earlier version that recorded no device."""
    root = tmp_path / "sweep"
    for seed in range(7):
        fabricate(root, seed, hours=2.0, share=1 / 8)
    fabricate(root, 7, status="failed", hours=1.0, share=1 / 8)
    fabricate(root, 0, hours=1.5, device="NVIDIA A100", lr=0.05)
    fabricate(root, 1, hours=0.5, device=None, lr=0.05)
    data = json.loads((root / "lr=0.05,seed=1" / "results.json").read_text())
    del data["device"], data["device_share"]  # as written before these fields existed
    (root / "lr=0.05,seed=1" / "results.json").write_text(json.dumps(data))
    return root


def test_a_result_says_what_it_cost():
    result = RunResult.__new__(RunResult)
    result.train_time_s, result.device_share = 7200.0, 0.125
    assert result.device_hours == pytest.approx(0.25)
    result.train_time_s = None  # a run that never started training
    assert result.device_hours is None


def test_the_cost_sums_the_runs_times_their_share(sweep):
    frame = collect([sweep]).frame
    found = cost(frame, {s: s[:6] for s in frame.setup.unique()}).set_index("device")
    h200 = found.loc["NVIDIA H200"]
    assert h200.runs == 8
    assert h200.device_hours == pytest.approx((7 * 2.0 + 1.0) / 8)
    assert h200.failed_hours == pytest.approx(1.0 / 8)
    assert found.loc["NVIDIA A100"].device_hours == pytest.approx(1.5)
    assert found.loc[UNKNOWN].device_hours == pytest.approx(0.5)  # share 1: the default
    assert found.loc["NVIDIA A100"].setup == found.loc[UNKNOWN].setup != h200.setup


@pytest.mark.slow
def test_the_table_shows_the_cost(sweep):
    done = run_table(str(sweep))
    assert done.returncode == 0, done.stderr
    rows = {row[1]: row for row in table_rows(done.stdout.split("### Cost")[1])}
    assert rows["NVIDIA H200"][2:] == ["8", "1.88", "0.125"]
    assert rows["NVIDIA H200"][0].startswith("cifar10, resnet110, 164 epochs, recipe reference")
    assert rows[UNKNOWN][2:] == ["1", "0.5", "0"]
    assert "times its device_share" in done.stdout
    made, text = (sweep / "cost.md").read_text().split("\n\n", 1)
    assert made.startswith("Made by `sdexp-table ") and text in done.stdout
    assert (sweep / "cost.csv").read_text().count("\n") == 1 + 3
