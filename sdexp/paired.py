"""The paired regime test the Budget Hypothesis states (Sec. 5; ``sdexp.hypothesis``).

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
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from sdexp.hypothesis import BOUNDARY, HYPOTHESIS, LARGE, PREDICTED, SMALL, name

#: scipy's ``alternative`` for d = SenseMode - Uniform in each regime: the sign that says the
#: predicted mode is better.
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
    if margin is not None and not margin > 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    differences = paired_differences(runs)
    budgets = regimes(differences, small, large, boundary)
    found = contrasts(differences, budgets, level, margin)
    outcome = paired_outcome(list(found["conclusion"]))
    return Paired(differences, budgets, found, outcome, level, unit)
