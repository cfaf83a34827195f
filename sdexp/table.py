"""Table 2 from sweeps: ``sdexp-table SWEEP_DIR...`` (or ``python -m sdexp.table SWEEP_DIR...``).

Reads every ``results.json`` under the given directories (``sdexp.results``), and the cells each
sweep planned (``sweep.json``, written by the grid sweeper) to count the runs that never
finished. Runs are grouped by **setup** (``RunKey.setup``: everything that changes what a run
computes, less mode, budget and seed): a table holds one setup, and runs that differ in anything
else (a learning rate, a width) get tables of their own, with the keys that differ named. A run
found twice (the same identity) counts once; an unreadable ``results.json`` is named and counted
as missing. Per setup it writes

- ``table2.md`` and ``table2.csv``: the paper's layout (modes as rows, budgets as columns, the
  no-SD baseline), mean ± sample std over seeds with n, failed and missing runs counted in the
  cell, and the paper's value on the row below ours wherever it is published
  (``paper_table2.csv`` beside this module);
- ``summary.csv``: the same numbers, one row per (mode, budget), for further analysis;
- ``table2_<dataset>_<model>_<epochs>ep.png``: test error against budget per mode with error
  bars (the budget-performance trade-off, ``sdexp.table_plot``);
- ``verdict.md`` and ``verdict.csv``: whether the runs agree with the Budget Hypothesis (Sec. 5),
  per budget SenseMode against Uniform (and Linear) over seeds (``sdexp.verdict``);
- ``cost.md`` and ``cost.csv``: what the runs cost, in device-hours per table and device, summed
  from their results.json (``sdexp.cost``);

and prints the markdown, each table followed by its verdict. The value of a run is its
recipe's reported test metric (``report``: the best-validation checkpoint's, or the final
model's; ``--report`` chooses for all), and the table says which. ``--wandb`` logs the tables,
plots and verdicts to a W&B run in the sweep's group.

The bookkeeping is pandas': one row per run (``collect``), per cell counts and statistics over
seeds (``summarize``, with the paper's values merged in), the paper's layout by ``pivot_table``
(``Table.grid``) and markdown by ``DataFrame.to_markdown``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from sdexp import cost
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
from sdexp.verdict import Verdict, verdict

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


def published(mean: float, std: float, digits: int) -> str:
    """The paper's cell: '7.3 ± 0.2', or its "-" (the mode cannot run that budget)."""
    return "-" if pd.isna(mean) else fmt(mean, std, digits)


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
        self.columns = self.budgets or [1.0]  # the baseline alone: one column, b = 1
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

    def digits_for(self, mode: str) -> int:
        """Decimals shown: 1 for an error in %, 3 for an MSE; one more for the baseline."""
        return self.digits + (mode == "none")

    def cells(self) -> pd.DataFrame:
        """Every cell as text (``TEXT``): ours; "-" where the sweep left the mode's budget out
        (sweep.json); the paper's ("-" where it prints one). The baseline (b = 1) sits under
        the first budget."""
        s, p = self.summary, self.paper
        ours = s.assign(
            row=list(map(self.label, s["mode"], s["variant"])),
            source="ours",
            text=[cell_text(r, self.digits_for(r["mode"])) for _, r in s.iterrows()],
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
            text=list(map(published, p["mean"], p["std"], p["mode"].map(self.digits_for))),
        )
        cells = pd.concat([f[TEXT] for f in (ours, left_out, paper) if len(f)], ignore_index=True)
        cells.loc[cells["row"] == BASELINE, "budget"] = self.columns[0]
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


def write(runs: Runs, out: Path) -> tuple[list[Table], list[Path]]:
    """Write table2.md, table2.csv, summary.csv and one plot per setup into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs.frame)
    found = tables(runs, summary)
    text = "\n".join(t.markdown() for t in found)
    if runs.unreadable:
        text += "\nUnreadable files (counted as missing):\n" + "".join(
            f"- {line}\n" for line in runs.unreadable
        )
    (out / "table2.md").write_text(text)
    wide = pd.concat([t.grid().assign(table=t.title) for t in found], ignore_index=True)
    wide.to_csv(out / "table2.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    plots = [save_plot(t, out / t.plot_name) for t in found]
    return found, plots


def write_verdicts(runs: Runs, found: list[Table], out: Path) -> list[Verdict]:
    """Per table, the Budget Hypothesis verdict (``sdexp.verdict``, Sec. 5) from the setup's
    finished runs (mode, budget, seed, value; the modes' plain options only): ``verdict.md``
    (each under its table's title) and ``verdict.csv`` (one row per setup, budget and pair)."""
    frame = runs.frame
    ok = frame[(frame.status == "ok") & (frame["variant"] == "") & frame["value"].notna()]
    verdicts, frames = [], []
    for t in found:
        verdicts.append(verdict(ok[ok.setup == t.setup]))
        if len(verdicts[-1].comparisons):
            frames.append(verdicts[-1].comparisons.assign(setup=t.setup, table=t.title))
    pairs = zip(found, verdicts, strict=True)
    (out / "verdict.md").write_text("\n".join(f"### {t.title}\n\n{v.markdown()}" for t, v in pairs))
    columns = ["setup", "table", *VERDICT_COLUMNS]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    table.reindex(columns=columns).to_csv(out / "verdict.csv", index=False)
    return verdicts


def write_cost(runs: Runs, found: list[Table], out: Path) -> str:
    """``cost.md`` and ``cost.csv``: the runs' device-hours per table and device (``sdexp.cost``);
    returns the markdown."""
    titles = {
        t.setup: f"{t.dataset}, {t.model}, {t.epochs} epoch{'' if t.epochs == 1 else 's'}, "
        f"recipe {t.recipe}" + (f" (setup {t.setup[:6]})" if t.suffix else "")
        for t in found
    }
    spent = cost.cost(runs.frame, titles)
    spent.to_csv(out / "cost.csv", index=False)
    text = cost.markdown(spent)
    (out / "cost.md").write_text(text)
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
    shown = f"offline to {folder} (upload: wandb sync {folder})" if run.offline else run.url
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


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdexp-table", description=__doc__.splitlines()[0])
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
    parser.add_argument("--wandb", action="store_true", help="also log tables and plots to W&B")
    parser.add_argument("--project", default="sdexp", help="W&B project (default: sdexp)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = arguments()
    args = parser.parse_args(argv)
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
    out = args.out or (args.sweep_dirs[0] if len(args.sweep_dirs) == 1 else Path("outputs/tables"))
    found, plots = write(runs, out)
    verdicts = write_verdicts(runs, found, out)
    for table, result in zip(found, verdicts, strict=True):
        print(f"{table.markdown()}\n{result.markdown()}")
    print(write_cost(runs, found, out))
    print(
        f"Wrote {out / 'table2.md'}, table2.csv, summary.csv, verdict.md, verdict.csv, "
        f"cost.md, cost.csv and {len(plots)} plot(s) to {out}"
    )
    if args.wandb:
        log_to_wandb(out, found, plots, sweep_group(args.sweep_dirs), args.project)
    return 0


if __name__ == "__main__":
    sys.exit(main())
