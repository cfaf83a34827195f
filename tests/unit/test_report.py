"""The W&B Report (``sdexp.tracking.report``) reads of a run only what its result gives W&B
(``RunResult``: its summary and history row) and its run key; what real runs logged:
tests/e2e/test_dashboard.py."""

from __future__ import annotations

import dataclasses

from sdexp.results import RunKey, RunResult
from sdexp.tracking import report
from sdexp.tracking.report import build_report, runset_reads, specification


def test_the_report_reads_what_a_runs_result_gives_wandb():
    """Every key the report reads of a run's summary and of its result's history row is one that
    ``RunResult.summary`` and ``history_row`` give W&B (the other keys: the per-layer tables
    and Lightning's training curves), and its config keys are the run key's (``key.*``)."""
    key = RunKey("toy", "vanilla", "uniform", 0.5, 0, "toy", 1, True, 8, "1" * 16, "2" * 16)
    result = RunResult(key, {}, "ok", metric="mse", test_final=0.1, epoch_times_s=[1.0, 2.0])
    summary, row = result.summary(), result.history_row()
    assert set(report.SUMMARY.values()) <= set(summary)
    read: dict[str, set[str]] = {}
    for keys in runset_reads(specification(build_report("e", "p", "g", "mse"))).values():
        for key_ in keys:
            section, name = key_.split(":", 1)
            read.setdefault(section, set()).add(name)
    assert read["summary"] - set(summary) == {"layers/survival_table", "layers/sensitivity_table"}
    curves = {"trainer/global_step", "epoch", "train/loss", "val/mse"}  # Lightning's rows
    assert read["history"] - set(row) == curves and set(row) <= read["history"]
    assert read["config"] <= {f"key.{f.name}" for f in dataclasses.fields(RunKey)}
    assert RunResult(key, {}, "failed", reason="a reason").history_row() is None
