"""Every run under some sweep directories, or in a ``runs.csv``: what ``sdexp-table`` counts and
compares, one row each (``COLUMNS``).

From a sweep directory: each ``results.json`` (status ok or failed; a test value that is not
finite makes a run failed), each planned cell of a ``sweep.json`` that wrote none (missing), and
the cells a sweep left out (the mode cannot run that budget: the paper's "-"); a finished run's
``predictions.csv`` gives its per-image values (``Runs.images``). A run found twice counts once;
an unreadable file is named and left out. ``runs.csv`` (``runs_csv``, ``read_runs_csv``) holds the
same rows, less the per-image values, so that tables and verdicts regenerate from it alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sdexp.analysis.images import per_image_values
from sdexp.predictions import UnreadablePredictions, read_predictions
from sdexp.provenance import code_label
from sdexp.results import (
    NOT_SETUP,
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
TABLE_CELL = ["mode", "variant", "budget"]  # a cell of a table: its runs differ in seed
STATUSES = ["ok", "failed", "missing"]  # a run found twice keeps the first of these it has
LEFT_OUT = "left out"  # runs.csv's status of a cell a sweep left out (the mode cannot run it)

#: What a runs.csv written before runs recorded their code lacks (``sdexp.provenance``).
CODE_COLUMNS = ("code", "run_commit", "run_dirty", "run_diff")
#: Where a run was found and what it cost: ``dir`` is its directory (relative to ``sweep``, the
#: sweep directory it was found under, in runs.csv), ``code`` what made it.
WHERE = ["sweep", "dir", "device", "device_hours", *CODE_COLUMNS]
COLUMNS = [*SETUP, "num_blocks", "metric", "report", *TABLE_CELL, "seed", "identity"]
COLUMNS += ["mode_options", "status", "value", "test_loss", "expected_depth", *WHERE]
#: runs.csv: one row per run; ``test`` is its reported test metric (``metric``: "error" in % or
#: "mse").
RUNS_COLUMNS = [*SETUP, "num_blocks", *TABLE_CELL, "seed", "status", "metric", "report", "test"]
RUNS_COLUMNS += ["test_loss", "expected_depth", "identity", *WHERE]


@dataclass
class Runs:
    """Every run found (``COLUMNS``), the setups' configs by setup hash, the files that could
    not be read, and per setup the (mode, budget) cells the sweeps left out."""

    frame: pd.DataFrame
    setups: dict[str, dict] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    left_out: dict[str, set[tuple[str, float]]] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)  # by identity (``images``)


def key_columns(key: RunKey) -> dict:
    """A run's key as the columns of its row."""
    columns = (*SETUP, "num_blocks", "mode", "budget", "seed", "identity")
    return {k: getattr(key, k) for k in columns}


def run_row(result: RunResult, report: str | None, run_dir: Path, sweep: Path) -> dict:
    """A finished or failed run (a test value that is not finite, in a results.json written
    before such runs failed, makes it a failed run)."""
    chosen = report or result.report
    value = result.test_best if chosen == "best" else result.test_final
    diverged = value is not None and not math.isfinite(value)
    code, copied = result.code, ("metric", "test_loss", "expected_depth", "device", "device_hours")
    return key_columns(result.key) | {
        **{k: getattr(result, k) for k in copied},
        "report": chosen,
        "mode_options": config_hash(result.config.get("mode", {})),
        "status": "failed" if diverged else result.status,
        "value": None if diverged else value,
        "sweep": str(sweep),
        "dir": str(run_dir),
        "code": code_label(code),
        **{f"run_{k}": code and getattr(code, k) for k in ("commit", "dirty", "diff")},
    }


def planned_row(cell: PlannedCell, run_dir: Path, sweep: Path) -> dict:
    """A planned cell that wrote no results.json."""
    row = dict.fromkeys(COLUMNS) | key_columns(cell.key) | {"status": "missing"}
    row |= {"metric": cell.metric, "report": cell.report, "sweep": str(sweep), "dir": str(run_dir)}
    return row | {"mode_options": config_hash(cell.mode_options)}


@dataclass
class Reader:
    """Collects rows from sweep directories: their results, then the planned cells without."""

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
            row = run_row(result, self.report, path.parent, root)
            self.add(row, result.config.get("mode", {}))
            self.runs.setups.setdefault(result.key.setup, without(result.config, NOT_SETUP))
            if result.status == "ok":
                self.predictions(path.parent, result, row["report"])

    def predictions(self, run_dir: Path, result: RunResult, report: str) -> None:
        """The run's per-image values of the model it reports, if it wrote predictions.csv."""
        try:
            frame = read_predictions(run_dir, result.key.identity, result.metric)
        except UnreadablePredictions as error:
            self.runs.unreadable.append(f"{error}; no per-image values for this run")
            return
        if frame is not None:
            rows = frame[frame["model"] == report].sort_values("index")
            self.runs.images[result.key.identity] = per_image_values(rows, result.metric)

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
                    self.add(planned_row(cell, run_dir, root), cell.mode_options)

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=COLUMNS)
        frame["variant"] = mode_variants(frame, self.options)
        return counted_once(frame)


def mode_variants(frame: pd.DataFrame, options: dict[str, dict]) -> pd.Series:
    """A label for each run's mode options, "" unless one setup ran a mode with several sets
    of options (then e.g. "p_min=0.1"): such runs are never merged."""
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
    """A run found twice counts once (finished before failed before missing), sorted by cell."""
    rank = frame["status"].map({status: i for i, status in enumerate(STATUSES)})
    frame = frame.assign(_rank=rank).sort_values("_rank", kind="stable")
    frame = frame.drop_duplicates("identity").drop(columns="_rank")
    return frame.sort_values([*SETUP, *TABLE_CELL, "seed"], kind="stable").reset_index(drop=True)


def collect(sources: list[str | Path], report: str | None = None) -> Runs:
    """One row per run: every results.json under the sweep directories of ``sources``, every
    cell a sweep planned that has none (missing: never started, or killed), and the rows of the
    ``runs.csv`` files among ``sources``."""
    reader = Reader(report)
    tables = []
    for source in map(Path, sources):
        if source.is_file():
            frame, left_out = read_runs_csv(source, report)
            tables.append(frame)
            for setup, cells in left_out.items():
                reader.runs.left_out.setdefault(setup, set()).update(cells)
            continue
        reader.results(source)
        reader.plans(source)
    frames = [f for f in (reader.frame(), *tables) if len(f)]
    reader.runs.frame = (
        counted_once(pd.concat(frames, ignore_index=True)) if frames else reader.frame()
    )
    return reader.runs


def runs_csv(runs: Runs) -> pd.DataFrame:
    """runs.csv's rows (``RUNS_COLUMNS``), then one of status ``left out`` per cell left out."""
    frame = runs.frame.rename(columns={"value": "test"})
    frame["dir"] = [relative(d, s) for d, s in zip(frame["dir"], frame["sweep"], strict=True)]
    setups = frame.drop_duplicates("setup").set_index("setup")
    left = [
        {
            **setups.loc[setup, SETUP[1:]].to_dict(),
            "setup": setup,
            "num_blocks": setups.loc[setup, "num_blocks"],
            "mode": mode,
            "variant": "",
            "budget": budget,
            "status": LEFT_OUT,
        }
        for setup, cells in runs.left_out.items()
        if setup in setups.index
        for mode, budget in sorted(cells)
    ]
    rows = pd.concat([frame, pd.DataFrame(left)], ignore_index=True).reindex(columns=RUNS_COLUMNS)
    return rows.astype({"seed": "Int64", "num_blocks": "Int64"})  # whole numbers beside blanks


def relative(run_dir: str, sweep: str) -> str:
    """A run's directory relative to its sweep's, as runs.csv holds it."""
    path = Path(run_dir)
    if path.is_absolute() and sweep and path.is_relative_to(Path(sweep).resolve()):
        return path.relative_to(Path(sweep).resolve()).as_posix()
    return run_dir


def read_runs_csv(
    path: Path, report: str | None = None
) -> tuple[pd.DataFrame, dict[str, set[tuple[str, float]]]]:
    """A runs.csv as rows of ``COLUMNS`` and the cells it says were left out; ValueError if it
    is not one, or holds no values of the ``report`` model."""
    try:
        frame = pd.read_csv(
            path, dtype=dict.fromkeys(["setup", "identity", "variant", "device"], str)
        )
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable ({error})") from error
    if missing := set(RUNS_COLUMNS) - {"num_blocks", *CODE_COLUMNS} - set(frame.columns):
        raise ValueError(f"{path}: not a runs.csv of sdexp-table (no {', '.join(sorted(missing))})")
    held = set(frame.loc[frame["status"] != LEFT_OUT, "report"].dropna())
    if report is not None and held - {report}:
        raise ValueError(
            f"--report {report}: {path} holds the {' and '.join(sorted(held))} model's test "
            f"metric, not the {report} one (that needs the runs' results.json)"
        )
    frame["variant"] = frame["variant"].fillna("")
    if "num_blocks" not in frame:  # written before runs.csv had it: L = E[depth] / b per setup
        ok = frame[frame["expected_depth"].notna() & (frame["budget"] > 0)]
        ratio = (ok["expected_depth"] / ok["budget"]).groupby(ok["setup"]).median()
        frame["num_blocks"] = frame["setup"].map(ratio.round().astype(int))
    left = frame["status"] == LEFT_OUT
    left_out: dict[str, set[tuple[str, float]]] = {}
    for row in frame[left].itertuples():
        left_out.setdefault(row.setup, set()).add((row.mode, row.budget))
    runs = frame[~left].rename(columns={"test": "value"}).astype({"seed": int})
    return runs.assign(mode_options=runs["variant"]).reindex(columns=COLUMNS), left_out
