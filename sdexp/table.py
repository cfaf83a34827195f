"""Table 2 from sweeps: ``python scripts/aggregate.py SWEEP_DIR...`` (or ``sdexp-table``).

Reads every ``results.json`` under the given directories (``sdexp.results``), and the cells each
sweep planned (``sweep.json``, written by the grid sweeper) to count the runs that never
finished. Runs are grouped by **setup** (``RunKey.setup``: everything that changes what a run
computes, less mode, budget and seed): a table holds one setup, and runs that differ in anything
else (a learning rate, a width) get tables of their own, with the keys that differ named. A run
found twice (the same identity) counts once; an unreadable ``results.json`` is named and counted
as missing. Per setup it writes

- ``table2.md`` and ``table2.csv``: the paper's layout (modes as rows, budgets as columns, the
  no-SD baseline), mean ± sample std over seeds with n, failed and missing runs counted in the
  cell, and the paper's value on the row below ours wherever it is published;
- ``summary.csv``: the same numbers, one row per (mode, budget), for further analysis;
- ``table2_<dataset>_<model>.png``: test error against budget per mode with error bars (the
  budget-performance trade-off), the baseline as a band, where SenseMode and Uniform cross;
- ``verdict.md`` and ``verdict.csv``: whether the runs agree with the Budget Hypothesis (Sec. 5),
  per budget SenseMode against Uniform (and Linear) over seeds (``sdexp.verdict``);

and prints the markdown, each table followed by its verdict. The value of a run is its
recipe's reported test metric (``report``: the best-validation checkpoint's, or the final
model's; ``--report`` chooses for all), and the table says which. ``--wandb`` logs the tables,
plots and verdicts to a W&B run in the sweep's group.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sdexp.results import (
    CELL as CELL_KEYS,
)
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
from sdexp.verdict import COLUMNS as VERDICT_COLUMNS
from sdexp.verdict import Verdict, verdict

SETUP = ["setup", "dataset", "model", "stable", "epochs", "recipe"]  # one table per setup
CELL = ["mode", "variant", "budget"]
MODE_NAMES = {"sensemode": "SenseMode", "uniform": "Uniform", "linear": "Linear", "none": "No SD"}
ROW_ORDER = ["sensemode", "uniform", "linear"]
REPORTS = {"best": "the best-validation checkpoint", "final": "the final model"}

# Table 2 of the paper (CIFAR-10, Stable ResNet110, test error %, mean and std over 4 runs).
# The CIFAR-100 half and the ResNet56 appendix are not in the text we have.
PAPER = {
    ("cifar10", "resnet110"): {
        "sensemode": [15.4, 9.3, 7.0, 7.3, 7.3, 6.9, 7.3, 6.6, 6.2],
        "sensemode_std": [0.4, 0.5, 0.3, 0.4, 0.2, 0.1, 0.3, 0.2, 0.2],
        "uniform": [17.2, 10.3, 7.7, 7.4, 6.8, 6.3, 5.9, 5.7, 5.7],
        "uniform_std": [0.3, 0.4, 0.2, 0.3, 0.1, 0.2, 0.1, 0.1, 0.1],
        "linear": [None] * 4 + [9.1, 7.5, 6.4, 6.1, 6.0],
        "linear_std": [None] * 4 + [0.1, 0.2, 0.2, 0.2, 0.2],
        "none": 6.37,
        "none_std": 0.12,
    }
}
PAPER_BUDGETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def paper_value(dataset: str, model: str, mode: str, budget: float) -> tuple[float, float] | None:
    table = PAPER.get((dataset, model))
    if table is None:
        return None
    if mode == "none":
        return table["none"], table["none_std"]
    for i, b in enumerate(PAPER_BUDGETS):
        if math.isclose(b, budget) and table[mode][i] is not None:
            return table[mode][i], table[f"{mode}_std"][i]
    return None


# --- reading ---------------------------------------------------------------------------------

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
]


@dataclass
class Runs:
    """Every run found: one row each (``COLUMNS``), the setups' configs (less mode, budget and
    seed) by setup hash, and the results.json files that could not be read."""

    frame: pd.DataFrame
    setups: dict[str, dict] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    left_out: dict[str, set[tuple[str, float]]] = field(default_factory=dict)  # by setup


def run_row(result: RunResult, report: str | None, run_dir: Path) -> dict:
    key = result.key
    chosen = report or result.report
    value = result.test_best if chosen == "best" else result.test_final
    return {
        **{k: getattr(key, k) for k in SETUP if k != "setup"},
        "setup": key.setup,
        "num_blocks": key.num_blocks,
        "metric": result.metric,
        "report": chosen,
        "mode": key.mode,
        "budget": key.budget,
        "seed": key.seed,
        "identity": key.identity,
        "mode_options": config_hash(result.config.get("mode", {})),
        "status": result.status,
        "value": value,
        "dir": str(run_dir),
    }


def grid_row(cell: dict, run_dir: Path) -> dict:
    """A planned cell that wrote no results.json."""
    row = {k: cell.get(k) for k in COLUMNS}
    row["mode_options"] = config_hash(cell.get("mode_options") or {})
    return {**row, "status": "missing", "value": None, "dir": str(run_dir)}


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


def collect(sweep_dirs: list[str | Path], report: str | None = None) -> Runs:
    """One row per run: every results.json under ``sweep_dirs`` (status ok or failed), and every
    cell a sweep planned that has none (status missing: never started, or killed)."""
    rows, found, setups, options, unreadable, left_out = [], set(), {}, {}, [], {}
    for root in map(Path, sweep_dirs):
        for path in sorted(root.rglob(RESULTS_FILE)):
            try:
                result = read_result(path.parent)
            except UnreadableResult as error:  # counted as missing where a sweep planned it
                unreadable.append(str(error))
                continue
            found.add(path.parent.resolve())
            rows.append(run_row(result, report, path.parent))
            setups.setdefault(result.key.setup, without(result.config, CELL_KEYS))
            options[rows[-1]["mode_options"]] = result.config.get("mode", {})
        for grid in sorted(root.rglob(GRID_FILE)):
            try:
                planned = json.loads(grid.read_text())
                cells = planned["cells"]
            except (ValueError, KeyError, TypeError) as error:
                unreadable.append(f"{grid}: unreadable ({type(error).__name__}: {error})")
                continue
            for cell in planned.get("left_out", []):
                if "setup" in cell:
                    left_out.setdefault(cell["setup"], set()).add((cell["mode"], cell["budget"]))
            for cell in cells:
                run_dir = (grid.parent / cell["dir"]).resolve()
                if run_dir not in found and "setup" in cell:
                    found.add(run_dir)
                    rows.append(grid_row(cell, run_dir))
                    options.setdefault(rows[-1]["mode_options"], cell.get("mode_options") or {})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["variant"] = mode_variants(frame, options)
    # A run found twice (e.g. in two sweeps) counts once: a finished copy before a failed one.
    rank = frame["status"].map({"ok": 0, "failed": 1, "missing": 2})
    frame = frame.assign(_rank=rank).sort_values("_rank", kind="stable")
    frame = frame.drop_duplicates("identity").drop(columns="_rank")
    frame = frame.sort_values([*SETUP, *CELL, "seed"], kind="stable").reset_index(drop=True)
    return Runs(frame, setups, unreadable, left_out)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per setup, mode and budget: n finished runs, mean and sample std (ddof 1) of the test
    metric over their seeds, the failed and missing runs, and the paper's value if published."""
    keys = [*SETUP, *CELL]
    ok = runs[runs.status == "ok"]
    stats = ok.groupby(keys, dropna=False)["value"].agg(["count", "mean", "std"])
    status = pd.crosstab([runs[k] for k in keys], runs["status"]).reindex(
        columns=["ok", "failed", "missing"], fill_value=0
    )
    summary = status.join(stats).reset_index().rename(columns={"count": "n"})
    summary["n"] = summary["n"].fillna(0).astype(int)
    first = runs.groupby("setup")[["metric", "report", "num_blocks"]].first()
    summary = summary.join(first, on="setup")
    paper = [
        paper_value(r.dataset, r.model, r["mode"], r.budget)
        if r.metric == "error" and not r.variant
        else None
        for _, r in summary.iterrows()
    ]
    summary["paper_mean"] = [p[0] if p else None for p in paper]
    summary["paper_std"] = [p[1] if p else None for p in paper]
    return summary


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


# --- the table ---------------------------------------------------------------------------------


def fmt(mean: float, std: float | None, digits: int) -> str:
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def cell_text(row: pd.Series | None, digits: int) -> str:
    """'7.1 ± 0.2 (n=4)', with failed and missing runs counted: '7.1 (n=1; 2 failed, 1 missing)'."""
    if row is None:
        return ""
    notes = [f"{row[s]} {s}" for s in ("failed", "missing") if row[s]]
    if not row.n:
        return ", ".join(notes) or ""
    counts = f"n={row.n}" + (f"; {', '.join(notes)}" if notes else "")
    return f"{fmt(row['mean'], row['std'], digits)} ({counts})"


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown would need the tabulate package for this)."""
    lines = [list(map(str, frame.columns)), ["---"] * frame.shape[1], *frame.astype(str).values]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


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


class Table:
    """Table 2 for one setup (``SETUP``): a row per mode (and per variant of its options)."""

    def __init__(
        self,
        summary: pd.DataFrame,
        note: str = "",
        suffix: str = "",
        left_out: set[tuple[str, float]] | None = None,
    ) -> None:
        self.left_out = left_out or set()  # (mode, budget) the sweep did not run
        first = summary.iloc[0]
        self.setup, self.dataset, self.model = first.setup, first.dataset, first.model
        self.stable, self.epochs, self.recipe = first.stable, first.epochs, first.recipe
        self.metric, self.report = first.metric, first.report
        self.num_blocks = int(first.num_blocks)
        self.summary, self.note, self.suffix = summary, note, suffix
        self.digits = 1 if self.metric == "error" else 3
        published = (self.dataset, self.model) in PAPER and self.metric == "error"
        self.published = published
        budgets = set(summary.loc[summary["mode"] != "none", "budget"])
        self.budgets = sorted(budgets | (set(PAPER_BUDGETS) if published else set()))
        found = set(summary["mode"])
        modes = [m for m in ROW_ORDER if m in found or published]
        modes += sorted(found - {*ROW_ORDER, "none"})
        variants = summary.groupby("mode")["variant"].unique()
        self.rows = [(m, v) for m in modes for v in (variants.get(m, [""]))]

    @property
    def title(self) -> str:
        what = "test error (%)" if self.metric == "error" else "test MSE"
        net = f"{'Stable ' if self.stable else ''}{self.model} (L = {self.num_blocks})"
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return (
            f"{self.dataset}, {net}, {epochs}, recipe {self.recipe}: {what} of "
            f"{REPORTS[self.report]}, mean ± std over seeds"
        )

    def row(self, mode: str, budget: float, variant: str = "") -> pd.Series | None:
        s = self.summary
        rows = s[(s["mode"] == mode) & (s.budget == budget) & (s["variant"] == variant)]
        return rows.iloc[0] if len(rows) else None

    def ours(self, mode: str, budget: float, variant: str = "") -> str:
        if (mode, budget) in self.left_out:
            return "-"  # the mode cannot run this budget (the paper's "-"): sweep.json says so
        return cell_text(self.row(mode, budget, variant), self.digits)

    def paper(self, mode: str, budget: float) -> str:
        value = paper_value(self.dataset, self.model, mode, budget)
        if value is None:
            published = PAPER.get((self.dataset, self.model), {}).get(mode)
            return "-" if published is not None and budget in PAPER_BUDGETS else ""
        return fmt(*value, digits=1 if mode != "none" else 2)

    def grid(self) -> pd.DataFrame:
        """The paper's layout: a row of ours (and the paper's) per mode, then the baseline."""
        columns = [f"b={b:g}" for b in self.budgets]
        rows = []
        for mode, variant in self.rows:
            name = MODE_NAMES.get(mode, mode) + (f" ({variant})" if variant else "")
            rows.append([name, "ours", *(self.ours(mode, b, variant) for b in self.budgets)])
            if self.published and not variant:
                rows.append([name, "paper", *(self.paper(mode, b) for b in self.budgets)])
        baseline = self.summary[self.summary["mode"] == "none"]
        if len(baseline) or self.published:
            ours = cell_text(baseline.iloc[0], self.digits + 1) if len(baseline) else ""
            rows.append(["No SD (b=1)", "ours", ours, *[""] * (len(columns) - 1)])
            if self.published:
                paper = self.paper("none", 1.0)
                rows.append(["No SD (b=1)", "paper", paper, *[""] * (len(columns) - 1)])
        return pd.DataFrame(rows, columns=["mode", "", *columns])

    def curves(
        self, mode: str, source: str = "ours", variant: str = ""
    ) -> tuple[list[float], list, list]:
        means, stds = [], []
        for b in self.budgets:
            if source == "paper":
                value = paper_value(self.dataset, self.model, mode, b)
                means.append(value[0] if value else math.nan)
                stds.append(value[1] if value else math.nan)
            else:
                row = self.row(mode, b, variant)
                ok = row is not None and row.n > 0
                means.append(row["mean"] if ok else math.nan)
                stds.append(row["std"] if ok else math.nan)
        return self.budgets, means, stds

    def crossing_note(self) -> str:
        notes = []
        for source in ("ours", "paper") if self.published else ("ours",):
            budgets, sense, _ = self.curves("sensemode", source)
            _, uniform, _ = self.curves("uniform", source)
            points = crossings(budgets, sense, uniform)
            where = ", ".join(f"b ≈ {p:.2f}" for p in points) or "not on this grid"
            notes.append(f"{source} {where}")
        return "SenseMode and Uniform cross: " + "; ".join(notes)

    def counts(self) -> str:
        total = self.summary[["ok", "failed", "missing"]].sum()
        return f"Runs: {total.ok} finished, {total.failed} failed, {total.missing} missing."

    def markdown(self) -> str:
        heading = f"### {self.title}" + (f" (setup {self.setup[:6]})" if self.suffix else "")
        lines = [heading, ""]
        if self.note:
            lines += [f"This setup {self.note}.", ""]
        lines += [markdown_table(self.grid()), ""]
        lines.append(f"{self.counts()} {self.crossing_note()}.")
        if not self.published:
            lines.append("The paper's values for this setup are not published here.")
        return "\n".join(lines) + "\n"

    def error_bars(self, means: list, stds: list) -> list[list[float]]:
        """±std, cut at the metric's range ([0, 100] for an error in %, >= 0 for an MSE)."""
        top = 100.0 if self.metric == "error" else math.inf
        below = [min(s, m) if pd.notna(s) else 0.0 for m, s in zip(means, stds, strict=True)]
        above = [min(s, top - m) if pd.notna(s) else 0.0 for m, s in zip(means, stds, strict=True)]
        return [below, above]

    def plot(self, path: Path) -> Path:
        self.figure().savefig(path, dpi=120)
        return path

    def figure(self):
        """Test metric against budget per mode, error bars over seeds (modes side by side, so
        that a budget's points do not hide each other); the baseline as a band; dashed: the
        paper's curves; dotted verticals: where SenseMode and Uniform cross. Matplotlib's
        ``Figure`` API: no global backend or pyplot state."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        colors = {"sensemode": "C0", "uniform": "C1", "linear": "C2"}
        spread = min(np.diff(self.budgets), default=0.1) * 0.08  # the side-by-side offset
        drawn = False
        for i, (mode, variant) in enumerate(self.rows):
            budgets, means, stds = self.curves(mode, variant=variant)
            drawn |= any(pd.notna(m) for m in means)
            color = colors.get(mode) if not variant else None
            shift = (i - (len(self.rows) - 1) / 2) * spread
            ax.errorbar(
                [b + shift for b in budgets],
                means,
                yerr=self.error_bars(means, stds),
                marker="o",
                capsize=3,
                color=color,
                label=MODE_NAMES.get(mode, mode) + (f" ({variant})" if variant else ""),
            )
            if self.published and not variant:
                _, paper, _ = self.curves(mode, "paper")
                ax.plot(
                    budgets,
                    paper,
                    linestyle="--",
                    alpha=0.5,
                    color=color,
                    label=f"{MODE_NAMES.get(mode, mode)} (paper)",
                )
        baseline = self.summary[(self.summary["mode"] == "none") & (self.summary.n > 0)]
        if len(baseline):
            drawn = True
            mean, std = baseline.iloc[0]["mean"], baseline.iloc[0]["std"]
            std = 0.0 if pd.isna(std) else std
            ax.axhline(mean, color="k", linewidth=1, label="no SD (b = 1)")
            ax.axhspan(max(mean - std, 0.0), mean + std, color="k", alpha=0.1)
        budgets, sense, _ = self.curves("sensemode")
        _, uniform, _ = self.curves("uniform")
        for point in crossings(budgets, sense, uniform):
            ax.axvline(point, color="gray", linestyle=":")
            ax.annotate(
                f"SenseMode = Uniform\nb ≈ {point:.2f}",
                (point, 0.95),
                xytext=(4, 0),
                xycoords=("data", "axes fraction"),
                textcoords="offset points",
                va="top",
                fontsize=8,
                color="gray",
            )
        if not drawn:
            ax.text(0.5, 0.5, "no finished run in this setup", ha="center", transform=ax.transAxes)
        ax.set_xlabel("budget b = mean survival probability")
        ax.set_ylabel("test error (%)" if self.metric == "error" else "test MSE")
        ax.set_title(self.title, fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return fig


def tables(runs: Runs) -> list[Table]:
    """One table per setup; setups that could be taken for one another are told apart."""
    summary = summarize(runs.frame)
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


def write(runs: Runs, out: Path) -> tuple[list[Table], list[Path]]:
    """Write table2.md, table2.csv, summary.csv and one plot per setup into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    found = tables(runs)
    text = "\n".join(t.markdown() for t in found)
    if runs.unreadable:
        text += "\nUnreadable files (counted as missing):\n" + "".join(
            f"- {line}\n" for line in runs.unreadable
        )
    (out / "table2.md").write_text(text)
    wide = pd.concat([t.grid().assign(table=t.title) for t in found], ignore_index=True)
    wide.to_csv(out / "table2.csv", index=False)
    summarize(runs.frame).to_csv(out / "summary.csv", index=False)
    plots = [
        t.plot(out / f"table2_{t.dataset}_{t.model}_{t.epochs}ep{t.suffix and '_'}{t.suffix}.png")
        for t in found
    ]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    print(
        f"Wrote {out / 'table2.md'}, table2.csv, summary.csv, verdict.md, verdict.csv "
        f"and {len(plots)} plot(s) to {out}"
    )
    if args.wandb:
        log_to_wandb(out, found, plots, sweep_group(args.sweep_dirs), args.project)
    return 0


if __name__ == "__main__":
    sys.exit(main())
