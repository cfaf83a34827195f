"""The plot of one Table 2 setup: test error (or MSE) against the budget b, per mode, i.e. the
budget-performance trade-off of Sec. 6 ("Table 2 also shows a clear Budget-performance
trade-off"). ``sdexp-table`` writes it as ``table2_<dataset>_<model>_<epochs>ep.png``.

- each mode's mean over seeds, with ±std error bars cut at the metric's range ([0, 100] for an
  error in %, >= 0 for an MSE); the modes of one budget side by side (``OFFSET``), so that their
  points and bars do not hide each other;
- the no-SD baseline (b = 1) as a line, its ±std as a band;
- dashed: the paper's curves, where it publishes them;
- dotted verticals: where SenseMode and Uniform cross;
- a setup without a finished run says so instead of drawing empty axes.

Matplotlib's ``Figure`` API only: no pyplot state and no global backend (``savefig`` picks
the writer from the file name), so importing or calling this changes nothing for the caller.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from sdexp.table import Table

COLORS = {"sensemode": "C0", "uniform": "C1", "linear": "C2"}
OTHER_COLORS = [f"C{i}" for i in range(3, 10)]  # variants and other modes, in turn
OFFSET = 0.08  # the side-by-side step between modes, as a fraction of the closest budgets' gap
NOTHING = "no finished run in this setup"


def error_bars(metric: str, means: Sequence[float], stds: Sequence[float]) -> list[list[float]]:
    """[below, above]: ±std, cut at the metric's range ([0, 100] for an error in %, >= 0 for an
    MSE); no bar where the std is NaN (one seed)."""
    top = 100.0 if metric == "error" else math.inf
    pairs = list(zip(means, stds, strict=True))
    below = [min(s, m) if not math.isnan(s) else 0.0 for m, s in pairs]
    above = [min(s, top - m) if not math.isnan(s) else 0.0 for m, s in pairs]
    return [below, above]


def shifts(budgets: Sequence[float], series: int) -> list[float]:
    """Where each of ``series`` curves sits around its budgets: side by side, centred."""
    step = min(np.diff(budgets), default=0.1) * OFFSET
    return [(i - (series - 1) / 2) * step for i in range(series)]


def draw_modes(ax: Axes, table: Table) -> bool:
    """Our curve per mode (and variant) with error bars, the paper's dashed; True if any of
    ours has a point."""
    drawn = False
    published = set(table.paper["mode"])
    others = itertools.cycle(OTHER_COLORS)
    places = shifts(table.budgets, len(table.rows))
    for (mode, variant), shift in zip(table.rows, places, strict=True):
        ours = table.curve(mode, variant=variant)
        color = COLORS[mode] if mode in COLORS and not variant else next(others)
        ax.errorbar(
            np.add(table.budgets, shift),
            ours["mean"],
            yerr=error_bars(table.metric, ours["mean"], ours["std"]),
            marker="o",
            capsize=3,
            color=color,
            label=table.label(mode, variant),
        )
        drawn |= bool(ours["mean"].notna().any())
        if not variant and mode in published:
            paper = table.curve(mode, "paper")
            label = f"{table.label(mode)} (paper)"
            ax.plot(
                table.budgets, paper["mean"], linestyle="--", alpha=0.5, color=color, label=label
            )
    return drawn


def draw_baseline(ax: Axes, table: Table) -> bool:
    """Our no-SD mean as a line, ±std as a band; True if there is one."""
    baseline = table.baseline()
    if baseline is None:
        return False
    mean, std = baseline
    (below,), (above,) = error_bars(table.metric, [mean], [std])
    ax.axhline(mean, color="k", linewidth=1, label="no SD (b = 1)")
    ax.axhspan(mean - below, mean + above, color="k", alpha=0.1)
    return True


def draw_crossings(ax: Axes, table: Table) -> None:
    for point in table.crossing_points():
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


def figure(table: Table) -> Figure:
    """The figure of ``table`` (see the module docstring)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    drawn = draw_modes(ax, table)
    drawn |= draw_baseline(ax, table)
    draw_crossings(ax, table)
    if not drawn:  # the grid's budgets, no values
        ax.text(0.5, 0.5, NOTHING, ha="center", transform=ax.transAxes)
        ax.set(xlim=(0, 1), xticks=table.budgets, yticks=[])  # budgets lie in (0, 1]
    ax.set_xlabel("budget b = mean survival probability")
    ax.set_ylabel("test error (%)" if table.metric == "error" else "test MSE")
    ax.set_title(table.title.replace(": ", ":\n", 1), fontsize=9)  # two lines: it fits
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_plot(table: Table, path: Path, note: str = "") -> Path:
    """The figure as a PNG, ``note`` (what made it) in its Description metadata."""
    figure(table).savefig(path, dpi=120, metadata={"Description": note} if note else None)
    return path
