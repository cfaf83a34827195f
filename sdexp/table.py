"""Table 2 from sweeps: ``python scripts/aggregate.py SWEEP_DIR...`` (or ``sdexp-table``).

Reads every ``results.json`` under the given directories, and the cells each sweep planned
(``sweep.json``, written by the grid sweeper) to count the runs that never finished. Per dataset,
model and training length it writes

- ``table2.md`` and ``table2.csv``: the paper's layout (modes as rows, budgets as columns, the
  no-SD baseline), mean ± sample std over seeds with n, failed and missing runs counted in the
  cell, and the paper's value on the row below ours wherever it is published;
- ``summary.csv``: the same numbers, one row per (mode, budget), for further analysis;
- ``table2_<dataset>_<model>.png``: test error against budget per mode with error bars (the
  budget-performance trade-off), the baseline as a band, where SenseMode and Uniform cross;

and prints the markdown. ``--wandb`` logs the tables and plots to a W&B run in the sweep's group.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from sdexp.results import RESULTS_FILE
from sdexp.survival import MODES
from sdexp.sweep import GRID_FILE

SETUP = ["dataset", "model", "stable", "epochs"]  # one table per setup
CELL = ["mode", "budget"]
MODE_NAMES = {"sensemode": "SenseMode", "uniform": "Uniform", "linear": "Linear", "none": "No SD"}
ROW_ORDER = ["sensemode", "uniform", "linear"]

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


def collect(sweep_dirs: list[str | Path]) -> pd.DataFrame:
    """One row per run: every results.json under ``sweep_dirs`` (status ok or failed), and every
    cell a sweep planned that has none (status missing: never started, or killed)."""
    rows, found = [], set()
    for root in map(Path, sweep_dirs):
        for path in sorted(root.rglob(RESULTS_FILE)):
            results = json.loads(path.read_text())
            metric = (
                "test_error"
                if "test_error" in results or "best_val_error" in results
                else ("test_mse")
            )
            rows.append(
                {
                    **{k: results.get(k) for k in [*SETUP, *CELL, "seed", "num_blocks"]},
                    "status": results.get("status", "failed"),
                    "metric": metric,
                    "value": results.get(metric),
                    "dir": str(path.parent),
                }
            )
            found.add(path.parent.resolve())
        for grid in sorted(root.rglob(GRID_FILE)):
            for cell in json.loads(grid.read_text())["cells"]:
                run_dir = (grid.parent / cell["dir"]).resolve()
                if run_dir not in found:
                    found.add(run_dir)
                    identity = {k: cell.get(k) for k in [*SETUP, *CELL, "seed", "num_blocks"]}
                    rows.append({**identity, "status": "missing", "dir": str(run_dir)})
    columns = [*SETUP, *CELL, "seed", "num_blocks", "status", "metric", "value", "dir"]
    runs = pd.DataFrame(rows, columns=columns)
    # A run found twice (e.g. in two sweeps) counts once: a finished copy before a failed one.
    rank = runs["status"].map({"ok": 0, "failed": 1, "missing": 2})
    runs = runs.assign(_rank=rank).sort_values("_rank", kind="stable")
    runs = runs.drop_duplicates([*SETUP, *CELL, "seed"]).drop(columns="_rank")
    return runs.sort_values([*SETUP, *CELL, "seed"], kind="stable").reset_index(drop=True)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per setup, mode and budget: n finished runs, mean and sample std (ddof 1) of the test
    metric over their seeds, the failed and missing runs, and the paper's value if published."""
    ok = runs[runs.status == "ok"]
    stats = ok.groupby([*SETUP, *CELL], dropna=False)["value"].agg(["count", "mean", "std"])
    status = pd.crosstab([runs[k] for k in [*SETUP, *CELL]], runs["status"]).reindex(
        columns=["ok", "failed", "missing"], fill_value=0
    )
    summary = status.join(stats).reset_index().rename(columns={"count": "n"})
    summary["n"] = summary["n"].fillna(0).astype(int)
    metric = runs.groupby(SETUP, dropna=False)["metric"].agg(
        lambda m: m.dropna().iloc[0] if m.notna().any() else "test_error"
    )
    summary["metric"] = [metric.loc[tuple(r[k] for k in SETUP)] for _, r in summary.iterrows()]
    paper = [
        paper_value(r.dataset, r.model, r["mode"], r.budget) if r.metric == "test_error" else None
        for _, r in summary.iterrows()
    ]
    summary["paper_mean"] = [p[0] if p else None for p in paper]
    summary["paper_std"] = [p[1] if p else None for p in paper]
    return summary


# --- the table ---------------------------------------------------------------------------------


def smallest_budget(mode: str, num_blocks: int) -> float:
    """Where a mode's default configuration becomes infeasible (linear: (L-1)/(2L))."""
    return MODES[mode]().smallest_budget(num_blocks) if mode in MODES else 0.0


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
    """Table 2 for one setup (dataset, model, stable, epochs)."""

    def __init__(self, setup: tuple, summary: pd.DataFrame, num_blocks: int) -> None:
        self.dataset, self.model, self.stable, self.epochs = setup
        self.summary, self.num_blocks = summary, num_blocks
        self.metric = summary["metric"].iloc[0]
        self.digits = 1 if self.metric == "test_error" else 3
        published = (self.dataset, self.model) in PAPER and self.metric == "test_error"
        self.published = published
        budgets = set(summary.loc[summary["mode"] != "none", "budget"])
        self.budgets = sorted(budgets | (set(PAPER_BUDGETS) if published else set()))
        self.modes = [m for m in ROW_ORDER if m in set(summary["mode"]) or published]
        self.modes += sorted(set(summary["mode"]) - {*ROW_ORDER, "none"})

    @property
    def title(self) -> str:
        what = "test error (%)" if self.metric == "test_error" else "test MSE"
        net = f"{'Stable ' if self.stable else ''}{self.model} (L = {self.num_blocks})"
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return f"{self.dataset}, {net}, {epochs}: {what}, mean ± std over seeds"

    def row(self, mode: str, budget: float) -> pd.Series | None:
        rows = self.summary[(self.summary["mode"] == mode) & (self.summary.budget == budget)]
        return rows.iloc[0] if len(rows) else None

    def ours(self, mode: str, budget: float) -> str:
        if budget < smallest_budget(mode, self.num_blocks):
            return "-"  # the mode cannot run this budget (the paper's "-")
        return cell_text(self.row(mode, budget), self.digits)

    def paper(self, mode: str, budget: float) -> str:
        value = paper_value(self.dataset, self.model, mode, budget)
        if value is None:
            return "-" if budget < smallest_budget(mode, self.num_blocks) else ""
        return fmt(*value, digits=1 if mode != "none" else 2)

    def grid(self) -> pd.DataFrame:
        """The paper's layout: a row of ours (and the paper's) per mode, then the baseline."""
        columns = [f"b={b:g}" for b in self.budgets]
        rows = []
        for mode in self.modes:
            name = MODE_NAMES.get(mode, mode)
            rows.append([name, "ours", *(self.ours(mode, b) for b in self.budgets)])
            if self.published:
                rows.append([name, "paper", *(self.paper(mode, b) for b in self.budgets)])
        baseline = self.summary[self.summary["mode"] == "none"]
        if len(baseline) or self.published:
            ours = cell_text(baseline.iloc[0], self.digits + 1) if len(baseline) else ""
            rows.append(["No SD (b=1)", "ours", ours, *[""] * (len(columns) - 1)])
            if self.published:
                paper = self.paper("none", 1.0)
                rows.append(["No SD (b=1)", "paper", paper, *[""] * (len(columns) - 1)])
        return pd.DataFrame(rows, columns=["mode", "", *columns])

    def curves(self, mode: str, source: str = "ours") -> tuple[list[float], list, list]:
        means, stds = [], []
        for b in self.budgets:
            if source == "paper":
                value = paper_value(self.dataset, self.model, mode, b)
                means.append(value[0] if value else math.nan)
                stds.append(value[1] if value else math.nan)
            else:
                row = self.row(mode, b)
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
        lines = [f"### {self.title}", "", markdown_table(self.grid()), ""]
        lines.append(f"{self.counts()} {self.crossing_note()}.")
        if not self.published:
            lines.append("The paper's values for this setup are not published here.")
        return "\n".join(lines) + "\n"

    def plot(self, path: Path) -> Path:
        """Test metric against budget per mode, error bars over seeds; the baseline as a band;
        dashed: the paper's curves; dotted verticals: where SenseMode and Uniform cross."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        colors = {"sensemode": "C0", "uniform": "C1", "linear": "C2"}
        for mode in self.modes:
            budgets, means, stds = self.curves(mode)
            color = colors.get(mode)
            ax.errorbar(
                budgets,
                means,
                yerr=stds,
                marker="o",
                capsize=3,
                color=color,
                label=MODE_NAMES.get(mode, mode),
            )
            if self.published:
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
            mean, std = baseline.iloc[0]["mean"], baseline.iloc[0]["std"]
            std = 0.0 if pd.isna(std) else std
            ax.axhline(mean, color="k", linewidth=1, label="no SD (b = 1)")
            ax.axhspan(mean - std, mean + std, color="k", alpha=0.1)
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
        ax.set_xlabel("budget b = mean survival probability")
        ax.set_ylabel("test error (%)" if self.metric == "test_error" else "test MSE")
        ax.set_title(self.title, fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def tables(runs: pd.DataFrame) -> list[Table]:
    summary = summarize(runs)
    result = []
    for setup, part in summary.groupby(SETUP, dropna=False, sort=True):
        blocks = runs.loc[(runs[SETUP] == pd.Series(setup, index=SETUP)).all(axis=1), "num_blocks"]
        result.append(Table(setup, part.reset_index(drop=True), int(blocks.dropna().iloc[0])))
    return result


def write(runs: pd.DataFrame, out: Path) -> tuple[list[Table], list[Path]]:
    """Write table2.md, table2.csv, summary.csv and one plot per setup into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    found = tables(runs)
    (out / "table2.md").write_text("\n".join(t.markdown() for t in found))
    wide = pd.concat([t.grid().assign(table=t.title) for t in found], ignore_index=True)
    wide.to_csv(out / "table2.csv", index=False)
    summarize(runs).to_csv(out / "summary.csv", index=False)
    plots = [t.plot(out / f"table2_{t.dataset}_{t.model}_{t.epochs}ep.png") for t in found]
    return found, plots


def log_to_wandb(
    out: Path, found: list[Table], plots: list[Path], group: str | None, project: str
) -> None:
    """The tables and plots as one W&B run (job_type aggregate) in the sweep's group."""
    import wandb

    from sdexp.loggers import resolve_wandb_mode

    run = wandb.init(
        project=project,
        group=group,
        job_type="aggregate",
        name="table2",
        mode=resolve_wandb_mode("auto"),
        dir=str(out),
    )
    summary = pd.read_csv(out / "summary.csv")
    run.log(
        {
            "table2/summary": wandb.Table(dataframe=summary),
            **{f"table2/{t.dataset}_{t.model}": wandb.Table(dataframe=t.grid()) for t in found},
            **{f"table2/plot_{p.stem}": wandb.Image(str(p)) for p in plots},
        }
    )
    run.finish()


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
    parser.add_argument("--wandb", action="store_true", help="also log tables and plots to W&B")
    parser.add_argument("--project", default="sdexp", help="W&B project (default: sdexp)")
    args = parser.parse_args(argv)
    for d in args.sweep_dirs:
        if not d.is_dir():
            parser.error(f"{d} is not a directory")
    runs = collect(args.sweep_dirs)
    if runs.empty:
        print(
            f"error: no {RESULTS_FILE} or {GRID_FILE} under {', '.join(map(str, args.sweep_dirs))}",
            file=sys.stderr,
        )
        return 2
    out = args.out or (args.sweep_dirs[0] if len(args.sweep_dirs) == 1 else Path("outputs/tables"))
    found, plots = write(runs, out)
    print((out / "table2.md").read_text())
    print(f"Wrote {out / 'table2.md'}, table2.csv, summary.csv and {len(plots)} plot(s) to {out}")
    if args.wandb:
        log_to_wandb(out, found, plots, sweep_group(args.sweep_dirs), args.project)
    return 0


if __name__ == "__main__":
    sys.exit(main())
