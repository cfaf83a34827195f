"""Does a grid of runs agree with the Budget Hypothesis (Sec. 5)? A verdict from the seeds.

The hypothesis (Sec. 5): "Assuming L >> 1, the uniform mode outperforms SenseMode in the large
budget regime, while SenseMode outperforms the uniform mode in the small budget regime"; Sec. 6
reads Table 2 with the regimes split at b = L_bar/L = 0.5 (small: b < 0.5, large: b >= 0.5). It
predicts a sign reversal of err(SenseMode) - err(Uniform), nothing about where it happens.

Input: the finished runs of ONE setup, a DataFrame with columns ``mode``, ``budget``, ``seed``
and ``value`` (the test metric, lower is better: an error in % or an MSE); the no-SD baseline
(mode ``none``) is not compared.

**The test the hypothesis states** (``paired``): runs that share a seed share the
initialisation, the data order and the gate's random stream, so the modes are compared seed by
seed, d_s(b) = value(SenseMode, b, s) - value(Uniform, b, s). A regime's per-seed contrast is
the mean of d_s(b) over the regime's budgets (seed-clustered; with one budget per regime, the
paired difference at that budget); only seeds with both modes at every budget of the regime
count (the others are named in ``note``). The regimes are pre-registered budgets (``small``,
``large``), by default the grid split at ``boundary`` = 0.5. Per regime, over its n seeds:

- ``effect``: the mean contrast, with its two-sided t confidence interval at ``level``;
- one-sided tests in the predicted direction (small: d < 0, SenseMode better; large: d > 0,
  Uniform better): the paired t-test (``p_t``, ``scipy.stats.ttest_1samp``) and the exact
  sign-flip permutation test over all 2^n sign flips (``p_perm``, ``sign_flip_p``); the same two
  the other way round (``p_t_reverse``, ``p_perm_reverse``);
- a regime's ``conclusion``: ``as predicted`` when BOTH its tests are below alpha = 1 - level
  (the conservative choice: neither test's assumptions, normality for t, symmetry of d under the
  null for the sign flips, carries the result alone); ``reversed`` when both tests the other way
  are; otherwise ``equivalent`` when the equivalence test shows |mean d| < ``margin`` (TOST: two
  one-sided t-tests against -margin and +margin, ``p_tost`` the larger p, below alpha), else
  ``cannot tell``; ``no test`` below 2 seeds or when every seed has the same d (zero variance:
  the t statistic is undefined or infinite, and it would carry no information about the noise).

The outcome (``PAIRED_OUTCOMES``): ``supports`` when both regimes are as predicted (two
pre-registered tests that must both reject: an intersection-union test, no adjustment, and no
family over the grid's budgets); ``contradicts`` when either regime is reversed; otherwise a null
result, ``equivalent`` when some regime shows the modes equivalent (the predicted difference,
at least ``margin``, is not there), ``undecided`` when the data cannot tell, ``cannot be tested``
when no regime has a test.

**The descriptive view** (``compare``), per budget, for each pair in ``PAIRS``:

- the difference of means ``diff = mean_a - mean_b`` (negative: mode_a is better) with Welch's
  confidence interval at ``level`` and Welch's t-test p-value (``scipy.stats.ttest_ind`` with
  ``equal_var=False``), over seeds. No p-value (NaN, with a ``note`` saying why) where a side has
  fewer than 2 seeds, or where both sides have zero variance (Welch's statistic is 0/0 or
  infinite and scipy would return a p-value of 0 or NaN that means nothing).
- Multiple comparisons: raw p-values, and Holm-adjusted ones (Holm 1979, family-wise error
  <= 1 - level) within each pair's family of budgets; ``significant`` means adjusted p below
  ``alpha = 1 - level``. The confidence intervals are per budget, not adjusted, so an interval
  that excludes 0 is not always a significant difference after the adjustment.

Pairs: SenseMode against Uniform (the hypothesis) at every budget where either ran, a missing side
reported with n = 0; Linear against Uniform and SenseMode against Linear where both ran (Linear
is infeasible below (L - 1)/(2L), the paper's "-").

The switch: where the better mode of SenseMode and Uniform changes, by the sign of the mean
difference, interpolated linearly between grid budgets; a switch is significant when the
significant differences on either side of it favour the two modes (see ``switches``).

Agreement of the descriptive view (``agreement``), from the Holm-adjusted SenseMode-Uniform tests:

- ``agrees``: SenseMode significantly better at some b < 0.5, Uniform significantly better at
  some b >= 0.5, and no significant difference the other way round;
- ``partly agrees``: significant differences only in the hypothesis' direction, but in one regime;
- ``does not agree``: some significant difference the other way round (SenseMode better at
  b >= 0.5 or Uniform better at b < 0.5), whatever else holds;
- ``no significant difference``: tested (a p-value at some budget) but nothing significant;
- ``cannot be tested``: no p-value at any budget (SenseMode or Uniform not run, or < 2 seeds).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

MODE_NAMES = {"sensemode": "SenseMode", "uniform": "Uniform", "linear": "Linear"}
HYPOTHESIS = ("sensemode", "uniform")  # the Budget Hypothesis' pair (Sec. 5)
PAIRS = (HYPOTHESIS, ("linear", "uniform"), ("sensemode", "linear"))
BOUNDARY = 0.5  # Sec. 6: small budget b < 0.5, large budget b >= 0.5
COLUMNS = [
    "budget",
    "mode_a",
    "mode_b",
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "diff",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "better",
    "significant",
    "note",
]
OUTCOMES = (
    "agrees",
    "partly agrees",
    "does not agree",
    "no significant difference",
    "cannot be tested",
)


def name(mode: str) -> str:
    return MODE_NAMES.get(mode, mode)


# --- one budget, two modes ---------------------------------------------------------------------


def welch(
    a: Sequence[float], b: Sequence[float], level: float = 0.95, names: tuple[str, str] = ("a", "b")
) -> dict:
    """Mode a against mode b at one budget: n, means, diff = mean_a - mean_b, Welch's confidence
    interval for diff at ``level`` and Welch's two-sided t-test p-value; NaN where undefined,
    with the reason in ``note`` (the modes called ``names``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    mean_a = a.mean() if len(a) else math.nan
    mean_b = b.mean() if len(b) else math.nan
    row = {
        "n_a": len(a),
        "n_b": len(b),
        "mean_a": mean_a,
        "mean_b": mean_b,
        "diff": mean_a - mean_b,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "p_value": math.nan,
        "note": "",
    }
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


# --- all budgets, all pairs --------------------------------------------------------------------


def compare(runs: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per budget and pair of ``PAIRS`` (columns ``COLUMNS``): ``welch`` on the seeds,
    Holm-adjusted within each pair, ``better`` the mode with the lower mean, ``significant``
    adjusted p < 1 - level. See the module docstring for which budgets each pair is compared at."""
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
        frame = pd.DataFrame(
            {
                "budget": x,
                "mode_a": a,
                "mode_b": b,
                **welch(values.get((a, x), []), values.get((b, x), []), level, (name(a), name(b))),
            }
            for x in sorted(budgets)
        )
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


# --- where the better mode switches -----------------------------------------------------------


@dataclass(frozen=True)
class Switch:
    """The better mode (lower mean) changes from ``below`` to ``above`` at ``budget``, the zero
    of the mean difference interpolated linearly between the grid budgets ``low`` and ``high``
    (with ties at grid budgets between them: the middle of the tied budgets). ``evidence``: the
    nearest budgets below and above with a significant difference, when they favour ``below``
    and ``above`` respectively (then the switch is significant), else None."""

    budget: float
    below: str
    above: str
    low: float
    high: float
    evidence: tuple[float, float] | None = None

    @property
    def significant(self) -> bool:
        return self.evidence is not None


def switches(rows: pd.DataFrame) -> list[Switch]:
    """Sign changes of ``diff`` along the budgets of one pair's rows (``pair``), tied budgets
    (diff = 0) skipped; a tie between two budgets favouring the same mode is no switch."""
    known = rows[rows["diff"].notna()].sort_values("budget")
    budgets, diffs = known["budget"].to_list(), known["diff"].to_list()
    signed = [(i, d) for i, d in enumerate(diffs) if d != 0]
    found = []
    for (i, d0), (j, d1) in zip(signed, signed[1:], strict=False):
        if d0 * d1 > 0:
            continue
        if j > i + 1:  # tied in between: the middle of the ties
            at = (budgets[i + 1] + budgets[j - 1]) / 2
        else:
            at = budgets[i] + (budgets[j] - budgets[i]) * d0 / (d0 - d1)
        better = known["better"].to_list()
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


# --- the verdict -------------------------------------------------------------------------------


def agreement(rows: pd.DataFrame, boundary: float = BOUNDARY) -> str:
    """One of ``OUTCOMES`` from the SenseMode-Uniform rows (module docstring: the rule)."""
    if rows["p_value"].isna().all():
        return "cannot be tested"
    significant = rows[rows["significant"]]
    small = significant["budget"] < boundary
    sense = significant["better"] == "sensemode"
    uniform = significant["better"] == "uniform"
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
    runs: list[list[int]] = []
    for i in index:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(
        f"{grid[r[0]]:g}–{grid[r[-1]]:g}" if len(r) >= 3 else ", ".join(f"{grid[i]:g}" for i in r)
        for r in runs
    )


def wins(rows: pd.DataFrame, mode: str, other: str, alpha: float) -> str:
    """'SenseMode better at b = 0.1, 0.2 (p_Holm < 0.05 at 0.1)', or '' if it never is."""
    better = rows[rows["better"] == mode]
    if better.empty:
        return ""
    grid = rows["budget"].to_list()
    significant = better.loc[better["significant"], "budget"]
    where = f" (p_Holm < {alpha:g} at {budget_list(significant, grid)})" if len(significant) else ""
    at = budget_list(better["budget"], grid)
    return f"{name(mode)} better than {name(other)} at b = {at}{where}"


def sentence(rows: pd.DataFrame, found: list[Switch], outcome: str, alpha: float) -> str:
    """One sentence: which mode wins where (by the means), where significantly, the switch, and
    the outcome."""
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
        where = ", ".join(
            f"b ≈ {s.budget:.2f} ({name(s.below)} to {name(s.above)}"
            + (
                f", significant: {name(s.below)} at {s.evidence[0]:g}, "
                f"{name(s.above)} at {s.evidence[1]:g})"
                if s.significant
                else ", not significant)"
            )
            for s in found
        )
        text += f"; the better mode switches at {where}"
    else:
        text += "; the better mode does not switch on this grid"
    return f"{text}. {closing(outcome, int(tested['budget'].nunique()))}"


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


# --- the paired regime test (Sec. 5) -----------------------------------------------------------

SMALL, LARGE = "small", "large"
#: The mode the hypothesis predicts better in each regime, and the sign of d = SenseMode - Uniform
#: that says so (scipy's ``alternative``).
PREDICTED = {SMALL: "sensemode", LARGE: "uniform"}
ALTERNATIVE = {SMALL: "less", LARGE: "greater"}
OPPOSITE = {"less": "greater", "greater": "less"}
#: The smallest effect of interest for a test error in %: +-0.3 percentage points.
MARGIN = 0.3
CONCLUSIONS = ("as predicted", "reversed", "equivalent", "cannot tell", "no test")
PAIRED_OUTCOMES = ("supports", "contradicts", "equivalent", "undecided", "cannot be tested")
PAIRED_COLUMNS = [
    "regime",
    "budgets",
    "mode_a",
    "mode_b",
    "predicted",
    "n",
    "effect",
    "ci_low",
    "ci_high",
    "p_t",
    "p_perm",
    "p_t_reverse",
    "p_perm_reverse",
    "margin",
    "p_tost",
    "conclusion",
    "note",
]


def paired_differences(runs: pd.DataFrame) -> pd.DataFrame:
    """d_s(b) = value(SenseMode) - value(Uniform) of seed s at budget b: one row per budget and
    seed where either mode ran (columns budget, seed, sensemode, uniform, d; NaN where a mode
    did not)."""
    a, b = HYPOTHESIS
    runs = runs[runs["mode"].isin(HYPOTHESIS) & runs["value"].notna()]
    runs = runs.assign(budget=runs["budget"].astype(float).round(10))
    wide = runs.pivot(index=["budget", "seed"], columns="mode", values="value")
    wide = wide.reindex(columns=[a, b]).rename_axis(columns=None)
    return wide.assign(d=wide[a] - wide[b]).reset_index()


def regimes(
    differences: pd.DataFrame,
    small: Sequence[float] | None = None,
    large: Sequence[float] | None = None,
    boundary: float = BOUNDARY,
) -> dict[str, list[float]]:
    """The budgets of each regime: the pre-registered ones, else those of the grid where a seed
    has both modes, split at ``boundary`` (Sec. 6: small b < 0.5, large b >= 0.5)."""
    grid = sorted(differences.loc[differences["d"].notna(), "budget"].unique())
    return {
        SMALL: budget_keys(small) if small is not None else [x for x in grid if x < boundary],
        LARGE: budget_keys(large) if large is not None else [x for x in grid if x >= boundary],
    }


def budget_keys(budgets: Sequence[float]) -> list[float]:
    """Budgets as ``paired_differences`` keys them (rounded to 10 decimals), sorted."""
    return sorted({round(float(b), 10) for b in budgets})


def regime_contrast(differences: pd.DataFrame, budgets: Sequence[float]) -> tuple[np.ndarray, str]:
    """Per seed, the mean of d_s(b) over ``budgets`` (seed-clustered), for the seeds that have
    both modes at every one of them; and a note naming the seeds left out."""
    at = differences[differences["budget"].isin(budgets)]
    per_seed = at.pivot(index="seed", columns="budget", values="d").reindex(columns=budgets)
    complete = per_seed.notna().all(axis=1)
    left_out = [str(seed) for seed in per_seed.index[~complete]]
    seeds = " and ".join([", ".join(left_out[:-1]), *left_out[-1:]] if left_out[:-1] else left_out)
    note = f"left out: seed{'s' * (len(left_out) > 1)} {seeds}, not both modes at every budget"
    return per_seed[complete].mean(axis=1).to_numpy(), note if left_out else ""


def flip_sums(x: np.ndarray) -> np.ndarray:
    """All 2^len(x) sums of +-x_i."""
    sums = np.zeros(1)
    for value in x:
        sums = np.concatenate([sums + value, sums - value])
    return sums


def sign_flip_p(x: Sequence[float], alternative: str) -> float:
    """The exact one-sided p-value of the sign-flip permutation test of the paired differences
    ``x`` (H0: each d_s is as likely +|d_s| as -|d_s|): the fraction of all 2^n sign flips whose
    sum is at most (``alternative="less"``) or at least (``"greater"``) the observed sum.

    scipy's ``permutation_test(..., permutation_type="samples", n_resamples=np.inf)`` computes the
    same by enumerating the 2^n resamples: 6 to 13 s at n = 20 (scipy 1.17, a loaded 2-core CPU).
    Here the sums of the two halves' flips are enumerated (2^(n/2) each) and paired by a sorted
    search, in milliseconds. Sums within 1e-9 * sum|x| of the observed one count as equal (float
    rounding; test errors move in steps of 100/n_test, far larger)."""
    x = np.asarray(x, dtype=float)
    observed, tolerance = x.sum(), 1e-9 * np.abs(x).sum()
    half = len(x) // 2
    left, right = flip_sums(x[:half]), np.sort(flip_sums(x[half:]))
    if alternative == "less":
        count = np.searchsorted(right, observed + tolerance - left, side="right").sum()
    else:
        count = (len(right) - np.searchsorted(right, observed - tolerance - left)).sum()
    return float(count) / 2 ** len(x)


def tost(x: np.ndarray, margin: float) -> float:
    """The equivalence test's p-value (two one-sided t-tests, Schuirmann 1987): mean d > -margin
    and mean d < +margin, the larger of the two p-values."""
    above = stats.ttest_1samp(x, -margin, alternative="greater").pvalue
    below = stats.ttest_1samp(x, margin, alternative="less").pvalue
    return float(max(above, below))


def paired_test(
    x: Sequence[float], alternative: str, level: float = 0.95, margin: float | None = MARGIN
) -> dict:
    """One regime's per-seed contrasts ``x``: n, effect (mean), its two-sided t confidence
    interval at ``level``, one-sided paired t and exact sign-flip p-values in the direction
    ``alternative`` and the other way, and the TOST p-value at ``margin`` (none if None); NaN
    where undefined, with the reason in ``note``."""
    x = np.asarray(x, dtype=float)
    nan = math.nan
    row = dict(n=len(x), effect=x.mean() if len(x) else nan, ci_low=nan, ci_high=nan, p_t=nan)
    row |= dict(p_perm=nan, p_t_reverse=nan, p_perm_reverse=nan, p_tost=nan, note="")
    if len(x) < 2:
        row["note"] = f"no test: {len(x)} seed{'s' * (len(x) != 1)} with both modes"
        return row
    if 2.0 ** -len(x) >= 1 - level:
        row["note"] = (
            f"{len(x)} seeds: the sign-flip test's smallest p-value is 1/2^{len(x)} = "
            f"{2.0 ** -len(x):.3g}, not below {1 - level:g}"
        )
    row["p_perm"] = sign_flip_p(x, alternative)
    row["p_perm_reverse"] = sign_flip_p(x, OPPOSITE[alternative])
    if np.ptp(x) <= 1e-9 * np.abs(x).max():  # equal up to the float rounding of a - b
        row["note"] = f"no test: every seed has d = {x[0]:.4g}, zero variance, no t-test"
        return row
    with warnings.catch_warnings():  # near-identical seeds: scipy's precision-loss warning
        warnings.simplefilter("ignore", RuntimeWarning)
        interval = stats.ttest_1samp(x, 0.0).confidence_interval(confidence_level=level)
        row.update(ci_low=interval.low, ci_high=interval.high)
        row["p_t"] = stats.ttest_1samp(x, 0.0, alternative=alternative).pvalue
        row["p_t_reverse"] = stats.ttest_1samp(x, 0.0, alternative=OPPOSITE[alternative]).pvalue
        if margin is not None:
            row["p_tost"] = tost(x, margin)
    return row


def conclusion(row: dict, alpha: float) -> str:
    """A regime's conclusion (``CONCLUSIONS``): both tests significant, either way, first."""
    if math.isnan(row["p_t"]):
        return "no test"
    if row["p_t"] < alpha and row["p_perm"] < alpha:
        return "as predicted"
    if row["p_t_reverse"] < alpha and row["p_perm_reverse"] < alpha:
        return "reversed"
    return "equivalent" if row["p_tost"] < alpha else "cannot tell"


def contrasts(
    differences: pd.DataFrame,
    budgets: dict[str, list[float]],
    level: float = 0.95,
    margin: float | None = MARGIN,
) -> pd.DataFrame:
    """One row per regime (``PAIRED_COLUMNS``): ``paired_test`` on its per-seed contrasts."""
    rows = []
    for regime, at in budgets.items():
        x, left_out = regime_contrast(differences, at)
        row = paired_test(x, ALTERNATIVE[regime], level, margin)
        row["note"] = "; ".join(n for n in (row["note"], left_out) if n)
        if not at:
            row["note"] = f"no test: no budget in the {regime} regime"
        rows.append(
            {
                "regime": regime,
                "budgets": ", ".join(f"{b:g}" for b in at),
                "mode_a": HYPOTHESIS[0],
                "mode_b": HYPOTHESIS[1],
                "predicted": PREDICTED[regime],
                "margin": math.nan if margin is None else margin,
                "conclusion": conclusion(row, 1 - level),
                **row,
            }
        )
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def paired_outcome(conclusions: Sequence[str]) -> str:
    """The outcome (``PAIRED_OUTCOMES``) from the regimes' conclusions (module docstring)."""
    if all(c == "as predicted" for c in conclusions):
        return "supports"
    if "reversed" in conclusions:
        return "contradicts"
    if "equivalent" in conclusions:
        return "equivalent"
    if all(c == "no test" for c in conclusions):
        return "cannot be tested"
    return "undecided"


def p_text(label: str, p: float) -> str:
    """'p_t = 0.0031', 'p_t < 0.0001'."""
    return f"{label} < 0.0001" if p < 1e-4 else f"{label} = {p:.2g}"


def regime_text(row: pd.Series, level: float, unit: str) -> str:
    """'at small budgets (b = 0.2) SenseMode - Uniform = -0.53 pp (95% CI ...): ...'."""
    where = f"at {row['regime']} budgets (b = {row['budgets'] or 'none'})"
    if row["conclusion"] == "no test":
        return f"{where} no test ({row['note'].removeprefix('no test: ')})"
    u = f" {unit}" if unit else ""
    a, b = HYPOTHESIS
    better, other = name(row["predicted"]), name(b if row["predicted"] == a else a)
    margin = f"±{row['margin']:g}{u}"
    judged = {
        "as predicted": f"{better} better, as predicted",
        "reversed": f"{other} better, against the prediction",
        "equivalent": f"no significant difference, and equivalent within {margin} "
        f"({p_text('TOST p', row['p_tost'])})",
        "cannot tell": "no significant difference, "
        + (
            f"and not shown equivalent within {margin} ({p_text('TOST p', row['p_tost'])})"
            if pd.notna(row["p_tost"])
            else "and no equivalence test (no smallest effect of interest given: --margin)"
        )
        + ": the data cannot tell",
    }[row["conclusion"]]
    return (
        f"{where} SenseMode - Uniform = {row['effect']:+.3g}{u} "
        f"({level:.0%} CI {row['ci_low']:+.3g} to {row['ci_high']:+.3g}, "
        f"n = {row['n']} seeds; one-sided {p_text('p_t', row['p_t'])}, "
        f"{p_text('p_perm', row['p_perm'])}): {judged}"
    )


LEADS = {
    "supports": "Paired by seed, the runs support the Budget Hypothesis",
    "contradicts": "Paired by seed, the runs contradict the Budget Hypothesis",
    "equivalent": "Paired by seed, the runs do not support the Budget Hypothesis (a null result)",
    "undecided": "Paired by seed, the runs neither support nor contradict the Budget Hypothesis "
    "(a null result)",
    "cannot be tested": "Paired by seed, the Budget Hypothesis cannot be tested",
}


@dataclass(frozen=True)
class Paired:
    """The paired regime test of one setup's runs (see the module docstring)."""

    differences: pd.DataFrame  # budget, seed, sensemode, uniform, d
    regimes: dict[str, list[float]]  # the budgets of each regime
    contrasts: pd.DataFrame  # PAIRED_COLUMNS, one row per regime
    outcome: str  # one of PAIRED_OUTCOMES
    level: float = 0.95
    unit: str = "pp"  # of the metric's differences: percentage points of an error in %

    @property
    def sentence(self) -> str:
        if self.differences["d"].isna().all():
            return (
                f"{LEADS['cannot be tested']}: no seed has both {name(HYPOTHESIS[0])} and "
                f"{name(HYPOTHESIS[1])} runs at one budget."
            )
        regimes = "; ".join(
            regime_text(row, self.level, self.unit) for _, row in self.contrasts.iterrows()
        )
        return f"{LEADS[self.outcome]}: {regimes}."

    @property
    def stance(self) -> str:
        alpha = f"{1 - self.level:g}"
        margins = self.contrasts["margin"].dropna()
        u = f" {self.unit}" if self.unit else ""
        equivalence = (
            f"p_tost: two one-sided t-tests against ±{margins.iloc[0]:g}{u}, equivalent when "
            f"below {alpha}."
            if len(margins)
            else "No equivalence test: no smallest effect of interest given (--margin)."
        )
        return (
            "d_s(b) = SenseMode - Uniform of seed s at budget b (runs sharing a seed share the "
            "initialisation, the data order and the gate's stream); a regime's effect is the "
            "mean over seeds of each seed's mean d_s(b) over the regime's budgets, with its "
            f"{self.level:.0%} t confidence interval (two-sided). One-sided tests in the predicted "
            "direction (small: d < 0, large: d > 0): the paired t-test (p_t) and the exact "
            "sign-flip permutation test over all 2^n flips (p_perm); a regime is significant "
            f"only when both are below {alpha}, reversed when both tests the other way are. "
            "Supports: both regimes as predicted (two pre-registered tests, no adjustment); "
            f"contradicts: either reversed. {equivalence}"
        )

    def markdown(self) -> str:
        shown = self.contrasts.drop(columns=["mode_a", "mode_b", "margin"])
        shown["predicted"] = shown["predicted"].map(name)
        for column in ("effect", "ci_low", "ci_high"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
        for column in ("p_t", "p_perm", "p_t_reverse", "p_perm_reverse", "p_tost"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
        text = f"**Paired verdict:** {self.sentence}\n"
        if self.differences["d"].isna().all():
            return text
        table = shown.to_markdown(index=False, disable_numparse=True)
        return f"{text}\n{self.stance}\n\n{table}\n"

    def budget_means(self) -> pd.DataFrame:
        """Per budget: n seeds with both modes, the mean of d_s(b) and its t confidence
        interval at ``level`` (NaN below 2 seeds), for the plot."""
        d = self.differences.dropna(subset=["d"]).groupby("budget")["d"]
        means = d.agg(n="count", mean="mean", sd="std").reset_index()
        half = stats.t.ppf(0.5 + self.level / 2, means["n"] - 1) * means["sd"] / means["n"] ** 0.5
        return means.assign(ci_low=means["mean"] - half, ci_high=means["mean"] + half)


def paired(
    runs: pd.DataFrame,
    level: float = 0.95,
    boundary: float = BOUNDARY,
    small: Sequence[float] | None = None,
    large: Sequence[float] | None = None,
    margin: float | None = MARGIN,
    unit: str = "pp",
) -> Paired:
    """The paired regime test for one setup's finished runs (mode, budget, seed, value)."""
    differences = paired_differences(runs)
    budgets = regimes(differences, small, large, boundary)
    found = contrasts(differences, budgets, level, margin)
    outcome = paired_outcome(list(found["conclusion"]))
    return Paired(differences, budgets, found, outcome, level, unit)


@dataclass(frozen=True)
class Verdict:
    """The Budget Hypothesis tested on one setup's runs (see the module docstring)."""

    comparisons: pd.DataFrame  # COLUMNS, one row per budget and pair
    switches: list[Switch]  # SenseMode-Uniform
    outcome: str  # one of OUTCOMES
    sentence: str
    paired: Paired  # the test the hypothesis states: SenseMode against Uniform by regime
    level: float = 0.95
    boundary: float = BOUNDARY

    @property
    def stance(self) -> str:
        """The test, the multiple-comparison stance and the agreement rule, in two sentences."""
        return (
            f"Welch's t-test over seeds per budget; diff = mean_a - mean_b (negative: mode_a "
            f"better), {self.level:.0%} Welch confidence interval (not adjusted); p_Holm: "
            f"Holm-adjusted within each pair's budgets; significant: p_Holm < {1 - self.level:g}. "
            f"Agrees: SenseMode significantly better at some b < {self.boundary:g} and Uniform "
            f"at some b >= {self.boundary:g}, never significantly the other way round."
        )

    def markdown(self) -> str:
        """The paired verdict, then the descriptive one per budget (its sentence, stance and
        table of comparisons), for verdict.md."""
        shown = self.comparisons.assign(
            mode_a=self.comparisons["mode_a"].map(name),
            mode_b=self.comparisons["mode_b"].map(name),
            better=self.comparisons["better"].map(lambda m: name(m) if m else ""),
        )
        for column in ("mean_a", "mean_b", "diff", "ci_low", "ci_high"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
        for column in ("p_value", "p_adjusted"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
        shown["significant"] = shown["significant"].map({True: "yes", False: ""})
        shown["budget"] = shown["budget"].map(lambda v: f"{v:g}")
        lines = [self.paired.markdown(), f"**Per budget (descriptive):** {self.sentence}", ""]
        if len(shown):
            lines += [self.stance, "", shown.to_markdown(index=False, disable_numparse=True)]
        return "\n".join(lines) + "\n"


def verdict(
    runs: pd.DataFrame,
    level: float = 0.95,
    boundary: float = BOUNDARY,
    small: Sequence[float] | None = None,
    large: Sequence[float] | None = None,
    margin: float | None = MARGIN,
    unit: str = "pp",
) -> Verdict:
    """The Budget Hypothesis verdict for one setup's finished runs (mode, budget, seed, value):
    the paired regime test (regimes ``small`` and ``large``, pre-registered, else split at
    ``boundary``; equivalence within ``margin``, in ``unit``) and the per-budget view."""
    if not 0 < level < 1:
        raise ValueError(f"the confidence level must lie in (0, 1), got {level}")
    if margin is not None and not margin > 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    comparisons = compare(runs, level)
    rows = pair(comparisons)
    found = switches(rows)
    outcome = agreement(rows, boundary) if len(rows) else "cannot be tested"
    text = sentence(rows, found, outcome, 1 - level)
    tested = paired(runs, level, boundary, small, large, margin, unit)
    return Verdict(comparisons, found, outcome, text, tested, level, boundary)
