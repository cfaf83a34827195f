"""Table 2 of one setup from its runs (``sdexp.analysis.runs``): the paper's layout, its numbers
beside ours.

A table holds one setup (``RunKey.setup``: everything that changes what a run computes, less
mode, budget and seed); setups that could be taken for one another name the keys they differ in.
Modes as rows (a row per set of a mode's options, where a setup ran several), budgets as
columns, the no-SD baseline at b = 1; mean ± sample std over seeds with n, failed and missing
runs counted, and the paper's value (``paper_table2.csv``) on the row below ours.
"""

from __future__ import annotations

import functools
from importlib import resources

import pandas as pd

from sdexp.analysis.hypothesis import name
from sdexp.analysis.per_budget import crossings, sign_changes
from sdexp.analysis.plots import Curve, Plot
from sdexp.analysis.runs import SETUP, STATUSES, TABLE_CELL, Runs
from sdexp.results import differences

BASELINE = "No SD (b=1)"  # mode none: every block survives
ROW_ORDER = ["sensemode", "uniform", "linear"]
REPORTS = {"best": "the best-validation checkpoint", "final": "the final model"}
PAPER_FILE = "paper_table2.csv"
TEXT = ["row", "source", "budget", "text"]  # a cell of the table as text (Table.cells)


@functools.cache
def paper_table() -> pd.DataFrame:
    """The paper's published values (``paper_table2.csv``): dataset, model, mode, budget, mean
    and std of the test error (%) over 4 runs; NaN where the paper prints "-". Read once and
    shared: callers derive new frames from it, never change it."""
    with resources.files("sdexp.analysis").joinpath(PAPER_FILE).open() as file:
        return pd.read_csv(file, comment="#")


def budget_key(budgets: pd.Series) -> pd.Series:
    """Budgets as join keys: 0.3 from a run's config and 0.3 from the paper's file are one."""
    return budgets.astype(float).round(6)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per cell: n finished runs, their mean and sample std, failed and missing, the paper's."""
    keys = [*SETUP, *TABLE_CELL]
    counts = pd.crosstab([runs[k] for k in keys], runs["status"])
    counts = counts.reindex(columns=STATUSES, fill_value=0)
    finished = runs[runs["status"] == "ok"].groupby(keys, dropna=False)["value"]
    summary = counts.join(finished.agg(n="count", mean="mean", std="std")).reset_index()
    summary["n"] = summary["n"].fillna(0).astype(int)
    per_setup = runs.groupby("setup")[["metric", "report", "num_blocks"]].first()
    return with_paper(summary.join(per_setup, on="setup"))


def with_paper(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``paper_mean`` and ``paper_std`` wherever the paper publishes the cell:
    a test error, of a mode's plain options."""
    paper = paper_table().rename(columns={"mean": "paper_mean", "std": "paper_std"})
    keys = ["dataset", "model", "mode", "_budget"]
    paper = paper.assign(_budget=budget_key(paper["budget"])).drop(columns="budget")
    merged = summary.assign(_budget=budget_key(summary["budget"])).merge(paper, on=keys, how="left")
    published = (merged["metric"] == "error") & (merged["variant"] == "")
    merged[["paper_mean", "paper_std"]] = merged[["paper_mean", "paper_std"]].where(published)
    return merged.drop(columns="_budget")


def setup_notes(runs: Runs) -> dict[str, str]:
    """For each setup that shares dataset, model, epochs and recipe with another: the keys in
    which it differs from the first of them."""
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
    shown = f"{mean:.{digits}f}"
    return shown if std is None or pd.isna(std) else f"{shown} ± {std:.{digits}f}"


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
    """The paper's cell as it prints it ('6.37 ± 0.12', "-"), with at least ``digits`` decimals."""
    if pd.isna(mean):
        return "-"
    return fmt(mean, std, max(digits, decimals(mean), decimals(std)))


class Table:
    """Table 2 for one setup, from its rows of ``summarize``."""

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
        same = (paper.dataset == self.dataset) & (paper.model == self.model)
        self.paper = paper[same & (self.metric == "error")]
        self.published = not self.paper.empty
        ours = summary.loc[summary["mode"] != "none", "budget"]
        theirs = self.paper.loc[self.paper["mode"] != "none", "budget"]
        self.budgets = sorted(set(ours) | set(theirs))
        baseline = (summary["mode"] == "none").any() or self.published
        self.columns = sorted({*self.budgets, 1.0}) if baseline else self.budgets  # no SD: b = 1
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
        return name(mode) + (f" ({variant})" if variant else "")

    def cells(self) -> pd.DataFrame:
        """Every cell as text (``TEXT``): ours, "-" where the sweep left the mode's budget out,
        the paper's; the no-SD baseline at b = 1."""
        s, p = self.summary, self.paper
        ours = s.assign(
            row=list(map(self.label, s["mode"], s["variant"])),
            source="ours",
            text=[cell_text(r, self.digits) for _, r in s.iterrows()],
        )
        dashes = [(self.label(m, v), b) for m, v in self.rows for x, b in self.left_out if x == m]
        left_out = pd.DataFrame([(row, "ours", b, "-") for row, b in dashes], columns=TEXT)
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
        """Mean and std by budget (index ``budgets``), ours or the paper's; NaN where none."""
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

    def known_means(self, source: str = "ours") -> pd.DataFrame:
        """SenseMode's and Uniform's means at the budgets where both are known."""
        sense, uniform = self.curve("sensemode", source), self.curve("uniform", source)
        both = pd.DataFrame({"sensemode": sense["mean"], "uniform": uniform["mean"]})
        return both.dropna()

    def crossing_points(self, source: str = "ours") -> list[float]:
        """Where SenseMode's and Uniform's mean curves cross (``crossings``); none from two
        budgets alone (a line through two points is no estimate of where they cross)."""
        known = self.known_means(source)
        if len(known) < 3:
            return []
        return crossings(list(known.index), list(known["sensemode"]), list(known["uniform"]))

    def crossing_note(self) -> str:
        """'SenseMode and Uniform cross: ours between b = 0.4 and 0.5' (no place in between)."""
        notes = []
        for source in ("ours", "paper") if self.published else ("ours",):
            known = self.known_means(source)
            budgets = list(known.index)
            changes = sign_changes(budgets, list(known["sensemode"] - known["uniform"]))
            where = ", ".join(
                f"between b = {budgets[i]:g} and {budgets[j]:g}" for i, j, _ in changes
            )
            notes.append(f"{source} {where or 'not on this grid'}")
        return "SenseMode and Uniform cross: " + "; ".join(notes)

    def plot(self) -> Plot:
        """The plot's plain data (``sdexp.analysis.plots``)."""

        def curve(mode: str, source: str = "ours", variant: str = "") -> Curve:
            found = self.curve(mode, source, variant)
            label = self.label(mode, variant)
            return Curve(mode, label, list(found["mean"]), list(found["std"]), variant)

        published = set(self.paper["mode"])
        ours = [curve(mode, variant=variant) for mode, variant in self.rows]
        paper = {mode: curve(mode, "paper") for mode, _ in self.rows if mode in published}
        budgets, cross = list(self.budgets), self.crossing_points()
        return Plot(self.title, self.metric, budgets, ours, paper, self.baseline(), cross)

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
    """One table per setup from ``summarize``'s rows, told apart where they could be confused."""
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
