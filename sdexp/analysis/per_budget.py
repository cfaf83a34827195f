"""The Budget Hypothesis (Sec. 5) per budget: the descriptive view beside the paired test that
decides the verdict (``sdexp.analysis.verdict``).

Per budget and pair of ``PAIRS`` (``compare``): diff = mean_a - mean_b over seeds (negative: mode_a
is better), Welch's interval at ``level`` and Welch's t-test, Holm-adjusted (Holm 1979) within
each pair's budgets; the intervals are not adjusted. No p-value below 2 seeds a side, nor where
both sides have zero variance (Welch's t is 0/0 or infinite: scipy's p-value would mean nothing).
SenseMode-Uniform is compared at every budget where either ran, the other pairs where both did
(Linear cannot run below (L - 1)/(2L), the paper's "-").

Where the better mode switches (``switches``) is named by the grid budgets either side, no place
in between: a line through two points is no estimate of where the modes cross.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from sdexp.analysis.hypothesis import BOUNDARY, HYPOTHESIS, name

PAIRS = (HYPOTHESIS, ("linear", "uniform"), ("sensemode", "linear"))
COLUMNS = ["budget", "mode_a", "mode_b", "n_a", "n_b", "mean_a", "mean_b", "diff", "ci_low"]
COLUMNS += ["ci_high", "p_value", "p_adjusted", "better", "significant", "note"]


def welch(
    a: Sequence[float], b: Sequence[float], level: float = 0.95, names: tuple[str, str] = ("a", "b")
) -> dict:
    """Mode a against mode b at one budget, Welch's interval and two-sided test; NaN where
    undefined, the reason in ``note`` (the modes called ``names``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    mean_a, mean_b = (x.mean() if len(x) else math.nan for x in (a, b))
    row = dict(n_a=len(a), n_b=len(b), mean_a=mean_a, mean_b=mean_b, diff=mean_a - mean_b)
    row |= dict.fromkeys(["ci_low", "ci_high", "p_value"], math.nan) | {"note": ""}
    if len(a) < 2 or len(b) < 2:
        row["note"] = "no test: " + ", ".join(
            f"{side} has {'no run' if n == 0 else f'{n} seed'}"
            for side, n in zip(names, (len(a), len(b)), strict=True)
            if n < 2
        )
    elif np.ptp(a) == 0 and np.ptp(b) == 0:
        row["note"] = "no test: zero variance on both sides (Welch's t is undefined)"
    else:
        with warnings.catch_warnings():  # near-identical seeds: scipy's precision-loss warning
            warnings.simplefilter("ignore", RuntimeWarning)
            test = stats.ttest_ind(a, b, equal_var=False)
            interval = test.confidence_interval(confidence_level=level)
        row.update(ci_low=interval.low, ci_high=interval.high, p_value=test.pvalue)
    return row


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979): the k-th smallest of m p-values times
    (m - k + 1), made non-decreasing, capped at 1. NaN entries stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    steps = p[order] * (m - np.arange(m))
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted


def compare(runs: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per budget and pair of ``PAIRS`` (``COLUMNS``): ``welch`` on the seeds,
    Holm-adjusted within each pair, ``better`` the mode with the lower mean, ``significant``
    adjusted p < 1 - level."""
    runs = runs[runs["value"].notna() & (runs["mode"] != "none")]
    values = {
        (mode, round(float(budget), 10)): part["value"].to_numpy()
        for (mode, budget), part in runs.groupby(["mode", "budget"])
    }
    ran = {mode: {b for m, b in values if m == mode} for mode in runs["mode"].unique()}
    frames = []
    for a, b in PAIRS:
        if a not in ran or b not in ran:
            continue
        budgets = ran[a] | ran[b] if (a, b) == HYPOTHESIS else ran[a] & ran[b]
        if not budgets:  # e.g. Linear and Uniform run, never at one budget
            continue
        budgets, names = sorted(budgets), (name(a), name(b))
        rows = [
            welch(values.get((a, x), []), values.get((b, x), []), level, names) for x in budgets
        ]
        frame = pd.DataFrame(rows).assign(budget=budgets, mode_a=a, mode_b=b)
        frame["p_adjusted"] = holm(frame["p_value"])
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    table["better"] = np.select(
        [table["diff"] < 0, table["diff"] > 0, table["diff"] == 0],
        [table["mode_a"], table["mode_b"], "tie"],
        default="",
    )
    table["significant"] = table["p_adjusted"] < 1 - level
    return table[COLUMNS]


def pair(comparisons: pd.DataFrame, a: str = HYPOTHESIS[0], b: str = HYPOTHESIS[1]) -> pd.DataFrame:
    """The rows of one pair, sorted by budget."""
    rows = comparisons[(comparisons["mode_a"] == a) & (comparisons["mode_b"] == b)]
    return rows.sort_values("budget").reset_index(drop=True)


@dataclass(frozen=True)
class Switch:
    """The better mode (lower mean) changes from ``below`` to ``above`` at ``budget``, between
    the grid budgets ``low`` and ``high`` (``sign_changes``). ``evidence``: the nearest budgets
    below and above with a significant difference, when they favour ``below`` and ``above``
    (then the switch is significant), else None."""

    budget: float
    below: str
    above: str
    low: float
    high: float
    evidence: tuple[float, float] | None = None

    @property
    def significant(self) -> bool:
        return self.evidence is not None


def sign_changes(budgets: Sequence[float], diffs: Sequence[float]) -> list[tuple[int, int, float]]:
    """The crossing rule, the one place that says where two modes cross: each sign change of
    ``diffs`` (a - b, known, along the sorted ``budgets``) as (i, j, b), i and j the last budget
    before it and the first after it with a non-zero difference; b interpolates the zero
    linearly between them, or is the middle of the ties between them. A tie between budgets that
    favour the same mode is no crossing, nor is a tie at either end of the grid."""
    signed = [(i, d) for i, d in enumerate(diffs) if d != 0]
    found = []
    for (i, d0), (j, d1) in zip(signed, signed[1:], strict=False):
        if d0 * d1 > 0:
            continue
        if j > i + 1:  # tied in between: the middle of the ties
            at = (budgets[i + 1] + budgets[j - 1]) / 2
        else:
            at = budgets[i] + (budgets[j] - budgets[i]) * d0 / (d0 - d1)
        found.append((i, j, at))
    return found


def crossings(budgets: Sequence[float], a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Budgets where the curves a and b cross (``sign_changes``; NaN points left out)."""
    known = [(x, u - v) for x, u, v in zip(budgets, a, b, strict=True) if pd.notna(u - v)]
    return [at for _, _, at in sign_changes([x for x, _ in known], [d for _, d in known])]


def switches(rows: pd.DataFrame) -> list[Switch]:
    """Where the better mode of one pair's rows changes, with the evidence on either side."""
    known = rows[rows["diff"].notna()].sort_values("budget")
    budgets, better = known["budget"].to_list(), known["better"].to_list()
    found = []
    for i, j, at in sign_changes(budgets, known["diff"].to_list()):
        switch = Switch(at, better[i], better[j], budgets[i], budgets[j])
        found.append(replace(switch, evidence=evidence(known, switch)))
    return found


def evidence(rows: pd.DataFrame, switch: Switch) -> tuple[float, float] | None:
    """The nearest significant budgets either side of a switch, if they favour its two modes."""
    significant = rows[rows["significant"]]
    below = significant[significant["budget"] < switch.budget]
    above = significant[significant["budget"] > switch.budget]
    if below.empty or above.empty:
        return None
    last, first = below.iloc[-1], above.iloc[0]
    if last["better"] == switch.below and first["better"] == switch.above:
        return float(last["budget"]), float(first["budget"])
    return None


def agreement(rows: pd.DataFrame, boundary: float = BOUNDARY) -> str:
    """The agreement of the SenseMode-Uniform rows with the hypothesis, from their significant
    (Holm-adjusted) differences: any the other way round does not agree."""
    if rows["p_value"].isna().all():
        return "cannot be tested"
    significant = rows[rows["significant"]]
    small = significant["budget"] < boundary
    sense, uniform = (significant["better"] == mode for mode in HYPOTHESIS)
    if (sense & ~small).any() or (uniform & small).any():
        return "does not agree"
    if (sense & small).any() and (uniform & ~small).any():
        return "agrees"
    if significant.empty:
        return "no significant difference"
    return "partly agrees"


def budget_list(budgets: Sequence[float], grid: Sequence[float]) -> str:
    """'0.1, 0.3, 0.5–0.9': runs of three or more neighbours on ``grid`` as a range."""
    grid = sorted(grid)
    index = sorted(grid.index(b) for b in budgets)
    steps = itertools.groupby(enumerate(index), lambda pair: pair[1] - pair[0])
    runs = [[i for _, i in run] for _, run in steps]  # neighbours share i - their position
    return ", ".join(
        f"{grid[r[0]]:g}–{grid[r[-1]]:g}" if len(r) >= 3 else ", ".join(f"{grid[i]:g}" for i in r)
        for r in runs
    )


def wins(rows: pd.DataFrame, mode: str, other: str, alpha: float) -> str:
    """ "SenseMode's mean below Uniform's at b = 0.1, 0.2 (p_Holm < 0.05 at 0.1)", or '' if it
    never is: a mean, not a conclusion, unless the test beside it is significant."""
    better = rows[rows["better"] == mode]
    if better.empty:
        return ""
    grid = rows["budget"].to_list()
    significant = better.loc[better["significant"], "budget"]
    where = f" (p_Holm < {alpha:g} at {budget_list(significant, grid)})" if len(significant) else ""
    at = budget_list(better["budget"], grid)
    return f"{name(mode)}'s mean below {name(other)}'s at b = {at}{where}"


def sentence(rows: pd.DataFrame, found: list[Switch], outcome: str, alpha: float) -> str:
    """Which mode wins where, where significantly, the switch, and the outcome."""
    a, b = HYPOTHESIS
    if rows.empty:
        return (
            f"{name(a)} and {name(b)} do not both have finished runs: "
            "the Budget Hypothesis cannot be tested."
        )
    parts = [w for w in (wins(rows, a, b, alpha), wins(rows, b, a, alpha)) if w]
    grid = rows["budget"].to_list()
    ties = rows.loc[rows["better"] == "tie", "budget"]
    if len(ties):
        parts.append(f"equal means at b = {budget_list(ties, grid)}")
    tested = rows[rows["p_value"].notna()]
    plain = tested.loc[~tested["significant"], "budget"]
    if len(plain):
        parts.append(f"not significant at b = {budget_list(plain, grid)} (p_Holm >= {alpha:g})")
    untested = rows[rows["p_value"].isna()]
    if len(untested):
        reasons = "; ".join(sorted(set(untested["note"].str.removeprefix("no test: "))))
        parts.append(f"no test at {budget_list(untested['budget'], grid)} ({reasons})")
    text = "; ".join(parts)
    if found:
        where = ", ".join(switch_text(s) for s in found)
        text += f"; the better mode switches {where}"
    else:
        text += "; the better mode does not switch on this grid"
    return f"{text}. {closing(outcome, int(tested['budget'].nunique()))}"


def switch_text(switch: Switch) -> str:
    """'between b = 0.4 and 0.5 (SenseMode to Uniform, not significant)'."""
    below, above, evidence = name(switch.below), name(switch.above), "not significant"
    if switch.significant:
        last, first = switch.evidence
        evidence = f"significant: {below} at {last:g}, {above} at {first:g}"
    return f"between b = {switch.low:g} and {switch.high:g} ({below} to {above}, {evidence})"


def closing(outcome: str, budgets: int) -> str:
    """The descriptive view's outcome as a sentence of its own."""
    if outcome == "cannot be tested":
        return "The Budget Hypothesis cannot be tested."
    if outcome == "no significant difference":
        return (
            f"No difference is significant after Holm's adjustment over the {budgets} budgets, "
            "so this neither supports nor contradicts the Budget Hypothesis."
        )
    return f"This {outcome} with the Budget Hypothesis."
