"""The plot of the paired test (``sdexp.analysis.verdict.paired``): d_s(b) = SenseMode - Uniform of
each seed s against the budget b. ``sdexp-table`` writes it as
``paired_<dataset>_<model>_<epochs>ep.png``.

- one thin grey line per seed over the budgets where it has both modes;
- the mean over seeds per budget with its t confidence interval;
- the zero line (below it SenseMode is better, above it Uniform);
- the budgets of the two regimes the test compares shaded, each named with the sign the Budget
  Hypothesis predicts there (Sec. 5), a dotted line between them.

Plain data in (frames and lists), matplotlib's ``Figure`` API only: no pyplot state, no global
backend (``savefig`` picks the writer from the file name).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from sdexp.analysis.verdict import Paired

PREDICTION = {
    "small": "predicted d < 0, SenseMode better",
    "large": "predicted d > 0, Uniform better",
}
SHADE = {"small": "C0", "large": "C1"}  # SenseMode's and Uniform's colours in the table's plot


def draw_seeds(ax: Axes, differences: pd.DataFrame) -> None:
    """d_s(b) of each seed (columns budget, seed, d), a thin line over its budgets."""
    known = differences.dropna(subset=["d"]).sort_values("budget")
    for i, (_, seed) in enumerate(known.groupby("seed")):
        label = "one seed" if i == 0 else None
        ax.plot(seed["budget"], seed["d"], color="0.55", lw=0.8, marker=".", ms=4, label=label)


def draw_means(ax: Axes, means: pd.DataFrame, level: float) -> None:
    """The mean of d per budget (columns budget, mean, ci_low, ci_high) with its interval."""
    below = (means["mean"] - means["ci_low"]).fillna(0.0)
    above = (means["ci_high"] - means["mean"]).fillna(0.0)
    ax.errorbar(
        means["budget"],
        means["mean"],
        yerr=[below, above],
        color="C3",
        lw=2,
        marker="o",
        capsize=4,
        label=f"mean over seeds, {level:.0%} CI",
        zorder=3,
    )


def draw_regimes(ax: Axes, regimes: dict[str, list[float]], width: float) -> None:
    """Each regime's budgets shaded in the colour of the mode predicted better there (as in the
    table's plot), named in a corner with its prediction; a dotted line between the regimes."""
    for regime, budgets in regimes.items():
        for b in budgets:
            ax.axvspan(b - width / 2, b + width / 2, color=SHADE[regime], alpha=0.1, lw=0)
    corners = [(0.01, "left"), (0.99, "right")]
    for (regime, text), (x, ha) in zip(PREDICTION.items(), corners, strict=True):
        if regimes.get(regime):
            ax.text(
                x,
                0.98,
                f"{regime}: {text}",
                transform=ax.transAxes,
                ha=ha,
                va="top",
                fontsize=8,
                color=SHADE[regime],
            )
    small, large = regimes.get("small"), regimes.get("large")
    if small and large:
        ax.axvline((max(small) + min(large)) / 2, color="0.5", linestyle=":")


def figure(
    differences: pd.DataFrame,
    means: pd.DataFrame,
    regimes: dict[str, list[float]],
    title: str,
    ylabel: str,
    level: float = 0.95,
) -> Figure:
    """The figure (see the module docstring)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.axhline(0.0, color="k", lw=1)
    draw_seeds(ax, differences)
    draw_means(ax, means, level)
    budgets = sorted(set(means["budget"]) | {b for at in regimes.values() for b in at})
    draw_regimes(ax, regimes, min([0.1, *np.diff(budgets)]))
    ax.margins(y=0.15)  # room for the regimes' names
    ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    if len(budgets) == 1:
        ax.set_xlim(budgets[0] - 0.1, budgets[0] + 0.1)
    else:
        pad = 0.08 * (budgets[-1] - budgets[0])
        ax.set_xlim(budgets[0] - pad, budgets[-1] + pad)
    ax.set_xlabel("budget b = mean survival probability")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_paired_plot(paired: Paired, title: str, path: Path, note: str = "") -> Path:
    """``paired``'s figure as a PNG (``title``: two lines, split at its first ': '), ``note``
    (what made it) in its Description metadata."""
    unit = f" ({paired.unit})" if paired.unit else ""
    fig = figure(
        paired.differences,
        paired.budget_means(),
        paired.regimes,
        title.replace(": ", ":\n", 1),
        f"d = SenseMode - Uniform{unit}",
        paired.level,
    )
    fig.savefig(path, dpi=120, metadata={"Description": note} if note else None)
    return path
