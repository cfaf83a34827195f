"""The GPU speed check's code path on the CPU (emulated graphs, tiny sizes), and its arithmetic:
the presets' runs, the cost of a preset, the report's tables and targets."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

from sdexp.graphs import KeptPath, emulated_make_graphed_callables
from sdexp.speedcheck import (
    BASELINE_IMAGES_PER_S,
    QUICK,
    Parts,
    Setup,
    Sizes,
    fit_line,
    main,
    parity,
    preset_budgets,
    preset_hours,
)
from tests.conftest import ROOT, user_env

CPU = torch.device("cpu")


@pytest.mark.parametrize("num_blocks", [54, 27])
def test_a_preset_is_96_runs_worth_54_full_ones(num_blocks):
    """README "Cost": 27 - 4 cells x 4 seeds + 4 baseline runs; the budgets add up to 54."""
    budgets = preset_budgets(num_blocks)
    assert len(budgets) == 96
    assert sum(budgets) == pytest.approx(4 * (4.5 + 4.5 + 3.5 + 1))
    assert budgets.count(1.0) == 4 and min(budgets) == pytest.approx(0.1)


def test_cost_of_a_preset():
    assert fit_line({1.0: 3.0, 0.5: 2.0, 0.3: 1.6}) == pytest.approx((1.0, 2.0))
    one_second = preset_hours({1.0: 1.0, 0.5: 1.0}, validation_s=0.0, num_blocks=54)
    assert one_second == pytest.approx(96 * 164 * math.ceil(45_000 / 64) / 3600)
    # t(b) = b s: the budgets' sum; a validation pass per epoch and four for the tests
    linear = preset_hours({1.0: 1.0, 0.3: 0.3}, validation_s=2.0, num_blocks=54)
    expected = 164 * 704 * 54 + 96 * (164 + 4) * 2.0
    assert linear == pytest.approx(expected / 3600)


def test_a_failing_part_is_recorded_and_the_check_goes_on(tmp_path):
    results: dict = {}
    part = Parts(tmp_path / "single.json", deadline_s=60, results=results)
    done = []
    part("first", lambda: 1 / 0)
    part("second", lambda: done.append("second"))
    assert done == ["second"]
    (error,) = results["errors"]
    assert error["part"] == "first" and "ZeroDivisionError" in error["error"]
    assert json.loads((tmp_path / "single.json").read_text())["errors"][0]["part"] == "first"
    late = Parts(tmp_path / "late.json", deadline_s=0, results={})
    assert late("third", lambda: done.append("third")) is None and done == ["second"]
    assert late.results["skipped"] == ["third"]


@pytest.mark.slow
def test_parity_is_exact_with_the_stand_in():
    for dropped_blocks in ("decay", "frozen"):
        found = parity(CPU, QUICK, dropped_blocks, lock_step=True, fused=True)
        assert found["dropped_block_mismatch_count"] == 0
        assert found["loss_max_relative_difference"] == 0.0
        assert found["parameters_max_relative_difference"] == 0.0
        assert len(found["losses"]) == QUICK.parity_steps


def test_parity_catches_a_graph_that_touches_other_blocks():
    """A stand-in whose block graphs also move the BatchNorm statistics of every other block:
    the blocks a step dropped no longer end it untouched, nor as eager's."""
    statistics: list[torch.Tensor] = []

    def leaky(module, sample_args, num_warmup_iters=3):
        graphed = emulated_make_graphed_callables(module, sample_args, num_warmup_iters)
        if isinstance(module, KeptPath):
            statistics.extend(b for n, b in module.block.named_buffers() if "batches_tracked" in n)
            replay = graphed.forward

            def forward(y):
                for buffer in statistics:
                    buffer.add_(1)
                return replay(y)

            graphed.forward = forward
        return graphed

    found = parity(CPU, QUICK, "frozen", lock_step=True, fused=False, make_graphed=leaky)
    assert found["dropped_block_mismatch_count"] > 0
    assert any("num_batches_tracked changed" in m for m in found["dropped_block_mismatches"])


def measurements(folder: Path, eager_ms: float, graphed_ms: float, aggregate: dict) -> None:
    """single.json and concurrent_plain.json as the GPU check writes them, with made-up
    step times: eager_ms and graphed_ms at b = 1, proportional to 0.2 + 0.8 b."""
    sizes = Sizes(precisions=("32-true",))
    runs = []
    for depth in (110, 56):
        for b in sizes.budgets:
            scale = (0.2 + 0.8 * b) * depth / 110
            for graphed, ms in ((False, eager_ms), (True, graphed_ms)):
                setup = Setup(depth, 64, b, graphed, "32-true", graphed)
                step = ms * scale
                runs.append({"name": setup.name, "step_ms": step, "images_per_s": 64e3 / step})
    info = {"device": "made up", "torch": "0", "lightning": "0", "date": "today"}
    info["sizes"] = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(sizes).items()}
    single = {"info": info, "parity": [], "runs": runs, "skipped": []}
    single["validation"] = [
        {"depth": d, "precision": "32-true", "seconds": 0.5, "images": 5000} for d in (110, 56)
    ]
    (folder / "single.json").write_text(json.dumps(single))
    concurrent = {"label": "plain", "setup": "resnet110 graphed", "runs": []}
    concurrent["runs"] = [{"jobs": k, "images_per_s": v} for k, v in aggregate.items()]
    (folder / "concurrent_plain.json").write_text(json.dumps(concurrent))


def test_report_costs_and_targets(tmp_path):
    measurements(tmp_path, eager_ms=30.0, graphed_ms=5.0, aggregate={1: 13_000, 8: 39_000})
    summary = main(["report", "--out", str(tmp_path)])
    cost = summary["cost_gpu_hours"]
    eager, one = cost["eager fp32, one run at a time"], cost["graphed, one run"]
    validation = 96 * (164 + 4) * 0.5 / 3600  # a pass per epoch, two test passes of 10,000
    assert one["resnet110"] - validation == pytest.approx((eager["resnet110"] - validation) / 6)
    assert cost["graphed, 8 runs at once (plain)"]["resnet110"] == pytest.approx(
        one["resnet110"] / 3
    )
    assert one["four_presets"] == pytest.approx(2 * (one["resnet110"] + one["resnet56"]))
    targets = summary["targets"]
    assert targets["graphed run at b = 1 >= 5x eager fp32"] == {"value": 6.0, "met": True}
    ratio = 39_000 / BASELINE_IMAGES_PER_S
    assert targets["best aggregate >= 10x 2,169 img/s"] == {"value": ratio, "met": True}
    assert targets["resnet110 graphed step time falls with b"]["met"]
    text = (tmp_path / "speedcheck.md").read_text()
    assert "| 8            | 39,000" in text and "graphed, 8 runs at once (plain)" in text


def test_report_says_when_a_target_is_missed(tmp_path):
    measurements(tmp_path, eager_ms=30.0, graphed_ms=10.0, aggregate={1: 6_400, 2: 9_000})
    summary = main(["report", "--out", str(tmp_path)])
    assert not summary["targets"]["graphed run at b = 1 >= 5x eager fp32"]["met"]
    assert not summary["targets"]["best aggregate >= 10x 2,169 img/s"]["met"]
    assert (
        "- MISSED: graphed run at b = 1 >= 5x eager fp32 (measured: 3.00)"
        in (tmp_path / "speedcheck.md").read_text()
    )


@pytest.mark.slow
def test_the_gpu_check_runs_on_a_cpu(tmp_path):
    """scripts/gpu_check.sh's every step, with emulated graphs and tiny sizes (QUICK=1)."""
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        env=user_env(QUICK="1", WORK=str(tmp_path / "work")),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exit status" not in done.stdout, done.stdout[-5000:]
    files = {p.name for p in out.iterdir()}
    assert files == {"single.json", "concurrent_plain.json", "speedcheck.json", "speedcheck.md"}
    summary = json.loads((out / "speedcheck.json").read_text())
    single = summary["single"]
    assert not single["skipped"]
    assert all(p["dropped_block_mismatch_count"] == 0 for p in single["parity"])
    assert len(single["runs"]) == 2 * 2 + 2 + 2 + 2  # resnet14 x2 x2, resnet8 x2 x2, 2 variants
    assert [e["jobs"] for e in summary["concurrent"]["plain"]["runs"]] == [1, 2]
    assert all("images_per_s" in e for e in summary["concurrent"]["plain"]["runs"])
    assert "ok" in done.stdout.split("== 2.")[1].split("== 3.")[0]  # both launcher runs
    assert "slot 0 of 2" in done.stdout and "slot 1 of 2" in done.stdout
