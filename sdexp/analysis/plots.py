"""The plots ``sdexp-table`` writes, from plain data (lists, numbers and frames), with
matplotlib's ``Figure`` API only: no pyplot state and no global backend (``savefig`` picks the
writer from the file name), so importing or calling this changes nothing for the caller.

``table_figure``: test error (or MSE) against the budget b per mode, the budget-performance
trade-off of Sec. 6, our means with ±std bars beside the paper's curves (dashed), the no-SD
baseline and where SenseMode and Uniform cross. ``paired_figure``: the paired test's d_s(b) =
SenseMode - Uniform per seed, their mean with its t interval, and the two regimes shaded with the
sign the Budget Hypothesis predicts there (Sec. 5).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from sdexp.analysis.paired import Paired

COLORS = {"sensemode": "C0", "uniform": "C1", "linear": "C2"}
OTHER_COLORS = [f"C{i}" for i in range(3, 10)]  # variants and other modes, in turn
OFFSET = 0.08  # the side-by-side step between modes, as a fraction of the closest budgets' gap
NOTHING = "no finished run in this setup"


@dataclass(frozen=True)
class Curve:
    """A mode's (and variant's) mean and std over seeds at each budget of the plot (NaN: none)."""

    mode: str
    label: str
    mean: list[float]
    std: list[float]
    variant: str = ""


@dataclass(frozen=True)
class Plot:
    """What the plot of one setup draws (``sdexp.analysis.tables.Table.plot``)."""

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
    """Our curves with error bars, the paper's dashed; True if any of ours has a point."""
    drawn = False
    others = itertools.cycle(OTHER_COLORS)
    places = shifts(plot.budgets, len(plot.ours))
    for curve, shift in zip(plot.ours, places, strict=True):
        mode = curve.mode
        color = COLORS[mode] if mode in COLORS and not curve.variant else next(others)
        x, bars = np.add(plot.budgets, shift), error_bars(plot.metric, curve.mean, curve.std)
        ax.errorbar(x, curve.mean, yerr=bars, marker="o", capsize=3, color=color, label=curve.label)
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
    style = {"xycoords": ("data", "axes fraction"), "textcoords": "offset points", "va": "top"}
    for point in plot.cross:
        ax.axvline(point, color="gray", linestyle=":")
        text = f"SenseMode = Uniform\nb ≈ {point:.2f}"
        ax.annotate(text, (point, 0.95), xytext=(4, 0), fontsize=8, color="gray", **style)


def table_figure(plot: Plot) -> Figure:
    """The table's figure of ``plot``; a setup without a finished run says so."""
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
    table_figure(plot).savefig(path, dpi=120, metadata={"Description": note} if note else None)
    return path


PREDICTION = {
    "small": "predicted d < 0, SenseMode better",
    "large": "predicted d > 0, Uniform better",
}
SHADE = {"small": "C0", "large": "C1"}  # SenseMode's and Uniform's colours in the table's plot


def draw_regimes(ax: Axes, regimes: dict[str, list[float]], width: float) -> None:
    """Each regime's budgets shaded in the colour of the mode predicted better there, named with
    its prediction; a dotted line between the regimes."""
    for regime, budgets in regimes.items():
        for b in budgets:
            ax.axvspan(b - width / 2, b + width / 2, color=SHADE[regime], alpha=0.1, lw=0)
    corners = [(0.01, "left"), (0.99, "right")]
    for (regime, text), (x, ha) in zip(PREDICTION.items(), corners, strict=True):
        if regimes.get(regime):
            style = {"transform": ax.transAxes, "va": "top", "fontsize": 8, "color": SHADE[regime]}
            ax.text(x, 0.98, f"{regime}: {text}", ha=ha, **style)
    small, large = regimes.get("small"), regimes.get("large")
    if small and large:
        ax.axvline((max(small) + min(large)) / 2, color="0.5", linestyle=":")


def paired_figure(
    differences: pd.DataFrame,
    means: pd.DataFrame,
    regimes: dict[str, list[float]],
    title: str,
    ylabel: str,
    level: float = 0.95,
) -> Figure:
    """The paired test's figure (see the module docstring)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.axhline(0.0, color="k", lw=1)
    known = differences.dropna(subset=["d"]).sort_values("budget")
    for i, (_, seed) in enumerate(known.groupby("seed")):  # d_s(b), a thin line per seed
        label = "one seed" if i == 0 else None
        ax.plot(seed["budget"], seed["d"], color="0.55", lw=0.8, marker=".", ms=4, label=label)
    below = (means["mean"] - means["ci_low"]).fillna(0.0)
    above = (means["ci_high"] - means["mean"]).fillna(0.0)
    style = {"color": "C3", "lw": 2, "marker": "o", "capsize": 4, "zorder": 3}
    label = f"mean over seeds, {level:.0%} CI"
    ax.errorbar(means["budget"], means["mean"], yerr=[below, above], label=label, **style)
    budgets = sorted(set(means["budget"]) | {b for at in regimes.values() for b in at})
    draw_regimes(ax, regimes, min([0.1, *np.diff(budgets)]))
    ax.margins(y=0.15)  # room for the regimes' names
    ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    pad = 0.1 if len(budgets) == 1 else 0.08 * (budgets[-1] - budgets[0])
    ax.set_xlim(budgets[0] - pad, budgets[-1] + pad)
    ax.set_xlabel("budget b = mean survival probability")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_paired_plot(paired: Paired, title: str, path: Path, note: str = "") -> Path:
    """``paired``'s figure as a PNG, ``note`` (what made it) in its Description metadata."""
    ylabel = "d = SenseMode - Uniform" + (f" ({paired.unit})" if paired.unit else "")
    data = (paired.differences, paired.budget_means(), paired.regimes)
    fig = paired_figure(*data, title.replace(": ", ":\n", 1), ylabel, paired.level)
    fig.savefig(path, dpi=120, metadata={"Description": note} if note else None)
    return path
