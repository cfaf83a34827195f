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

Plain data in (``Plot``: lists and numbers, which ``sdexp.analysis.tables.Table.plot`` gives),
matplotlib's ``Figure`` API only: no pyplot state and no global backend (``savefig`` picks the
writer from the file name), so importing or calling this changes nothing for the caller.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

COLORS = {"sensemode": "C0", "uniform": "C1", "linear": "C2"}
OTHER_COLORS = [f"C{i}" for i in range(3, 10)]  # variants and other modes, in turn
OFFSET = 0.08  # the side-by-side step between modes, as a fraction of the closest budgets' gap
NOTHING = "no finished run in this setup"


@dataclass(frozen=True)
class Curve:
    """A mode's test metric at each budget of the plot, mean and std over seeds (NaN where
    there is none); ``variant``: the mode's options when a setup ran several sets of them."""

    mode: str
    label: str
    mean: list[float]
    std: list[float]
    variant: str = ""


@dataclass(frozen=True)
class Plot:
    """What the plot of one setup draws: ``ours`` one curve per row of the table, ``paper`` the
    paper's curve of a mode where it publishes one, the no-SD ``baseline`` (mean, std), and the
    budgets where SenseMode and Uniform ``cross``."""

    title: str
    metric: str  # "error" (in %) or "mse"
    budgets: list[float]
    ours: list[Curve]
    paper: dict[str, Curve] = field(default_factory=dict)
    baseline: tuple[float, float] | None = None
    cross: list[float] = field(default_factory=list)


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


def draw_modes(ax: Axes, plot: Plot) -> bool:
    """Our curve per mode (and variant) with error bars, the paper's dashed; True if any of
    ours has a point."""
    drawn = False
    others = itertools.cycle(OTHER_COLORS)
    places = shifts(plot.budgets, len(plot.ours))
    for curve, shift in zip(plot.ours, places, strict=True):
        mode = curve.mode
        color = COLORS[mode] if mode in COLORS and not curve.variant else next(others)
        ax.errorbar(
            np.add(plot.budgets, shift),
            curve.mean,
            yerr=error_bars(plot.metric, curve.mean, curve.std),
            marker="o",
            capsize=3,
            color=color,
            label=curve.label,
        )
        drawn |= any(not math.isnan(m) for m in curve.mean)
        if not curve.variant and mode in plot.paper:
            paper = plot.paper[mode]
            label = f"{paper.label} (paper)"
            ax.plot(plot.budgets, paper.mean, linestyle="--", alpha=0.5, color=color, label=label)
    return drawn


def draw_baseline(ax: Axes, plot: Plot) -> bool:
    """Our no-SD mean as a line, ±std as a band; True if there is one."""
    if plot.baseline is None:
        return False
    mean, std = plot.baseline
    (below,), (above,) = error_bars(plot.metric, [mean], [std])
    ax.axhline(mean, color="k", linewidth=1, label="no SD (b = 1)")
    ax.axhspan(mean - below, mean + above, color="k", alpha=0.1)
    return True


def draw_crossings(ax: Axes, plot: Plot) -> None:
    for point in plot.cross:
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


def figure(plot: Plot) -> Figure:
    """The figure of ``plot`` (see the module docstring)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    drawn = draw_modes(ax, plot)
    drawn |= draw_baseline(ax, plot)
    draw_crossings(ax, plot)
    if not drawn:  # the grid's budgets, no values
        ax.text(0.5, 0.5, NOTHING, ha="center", transform=ax.transAxes)
        ax.set(xlim=(0, 1), xticks=plot.budgets, yticks=[])  # budgets lie in (0, 1]
    ax.set_xlabel("budget b = mean survival probability")
    ax.set_ylabel("test error (%)" if plot.metric == "error" else "test MSE")
    ax.set_title(plot.title.replace(": ", ":\n", 1), fontsize=9)  # two lines: it fits
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_plot(plot: Plot, path: Path, note: str = "") -> Path:
    """The figure as a PNG, ``note`` (what made it) in its Description metadata."""
    figure(plot).savefig(path, dpi=120, metadata={"Description": note} if note else None)
    return path
