"""Table 2 from sweeps: ``sdexp-table SWEEP_DIR...`` (or ``python -m sdexp.table SWEEP_DIR...``).

Reads every ``results.json`` under the given directories (``sdexp.results``), and the cells each
sweep planned (``sweep.json``, written by the grid sweeper) to count the runs that never
finished. Runs are grouped by **setup** (``RunKey.setup``: everything that changes what a run
computes, less mode, budget and seed): a table holds one setup, and runs that differ in anything
else (a learning rate, a width) get tables of their own, with the keys that differ named. A run
found twice (the same identity) counts once; an unreadable ``results.json`` is named and counted
as missing. Per setup it writes

- ``table2.md`` and ``table2.csv``: the paper's layout (modes as rows, budgets as columns, the
  no-SD baseline in a b = 1 column), mean ± sample std over seeds with n, failed and missing
  runs counted in the cell, and the paper's value on the row below ours wherever it is published
  (``paper_table2.csv`` beside this module);
- ``summary.csv``: the same numbers, one row per (mode, budget), for further analysis;
- ``runs.csv``: one row per run (``RUNS_COLUMNS``), its directory relative to its sweep's;
- ``table2_<dataset>_<model>_<epochs>ep.png``: test error against budget per mode with error
  bars (the budget-performance trade-off, ``sdexp.table_plot``);
- ``verdict.md`` and ``verdict.csv``: whether the runs agree with the Budget Hypothesis (Sec. 5):
  the paired regime test (SenseMode against Uniform seed by seed, in the small and the large
  budget regime, ``--small``/``--large`` pre-register their budgets, ``--margin`` the
  equivalence margin), then per budget SenseMode against Uniform (and Linear) over seeds
  (``sdexp.verdict``); ``paired_<dataset>_<model>_<epochs>ep.png``: d_s(b) per seed
  (``sdexp.verdict_plot``);
- ``cost.md`` and ``cost.csv``: what the runs cost, in device-hours per table and device, summed
  from their results.json (``sdexp.cost``);

and prints the markdown, each table followed by its verdict. Every file names the command that
made it and the code's commit (``MadeBy``: a first line in markdown, columns in CSV, metadata
in PNG). The value of a run is its recipe's reported test metric (``report``: the
best-validation checkpoint's, or the final model's; ``--report`` chooses for all), and the table
says which. ``--wandb`` logs the tables, plots and verdicts to a W&B run in the sweep's group.

The bookkeeping is pandas': one row per run (``collect``), per cell counts and statistics over
seeds (``summarize``, with the paper's values merged in), the paper's layout by ``pivot_table``
(``Table.grid``) and markdown by ``DataFrame.to_markdown``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import NoReturn

import pandas as pd

from sdexp import __version__, cost
from sdexp.results import CELL as CELL_KEYS
from sdexp.results import (
    RESULTS_FILE,
    RunResult,
    UnreadableResult,
    config_hash,
    differences,
    read_result,
    without,
)
from sdexp.sweep import GRID_FILE
from sdexp.table_plot import save_plot
from sdexp.verdict import COLUMNS as VERDICT_COLUMNS
from sdexp.verdict import MARGIN, PAIRED_COLUMNS, Verdict, verdict
from sdexp.verdict_plot import save_paired_plot

SETUP = ["setup", "dataset", "model", "stable", "epochs", "recipe"]  # one table per setup
CELL = ["mode", "variant", "budget"]
STATUSES = ["ok", "failed", "missing"]  # a run found twice keeps the first of these it has
MODE_NAMES = {"sensemode": "SenseMode", "uniform": "Uniform", "linear": "Linear"}
BASELINE = "No SD (b=1)"  # mode none: every block survives
ROW_ORDER = ["sensemode", "uniform", "linear"]
REPORTS = {"best": "the best-validation checkpoint", "final": "the final model"}
PAPER_FILE = "paper_table2.csv"
TEXT = ["row", "source", "budget", "text"]  # a cell of the table as text (Table.cells)


# --- the paper's Table 2 -----------------------------------------------------------------------


@functools.cache
def paper_table() -> pd.DataFrame:
    """The paper's published values (``paper_table2.csv``): dataset, model, mode, budget, mean
    and std of the test error (%) over 4 runs; mean and std NaN where the paper prints "-".
    Read once and shared: callers derive new frames from it, never change it."""
    with resources.files("sdexp").joinpath(PAPER_FILE).open() as file:
        return pd.read_csv(file, comment="#")


def budget_key(budgets: pd.Series) -> pd.Series:
    """Budgets as join keys: 0.3 from a run's config and 0.3 from the paper's file are one."""
    return budgets.astype(float).round(6)


# --- reading -----------------------------------------------------------------------------------

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
]
#: runs.csv: one row per run; ``test`` is its reported test metric (``metric``: "error" in % or
#: "mse"), ``dir`` its directory relative to ``sweep``, the sweep directory it was found under.
RUNS_COLUMNS = [
    *SETUP,
    "mode",
    "variant",
    "budget",
    "seed",
    "status",
    "metric",
    "report",
    "test",
    "test_loss",
    "expected_depth",
    "identity",
    "sweep",
    "dir",
    "device",
    "device_hours",
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


def run_row(result: RunResult, report: str | None, run_dir: Path) -> dict:
    """A finished or failed run: its key, status and reported test metric."""
    key = result.key
    chosen = report or result.report
    return {
        **{k: getattr(key, k) for k in SETUP},
        "num_blocks": key.num_blocks,
        "metric": result.metric,
        "report": chosen,
        "mode": key.mode,
        "budget": key.budget,
        "seed": key.seed,
        "identity": key.identity,
        "mode_options": config_hash(result.config.get("mode", {})),
        "status": result.status,
        "value": result.test_best if chosen == "best" else result.test_final,
        "test_loss": result.test_loss,
        "expected_depth": result.expected_depth,
        "dir": str(run_dir),
        "device": result.device,
        "device_hours": result.device_hours,
    }


def grid_row(cell: dict, run_dir: Path) -> dict:
    """A planned cell that wrote no results.json."""
    row = {k: cell.get(k) for k in COLUMNS}
    row["mode_options"] = config_hash(cell.get("mode_options") or {})
    return {**row, "status": "missing", "value": None, "dir": str(run_dir)}


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
        for path in sorted(root.rglob(GRID_FILE)):
            try:
                planned = json.loads(path.read_text())
                cells = planned["cells"]
            except (ValueError, KeyError, TypeError) as error:
                self.runs.unreadable.append(f"{path}: unreadable ({type(error).__name__}: {error})")
                continue
            for cell in planned.get("left_out", []):
                if "setup" in cell:
                    where = self.runs.left_out.setdefault(cell["setup"], set())
                    where.add((cell["mode"], cell["budget"]))
            for cell in cells:
                run_dir = (path.parent / cell["dir"]).resolve()
                if run_dir not in self.run_dirs and "setup" in cell:
                    self.add(grid_row(cell, run_dir), cell.get("mode_options") or {})

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


# --- per cell ----------------------------------------------------------------------------------


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per setup, mode and budget: n finished runs, mean and sample std (ddof 1) of the test
    metric over their seeds, the failed and missing runs, and the paper's value if published."""
    keys = [*SETUP, *CELL]
    counts = pd.crosstab([runs[k] for k in keys], runs["status"])
    counts = counts.reindex(columns=STATUSES, fill_value=0)
    finished = runs[runs["status"] == "ok"].groupby(keys, dropna=False)["value"]
    summary = counts.join(finished.agg(n="count", mean="mean", std="std")).reset_index()
    summary["n"] = summary["n"].fillna(0).astype(int)
    per_setup = runs.groupby("setup")[["metric", "report", "num_blocks"]].first()
    return with_paper(summary.join(per_setup, on="setup"))


def with_paper(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with the paper's mean and std (``paper_mean``, ``paper_std``) wherever the
    paper publishes the cell: a test error, of a mode's plain options (no variant)."""
    paper = paper_table().rename(columns={"mean": "paper_mean", "std": "paper_std"})
    keys = ["dataset", "model", "mode", "_budget"]
    merged = summary.assign(_budget=budget_key(summary["budget"])).merge(
        paper.assign(_budget=budget_key(paper["budget"])).drop(columns="budget"),
        on=keys,
        how="left",
    )
    published = (merged["metric"] == "error") & (merged["variant"] == "")
    merged[["paper_mean", "paper_std"]] = merged[["paper_mean", "paper_std"]].where(published)
    return merged.drop(columns="_budget")


def setup_notes(runs: Runs) -> dict[str, str]:
    """For each setup that shares dataset, model, epochs and recipe with another: the keys in
    which it differs from the first of them (the reader must not take them for one setup)."""
    frame = runs.frame.drop_duplicates("setup")
    notes = {}
    for _, group in frame.groupby(["dataset", "model", "epochs", "recipe"], dropna=False):
        hashes = list(group["setup"])
        for other in hashes[1:]:
            first, this = runs.setups.get(hashes[0]), runs.setups.get(other)
            if first is not None and this is not None:
                notes[other] = f"differs from setup {hashes[0][:6]} in {differences(first, this)}"
                notes.setdefault(hashes[0], f"differs from setup {other[:6]}: see below")
    return notes


def fmt(mean: float, std: float | None, digits: int) -> str:
    if std is None or pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def cell_text(row: pd.Series, digits: int) -> str:
    """'7.1 ± 0.2 (n=4)', with failed and missing runs counted: '7.1 (n=1; 2 failed, 1 missing)'."""
    notes = [f"{row[s]} {s}" for s in ("failed", "missing") if row[s]]
    if not row["n"]:
        return ", ".join(notes)
    counts = f"n={row['n']}" + (f"; {', '.join(notes)}" if notes else "")
    return f"{fmt(row['mean'], row['std'], digits)} ({counts})"


def decimals(value: float) -> int:
    """The decimals a value was published with: 6.37 -> 2, 15.4 -> 1 (its shortest repr)."""
    return 0 if pd.isna(value) else len(repr(float(value)).partition(".")[2].rstrip("0"))


def published(mean: float, std: float, digits: int) -> str:
    """The paper's cell as it prints it, with at least ``digits`` decimals: '7.3 ± 0.2', the
    baseline's '6.37 ± 0.12', or its "-" (the mode cannot run that budget)."""
    if pd.isna(mean):
        return "-"
    return fmt(mean, std, max(digits, decimals(mean), decimals(std)))


def crossings(budgets: list[float], a: list[float], b: list[float]) -> list[float]:
    """Budgets where the curves a and b cross (linear interpolation between grid points)."""
    points = []
    pairs = [
        (x, u - v) for x, u, v in zip(budgets, a, b, strict=True) if pd.notna(u) and pd.notna(v)
    ]
    for (x0, d0), (x1, d1) in zip(pairs, pairs[1:], strict=False):
        if d0 == 0:
            points.append(x0)
        elif d0 * d1 < 0:
            points.append(x0 + (x1 - x0) * d0 / (d0 - d1))
    if pairs and pairs[-1][1] == 0:
        points.append(pairs[-1][0])
    return points


# --- the table ---------------------------------------------------------------------------------


class Table:
    """Table 2 for one setup (``SETUP``, from its rows of ``summarize``): a row per mode (and per
    variant of its options), a column per budget, the paper's values on the row under ours."""

    def __init__(
        self,
        summary: pd.DataFrame,
        note: str = "",
        suffix: str = "",
        left_out: set[tuple[str, float]] | None = None,
    ) -> None:
        self.summary, self.note, self.suffix = summary, note, suffix
        self.left_out = left_out or set()  # (mode, budget) the sweep did not run
        first = summary.iloc[0]
        self.setup, self.dataset, self.model = first.setup, first.dataset, first.model
        self.stable, self.epochs, self.recipe = first.stable, first.epochs, first.recipe
        self.metric, self.report = first.metric, first.report
        self.num_blocks = int(first.num_blocks)
        self.digits = 1 if self.metric == "error" else 3
        paper = paper_table()
        self.paper = paper[
            (paper.dataset == self.dataset) & (paper.model == self.model) & (self.metric == "error")
        ]
        self.published = not self.paper.empty
        ours = summary.loc[summary["mode"] != "none", "budget"]
        theirs = self.paper.loc[self.paper["mode"] != "none", "budget"]
        self.budgets = sorted(set(ours) | set(theirs))
        baseline = (summary["mode"] == "none").any() or self.published
        # the no-SD baseline in a column of its own, b = 1 (every block survives)
        self.columns = sorted({*self.budgets, 1.0}) if baseline else self.budgets
        modes = set(summary["mode"]) | set(self.paper["mode"])
        ordered = [m for m in ROW_ORDER if m in modes] + sorted(modes - {*ROW_ORDER, "none"})
        variants = summary.groupby("mode")["variant"].unique()
        self.rows = [(m, v) for m in ordered for v in variants.get(m, [""])]

    @property
    def title(self) -> str:
        what = "test error (%)" if self.metric == "error" else "test MSE"
        net = f"{'Stable ' if self.stable else ''}{self.model} (L = {self.num_blocks})"
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return (
            f"{self.dataset}, {net}, {epochs}, recipe {self.recipe}: {what} of "
            f"{REPORTS[self.report]}, mean ± std over seeds"
        )

    @property
    def plot_name(self) -> str:
        suffix = f"_{self.suffix}" if self.suffix else ""
        return f"table2_{self.dataset}_{self.model}_{self.epochs}ep{suffix}.png"

    def label(self, mode: str, variant: str = "") -> str:
        if mode == "none":
            return BASELINE
        return MODE_NAMES.get(mode, mode) + (f" ({variant})" if variant else "")

    def cells(self) -> pd.DataFrame:
        """Every cell as text (``TEXT``): ours; "-" where the sweep left the mode's budget out
        (sweep.json); the paper's ("-" where it prints one). The no-SD baseline sits in the b = 1
        column."""
        s, p = self.summary, self.paper
        ours = s.assign(
            row=list(map(self.label, s["mode"], s["variant"])),
            source="ours",
            text=[cell_text(r, self.digits) for _, r in s.iterrows()],
        )
        left_out = pd.DataFrame(
            [
                (self.label(mode, variant), "ours", budget, "-")
                for mode, variant in self.rows
                for skipped, budget in self.left_out
                if skipped == mode
            ],
            columns=TEXT,
        )
        paper = p.assign(
            row=p["mode"].map(self.label),
            source="paper",
            text=[published(m, sd, self.digits) for m, sd in zip(p["mean"], p["std"], strict=True)],
        )
        cells = pd.concat([f[TEXT] for f in (ours, left_out, paper) if len(f)], ignore_index=True)
        cells.loc[cells["row"] == BASELINE, "budget"] = 1.0
        return cells

    def grid(self) -> pd.DataFrame:
        """The paper's layout: a row of ours (and the paper's) per mode, then the baseline."""
        order = []
        for mode, variant in self.rows:
            order.append((self.label(mode, variant), "ours"))
            if not variant and mode in set(self.paper["mode"]):
                order.append((self.label(mode), "paper"))
        if (self.summary["mode"] == "none").any() or self.published:
            order += [(BASELINE, "ours")] + [(BASELINE, "paper")] * self.published
        wide = self.cells().pivot_table(
            index=["row", "source"], columns="budget", values="text", aggfunc="last"
        )
        wide = wide.reindex(index=pd.MultiIndex.from_tuples(order), columns=self.columns)
        wide = wide.fillna("").set_axis([f"b={b:g}" for b in self.columns], axis=1)
        return wide.rename_axis(["mode", ""]).reset_index()

    def curve(self, mode: str, source: str = "ours", variant: str = "") -> pd.DataFrame:
        """Mean and std by budget (index ``budgets``): ours over the finished seeds, or the
        paper's; NaN where there are none."""
        if source == "paper":
            rows = self.paper[self.paper["mode"] == mode]
        else:
            s = self.summary
            rows = s[(s["mode"] == mode) & (s["variant"] == variant) & (s["n"] > 0)]
        return rows.set_index("budget")[["mean", "std"]].reindex(self.budgets)

    def baseline(self) -> tuple[float, float] | None:
        """Our no-SD mean and std (0 for one seed), if a baseline run finished."""
        s = self.summary
        rows = s[(s["mode"] == "none") & (s["n"] > 0)]
        if rows.empty:
            return None
        std = rows.iloc[0]["std"]
        return float(rows.iloc[0]["mean"]), 0.0 if pd.isna(std) else float(std)

    def crossing_points(self, source: str = "ours") -> list[float]:
        """Where SenseMode's and Uniform's mean curves cross."""
        sense, uniform = self.curve("sensemode", source), self.curve("uniform", source)
        return crossings(self.budgets, list(sense["mean"]), list(uniform["mean"]))

    def crossing_note(self) -> str:
        notes = []
        for source in ("ours", "paper") if self.published else ("ours",):
            points = self.crossing_points(source)
            where = ", ".join(f"b ≈ {p:.2f}" for p in points) or "not on this grid"
            notes.append(f"{source} {where}")
        return "SenseMode and Uniform cross: " + "; ".join(notes)

    def counts(self) -> str:
        total = self.summary[STATUSES].sum()
        return f"Runs: {total.ok} finished, {total.failed} failed, {total.missing} missing."

    def markdown(self) -> str:
        heading = f"### {self.title}" + (f" (setup {self.setup[:6]})" if self.suffix else "")
        lines = [heading, ""]
        if self.note:
            lines += [f"This setup {self.note}.", ""]
        lines += [self.grid().to_markdown(index=False, disable_numparse=True), ""]
        lines.append(f"{self.counts()} {self.crossing_note()}.")
        if not self.published:
            lines.append("The paper's values for this setup are not published here.")
        return "\n".join(lines) + "\n"


def tables(runs: Runs, summary: pd.DataFrame) -> list[Table]:
    """One table per setup from ``summarize``'s rows; setups that could be taken for one
    another are told apart."""
    notes = setup_notes(runs)
    return [
        Table(
            part.reset_index(drop=True),
            notes.get(setup, ""),
            setup[:6] if setup in notes else "",
            runs.left_out.get(setup),
        )
        for setup, part in summary.groupby("setup", sort=False)
    ]


# --- writing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MadeBy:
    """What made the files ``sdexp-table`` writes: the command line and the code's commit."""

    command: str
    commit: str

    @property
    def line(self) -> str:
        """The first line of a markdown file."""
        return f"Made by `{self.command}` with sdexp {self.commit}."

    def stamp(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with the columns ``command`` and ``commit``, for a CSV file."""
        return frame.assign(command=self.command, commit=self.commit)


def made_by(argv: list[str]) -> MadeBy:
    """``sdexp-table ARGV`` as a shell line, and ``code_commit()``."""
    return MadeBy(shlex.join(["sdexp-table", *argv]), code_commit())


def code_commit() -> str:
    """'commit 1a2b3c4' (``git rev-parse --short HEAD``) when this code runs from a git checkout
    of sdexp, noting uncommitted changes to its ``sdexp/``; else 'version X' of the package."""
    package = Path(__file__).parent

    def git(*args: str) -> str:
        command = ["git", "-C", str(package), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    try:  # this file tracked: sdexp's checkout, not an install inside another repository
        git("ls-files", "--error-unmatch", Path(__file__).name)
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.CalledProcessError):
        return f"version {__version__}"
    return f"commit {commit}" + (" (with uncommitted changes to sdexp/)" if changed else "")


def write(runs: Runs, out: Path, made: MadeBy) -> tuple[list[Table], list[Path]]:
    """Write table2.md, table2.csv, summary.csv and one plot per setup into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs.frame)
    found = tables(runs, summary)
    text = "\n".join(t.markdown() for t in found)
    if runs.unreadable:
        text += "\nUnreadable files (counted as missing):\n" + "".join(
            f"- {line}\n" for line in runs.unreadable
        )
    (out / "table2.md").write_text(f"{made.line}\n\n{text}")
    wide = pd.concat([t.grid().assign(table=t.title) for t in found], ignore_index=True)
    made.stamp(wide).to_csv(out / "table2.csv", index=False)
    made.stamp(summary).to_csv(out / "summary.csv", index=False)
    plots = [save_plot(t, out / t.plot_name, made.line) for t in found]
    return found, plots


def sweep_and_dir(run_dir: str, sweep_dirs: list[Path]) -> tuple[str, str]:
    """The sweep directory (as given) a run directory lies under, and the path between them."""
    path = Path(run_dir).resolve()
    for given in sweep_dirs:
        if path.is_relative_to(given.resolve()):
            return str(given), path.relative_to(given.resolve()).as_posix()
    return "", str(path)


def write_runs(runs: Runs, sweep_dirs: list[Path], out: Path, made: MadeBy) -> None:
    """runs.csv: one row per run (``RUNS_COLUMNS``), finished, failed or missing."""
    frame = runs.frame.rename(columns={"value": "test"})
    where = [sweep_and_dir(d, sweep_dirs) for d in frame["dir"]]
    frame["sweep"], frame["dir"] = [w[0] for w in where], [w[1] for w in where]
    made.stamp(frame.reindex(columns=RUNS_COLUMNS)).to_csv(out / "runs.csv", index=False)


@dataclass(frozen=True)
class Regimes:
    """The paired test's options (``sdexp.verdict.paired``): the pre-registered budgets of each
    regime (None: the grid split at 0.5) and the equivalence margin (None: ``MARGIN`` for an
    error in %, no equivalence test for an MSE)."""

    small: list[float] | None = None
    large: list[float] | None = None
    margin: float | None = None

    def for_table(self, table: Table) -> dict:
        """``sdexp.verdict.verdict``'s keyword arguments for ``table``'s setup."""
        error = table.metric == "error"
        margin = self.margin if self.margin is not None else (MARGIN if error else None)
        return {
            "small": self.small,
            "large": self.large,
            "margin": margin,
            "unit": "pp" if error else "",
        }


def hypothesis_runs(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The runs one verdict compares, per SenseMode variant: the modes' plain options, or,
    where the setup ran SenseMode with several sets of options (``mode.batches=8`` beside the
    default, say), each set against the plain other modes, labelled by its options."""
    sense = runs["mode"] == "sensemode"
    labels = sorted(runs.loc[sense, "variant"].unique()) or [""]
    return [
        (label, runs[(~sense & (runs["variant"] == "")) | (sense & (runs["variant"] == label))])
        for label in labels
    ]


def write_verdicts(
    runs: Runs, found: list[Table], out: Path, made: MadeBy, options: Regimes | None = None
) -> tuple[list[tuple[Table, str, Verdict]], list[Path]]:
    """Per table (and SenseMode variant, ``hypothesis_runs``), the Budget Hypothesis verdict
    (``sdexp.verdict``, Sec. 5) from the setup's finished runs (mode, budget, seed, value):
    ``verdict.md`` (each under its table's title), ``verdict.csv`` (per setup, the paired
    regime contrasts, ``test`` = paired, then one row per budget and pair, ``test`` = welch)
    and the plot of d_s(b) per seed."""
    frame, options = runs.frame, options or Regimes()
    ok = frame[(frame.status == "ok") & frame["value"].notna()]
    verdicts, frames, plots = [], [], []
    for t in found:
        for label, chosen in hypothesis_runs(ok[ok.setup == t.setup]):
            result = verdict(chosen, **options.for_table(t))
            verdicts.append((t, label, result))
            title = t.title + (f" (SenseMode {label})" if label else "")
            labels = {"setup": t.setup, "table": title, "sensemode": label}
            if result.paired.differences["d"].notna().any():
                frames.append(result.paired.contrasts.assign(**labels, test="paired"))
                suffix = "_" + re.sub(r"\W+", "_", label).strip("_") if label else ""
                name = t.plot_name.replace("table2_", "paired_", 1).replace(".png", f"{suffix}.png")
                shown = title.replace("mean ± std over seeds", "SenseMode - Uniform by seed")
                plots.append(save_paired_plot(result.paired, shown, out / name, made.line))
            if len(result.comparisons):
                frames.append(result.comparisons.assign(**labels, test="welch"))
    text = "\n".join(
        f"### {t.title}{f' (SenseMode {label})' if label else ''}\n\n{v.markdown()}"
        for t, label, v in verdicts
    )
    (out / "verdict.md").write_text(f"{made.line}\n\n{text}")
    columns = ["setup", "table", "sensemode", "test"]
    columns += list(dict.fromkeys([*PAIRED_COLUMNS, *VERDICT_COLUMNS]))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    table = table.reindex(columns=columns).astype({"n": "Int64", "n_a": "Int64", "n_b": "Int64"})
    made.stamp(table).to_csv(out / "verdict.csv", index=False)
    return verdicts, plots


def write_cost(runs: Runs, found: list[Table], out: Path, made: MadeBy) -> str:
    """``cost.md`` and ``cost.csv``: the runs' device-hours per table and device (``sdexp.cost``);
    returns the markdown."""
    titles = {
        t.setup: f"{t.dataset}, {t.model}, {t.epochs} epoch{'' if t.epochs == 1 else 's'}, "
        f"recipe {t.recipe}" + (f" (setup {t.setup[:6]})" if t.suffix else "")
        for t in found
    }
    spent = cost.cost(runs.frame, titles)
    made.stamp(spent).to_csv(out / "cost.csv", index=False)
    text = cost.markdown(spent)
    (out / "cost.md").write_text(f"{made.line}\n\n{text}")
    return text


def log_to_wandb(
    out: Path, found: list[Table], plots: list[Path], group: str | None, project: str
) -> None:
    """The tables, plots and verdicts as one W&B run (job_type aggregate) in the sweep's group."""
    import wandb

    from sdexp.loggers import with_fallback

    def start(mode: str):
        return wandb.init(
            project=project,
            group=group,
            job_type="aggregate",
            name="table2",
            mode=mode,
            dir=str(out),
            settings=wandb.Settings(silent=True),
        )

    run = with_fallback(start)  # offline without credentials or server, like training
    if run is None:
        return
    summary = pd.read_csv(out / "summary.csv")
    run.log(
        {
            "table2/summary": wandb.Table(dataframe=summary),
            **{f"table2/{t.dataset}_{t.model}": wandb.Table(dataframe=t.grid()) for t in found},
            **{f"table2/plot_{p.stem}": wandb.Image(str(p)) for p in plots},
            "verdict/comparisons": wandb.Table(dataframe=pd.read_csv(out / "verdict.csv")),
        }
    )
    run.summary["verdict/markdown"] = (out / "verdict.md").read_text()
    folder = Path(run.dir).parent
    run.finish()
    shown = (
        f"offline to {folder} (upload: wandb sync {shlex.quote(str(folder))})"
        if run.offline
        else run.url
    )
    print(f"W&B: logged the tables, plots and verdicts {shown}")


def sweep_group(sweep_dirs: list[Path]) -> str | None:
    """The W&B group the sweep's jobs logged to (run.group in its multirun.yaml), if one."""
    from omegaconf import OmegaConf

    groups = {
        OmegaConf.select(OmegaConf.load(p), "run.group")
        for d in sweep_dirs
        for p in [d / "multirun.yaml"]
        if p.exists()
    }
    return groups.pop() if len(groups) == 1 else None


# --- the command -------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse, with a bad option said in one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def budget_arg(text: str) -> float:
    """A budget for --small/--large: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a budget is a number in (0, 1], got {text!r}")
    return value


def margin_arg(text: str) -> float:
    """--margin: a positive number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"the margin is a positive number, got {text!r}")
    return value


def arguments() -> argparse.ArgumentParser:
    parser = Parser(prog="sdexp-table", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR")
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write (default: the one SWEEP_DIR, or outputs/tables with several)",
    )
    parser.add_argument(
        "--report",
        choices=sorted(REPORTS),
        help="the test metric to show: of the best-validation checkpoint or of the final model "
        "(default: what each run's recipe reports)",
    )
    parser.add_argument(
        "--small",
        nargs="+",
        type=budget_arg,
        metavar="B",
        help="the paired test's small-budget regime, pre-registered (with --large; default: "
        "the grid's budgets below 0.5)",
    )
    parser.add_argument(
        "--large",
        nargs="+",
        type=budget_arg,
        metavar="B",
        help="the paired test's large-budget regime (default: the grid's budgets from 0.5)",
    )
    parser.add_argument(
        "--margin",
        type=margin_arg,
        help=f"the smallest effect of interest of the equivalence test, in the metric's units "
        f"(default: {MARGIN:g} percentage points for a test error; none for an MSE)",
    )
    parser.add_argument("--wandb", action="store_true", help="also log tables and plots to W&B")
    parser.add_argument("--project", default="sdexp", help="W&B project (default: sdexp)")
    return parser


def regime_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Regimes:
    """--small, --large and --margin, checked: both regimes or neither, small below large."""
    if (args.small is None) != (args.large is None):
        parser.error(
            "--small and --large: pre-register both regimes' budgets, or neither "
            "(the grid split at b = 0.5)"
        )
    if args.small is not None and max(args.small) >= min(args.large):
        parser.error(
            f"--small and --large: every small budget must lie below every large one, got "
            f"--small {' '.join(f'{b:g}' for b in args.small)} "
            f"--large {' '.join(f'{b:g}' for b in args.large)}"
        )
    return Regimes(args.small, args.large, args.margin)


def unpaired(runs: Runs, options: Regimes) -> str:
    """An error line if a pre-registered budget has no SenseMode and Uniform runs in any setup."""
    frame = runs.frame[runs.frame.status == "ok"]  # SenseMode in any variant
    both = frame.groupby(["setup", budget_key(frame["budget"])])["mode"].agg(set)
    grid = sorted({b for (_, b), modes in both.items() if {"sensemode", "uniform"} <= modes})
    ran = ", ".join(f"{b:g}" for b in grid) or "no budget"
    for option, budgets in (("--small", options.small), ("--large", options.large)):
        for b in budgets or []:
            if round(b, 6) not in grid:
                return (
                    f"error: {option}: no finished SenseMode and Uniform runs at b = {b:g} "
                    f"(both ran at {ran})"
                )
    return ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = arguments()
    args = parser.parse_args(argv)
    options = regime_options(parser, args)
    for d in args.sweep_dirs:
        if not d.is_dir():
            parser.error(f"{d} is not a directory")
    runs = collect(args.sweep_dirs, args.report)
    for line in runs.unreadable:
        print(f"warning: {line}; counted as missing", file=sys.stderr)
    if runs.frame.empty:
        print(
            f"error: no {RESULTS_FILE} or {GRID_FILE} under {', '.join(map(str, args.sweep_dirs))}",
            file=sys.stderr,
        )
        return 2
    if error := unpaired(runs, options):
        print(error, file=sys.stderr)
        return 2
    out = args.out or (args.sweep_dirs[0] if len(args.sweep_dirs) == 1 else Path("outputs/tables"))
    made = made_by(argv)
    found, plots = write(runs, out, made)
    write_runs(runs, args.sweep_dirs, out, made)
    verdicts, paired_plots = write_verdicts(runs, found, out, made, options)
    for table in found:
        print(table.markdown())
        for _, label, result in (v for v in verdicts if v[0] is table):
            print(f"{f'SenseMode {label}: ' if label else ''}{result.markdown()}")
    print(write_cost(runs, found, out, made))
    print(
        f"Wrote {out / 'table2.md'}, table2.csv, summary.csv, runs.csv, verdict.md, verdict.csv, "
        f"cost.md, cost.csv, {len(plots)} table plot(s) and {len(paired_plots)} paired plot(s) "
        f"to {out}"
    )
    if args.wandb:
        log_to_wandb(out, found, plots, sweep_group(args.sweep_dirs), args.project)
    return 0


if __name__ == "__main__":
    sys.exit(main())
