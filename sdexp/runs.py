"""Every run under some sweep directories, one row each: what ``sdexp-table`` counts and compares.

The rows come from each ``results.json`` (``sdexp.results.RunResult``: status ok or failed) and
from each sweep's plan (``sweep.json``, ``sdexp.results.Plan``): a planned cell that wrote no
results.json is a row of status missing (never started, or killed), and a cell the sweep left
out marks its (mode, budget) as one the mode cannot run (the paper's "-"). A run found twice
(the same identity) counts once; an unreadable ``results.json`` or ``sweep.json`` (not of the
contract: a field missing or of another type, ``sdexp.results.RunResult.from_dict``) is named
and left out, and its runs count as missing where a plan names them. A run that says ok with a
test value that is not finite is a failed run. Each row names the code that made its run
(``code``, and ``run_commit``, ``run_dirty``, ``run_diff``: ``sdexp.provenance``). The rows are a
pandas frame (``COLUMNS``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sdexp.provenance import code_label
from sdexp.results import CELL as CELL_KEYS
from sdexp.results import (
    PLAN_FILE,
    RESULTS_FILE,
    PlannedCell,
    RunKey,
    RunResult,
    UnreadablePlan,
    UnreadableResult,
    config_hash,
    read_plan,
    read_result,
    without,
)

SETUP = ["setup", "dataset", "model", "stable", "epochs", "recipe"]  # one table per setup
CELL = ["mode", "variant", "budget"]
STATUSES = ["ok", "failed", "missing"]  # a run found twice keeps the first of these it has

COLUMNS = [
    *SETUP,
    "num_blocks",
    "metric",
    "report",
    *CELL,
    "seed",
    "identity",
    "mode_options",
    "status",
    "value",
    "test_loss",
    "expected_depth",
    "dir",
    "device",
    "device_hours",
    "code",  # the code that made the run (``sdexp.provenance.code_label``)
    "run_commit",
    "run_dirty",
    "run_diff",
]


@dataclass
class Runs:
    """Every run found: one row each (``COLUMNS``), the setups' configs (less mode, budget and
    seed) by setup hash, the results.json files that could not be read, and per setup the
    (mode, budget) cells the sweeps left out (the mode cannot run that budget)."""

    frame: pd.DataFrame
    setups: dict[str, dict] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    left_out: dict[str, set[tuple[str, float]]] = field(default_factory=dict)


def key_columns(key: RunKey) -> dict:
    """A run's key as the columns of its row."""
    return {
        k: getattr(key, k) for k in (*SETUP, "num_blocks", "mode", "budget", "seed", "identity")
    }


def run_row(result: RunResult, report: str | None, run_dir: Path) -> dict:
    """A finished or failed run: its key, status and reported test metric (a value that is not
    finite, in a results.json written before such runs failed, makes it a failed run)."""
    chosen = report or result.report
    value = result.test_best if chosen == "best" else result.test_final
    diverged = value is not None and not math.isfinite(value)
    code = result.code
    return key_columns(result.key) | {
        "metric": result.metric,
        "report": chosen,
        "mode_options": config_hash(result.config.get("mode", {})),
        "status": "failed" if diverged else result.status,
        "value": None if diverged else value,
        "test_loss": result.test_loss,
        "expected_depth": result.expected_depth,
        "dir": str(run_dir),
        "device": result.device,
        "device_hours": result.device_hours,
        "code": code_label(code),
        "run_commit": code and code.commit,
        "run_dirty": code and code.dirty,
        "run_diff": code and code.diff,
    }


def planned_row(cell: PlannedCell, run_dir: Path) -> dict:
    """A planned cell that wrote no results.json."""
    return (
        dict.fromkeys(COLUMNS)
        | key_columns(cell.key)
        | {
            "metric": cell.metric,
            "report": cell.report,
            "mode_options": config_hash(cell.mode_options),
            "status": "missing",
            "dir": str(run_dir),
        }
    )


@dataclass
class Reader:
    """Collects rows from sweep directories: their results first, then the cells they planned
    that have no results (missing)."""

    report: str | None = None  # "best" or "final" for every run; None: each recipe's
    rows: list[dict] = field(default_factory=list)
    run_dirs: set[Path] = field(default_factory=set)
    options: dict[str, dict] = field(default_factory=dict)  # mode options by their hash
    runs: Runs = field(default_factory=lambda: Runs(pd.DataFrame(columns=COLUMNS)))

    def add(self, row: dict, mode_options: dict) -> None:
        self.rows.append(row)
        self.run_dirs.add(Path(row["dir"]).resolve())
        self.options.setdefault(row["mode_options"], mode_options)

    def results(self, root: Path) -> None:
        for path in sorted(root.rglob(RESULTS_FILE)):
            try:
                result = read_result(path.parent)
            except UnreadableResult as error:  # counted as missing where a sweep planned it
                self.runs.unreadable.append(str(error))
                continue
            self.add(run_row(result, self.report, path.parent), result.config.get("mode", {}))
            self.runs.setups.setdefault(result.key.setup, without(result.config, CELL_KEYS))

    def plans(self, root: Path) -> None:
        for path in sorted(root.rglob(PLAN_FILE)):
            try:
                plan = read_plan(path)
            except UnreadablePlan as error:
                self.runs.unreadable.append(str(error))
                continue
            for left in plan.left_out:
                self.runs.left_out.setdefault(left.setup, set()).add((left.mode, left.budget))
            for cell in plan.cells:
                run_dir = (path.parent / cell.dir).resolve()
                if run_dir not in self.run_dirs:
                    self.add(planned_row(cell, run_dir), cell.mode_options)

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=COLUMNS)
        frame["variant"] = mode_variants(frame, self.options)
        return counted_once(frame)


def mode_variants(frame: pd.DataFrame, options: dict[str, dict]) -> pd.Series:
    """A label for each run's mode options, "" unless one setup ran a mode with several sets
    of options (then e.g. "p_min=0.1"): such runs are rows of their own, never merged."""
    labels = pd.Series("", index=frame.index)
    for _, group in frame.groupby(["setup", "mode"], dropna=False):
        hashes = group["mode_options"].dropna().unique()
        if len(hashes) < 2:
            continue
        flat = {h: options.get(h, {}) for h in hashes}
        keys = {
            k for h in hashes for k in flat[h] if len({str(flat[o].get(k)) for o in hashes}) > 1
        }
        for h in hashes:
            label = ", ".join(f"{k}={flat[h].get(k)}" for k in sorted(keys) if k != "_target_")
            labels[group.index[group["mode_options"] == h]] = label
    return labels


def counted_once(frame: pd.DataFrame) -> pd.DataFrame:
    """A run found twice (the same identity, e.g. in two sweeps) counts once: a finished copy
    before a failed one, a failed one before a missing one. Sorted by setup and cell."""
    rank = frame["status"].map({status: i for i, status in enumerate(STATUSES)})
    frame = frame.assign(_rank=rank).sort_values("_rank", kind="stable")
    frame = frame.drop_duplicates("identity").drop(columns="_rank")
    return frame.sort_values([*SETUP, *CELL, "seed"], kind="stable").reset_index(drop=True)


def collect(sweep_dirs: list[str | Path], report: str | None = None) -> Runs:
    """One row per run: every results.json under ``sweep_dirs`` (status ok or failed), and every
    cell a sweep planned that has none (status missing: never started, or killed)."""
    reader = Reader(report)
    for root in map(Path, sweep_dirs):
        reader.results(root)
        reader.plans(root)
    reader.runs.frame = reader.frame()
    return reader.runs
