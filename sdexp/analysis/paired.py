"""The paired regime test the Budget Hypothesis states (Sec. 5; ``sdexp.analysis.hypothesis``).

Runs that share a seed share the initialisation, the data order and the gate's random stream, so
the modes are compared seed by seed: d_s(b) = value(SenseMode, b, s) - value(Uniform, b, s) (lower
is better), averaged per seed over each regime's budgets (seed-clustered; small b < ``boundary``,
large b >= it, or pre-registered). Per regime: the effect with its t interval, one-sided paired
t and sign-flip tests in the predicted direction (small: d < 0, large: d > 0), the other way, and
against the smallest effect of interest ``margin``, and Schuirmann's TOST. A test counts only when
BOTH its t and sign-flip versions are below alpha = 1 - level (neither normality nor the
symmetry of d carries a result alone). Each regime gets a class (``conclusion``), and the
classes an outcome (``paired_outcome``): an intersection-union test, no adjustment, no family
over the grid's budgets (docs/table.md explains it in full).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from sdexp.analysis import paired_text
from sdexp.analysis.hypothesis import BOUNDARY, HYPOTHESIS, LARGE, PREDICTED, SMALL, name
from sdexp.analysis.images import ImageTests

#: scipy's ``alternative`` for d = SenseMode - Uniform: the predicted mode better.
ALTERNATIVE = {SMALL: "less", LARGE: "greater"}
OPPOSITE = {"less": "greater", "greater": "less"}
#: The smallest effect of interest for a test error in %: +-0.3 percentage points.
MARGIN = 0.3
#: The sign-flip test enumerates all 2^n flips up to this n (two halves of 2^(n/2) sums, met in
#: the middle: 2^20 each at n = 40); above it, ``RANDOM_FLIPS`` seeded random flips.
EXACT_FLIPS = 40
RANDOM_FLIPS = 100_000
FLIP_SEED = 0
#: Values that differ by less than this fraction of sum|d| are equal: a test error in % comes
#: from float32 arithmetic (torchmetrics: (1 - accuracy) x 100), whose rounding reaches about
#: 1e-5 pp per run, while distinct sums of +-d differ by at least 2 x 100/n_test (0.15 pp for
#: 1,297 test images).
TOLERANCE = 1e-4
PAIRED_COLUMNS = (
    ["regime", "budgets", "mode_a", "mode_b", "predicted", "n", "effect", "ci_low", "ci_high"]
    + ["uniform_mean", "relative", "p_t", "p_perm", "p_t_reverse", "p_perm_reverse", "margin"]
    + ["p_t_margin", "p_perm_margin", "p_tost", "flips", "image_ci_low", "image_ci_high"]
    + ["conclusion", "note"]
)


def paired_differences(runs: pd.DataFrame) -> pd.DataFrame:
    """d_s(b) = SenseMode - Uniform of seed s at b, per budget and seed either mode ran."""
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
    """Each regime's budgets: the pre-registered ones, else the grid's split at ``boundary``."""
    grid = sorted(differences.loc[differences["d"].notna(), "budget"].unique())
    return {
        SMALL: budget_keys(small) if small is not None else [x for x in grid if x < boundary],
        LARGE: budget_keys(large) if large is not None else [x for x in grid if x >= boundary],
    }


def budget_keys(budgets: Sequence[float]) -> list[float]:
    """Budgets as ``paired_differences`` keys them (rounded to 10 decimals), sorted."""
    return sorted({round(float(b), 10) for b in budgets})


def regime_contrast(
    differences: pd.DataFrame, budgets: Sequence[float]
) -> tuple[pd.DataFrame, str]:
    """Per seed, the means of d_s(b) and of Uniform's value over ``budgets`` (seeds without
    both modes at every budget left out, and named in the note)."""
    at = differences[differences["budget"].isin(budgets)]
    if at.empty:
        return pd.DataFrame(columns=["d", "uniform"]), ""
    per_seed = at.pivot(index="seed", columns="budget", values=["d", "uniform"])
    d = per_seed["d"].reindex(columns=budgets)
    complete = d.notna().all(axis=1)
    left_out = [str(seed) for seed in d.index[~complete]]
    seeds = " and ".join([", ".join(left_out[:-1]), *left_out[-1:]] if left_out[:-1] else left_out)
    note = f"left out: seed{'s' * (len(left_out) > 1)} {seeds}, not both modes at every budget"
    uniform = per_seed["uniform"][complete].mean(axis=1)
    kept = pd.DataFrame({"d": d[complete].mean(axis=1), "uniform": uniform})
    return kept, note if left_out else ""


def flip_sums(x: np.ndarray) -> np.ndarray:
    """All 2^len(x) sums of +-x_i."""
    sums = np.zeros(1)
    for value in x:
        sums = np.concatenate([sums + value, sums - value])
    return sums


def sign_flip_p(x: Sequence[float], alternative: str, seed: int = FLIP_SEED) -> float:
    """The one-sided p-value of the sign-flip permutation test of the paired differences ``x``
    (H0: each d_s is as likely +|d_s| as -|d_s|): the fraction of sign flips whose sum is at
    most (``alternative="less"``) or at least (``"greater"``) the observed sum, up to
    ``TOLERANCE`` x sum|x| (float32 rounding).

    Up to ``EXACT_FLIPS`` values, exact: the two halves' 2^(n/2) flip sums met by a sorted
    search, under a second at n = 40 (scipy's ``permutation_test`` enumerates all 2^n: 6 to 13 s
    at n = 20). Above it, ``random_flip_p``."""
    x = np.asarray(x, dtype=float)
    if len(x) > EXACT_FLIPS:
        return random_flip_p(x, alternative, seed)
    observed, tolerance = x.sum(), TOLERANCE * np.abs(x).sum()
    half = len(x) // 2
    left, right = flip_sums(x[:half]), np.sort(flip_sums(x[half:]))
    if alternative == "less":
        count = np.searchsorted(right, observed + tolerance - left, side="right").sum()
    else:
        count = (len(right) - np.searchsorted(right, observed - tolerance - left)).sum()
    return float(count) / 2 ** len(x)


def random_flip_p(x: np.ndarray, alternative: str, seed: int, flips: int = RANDOM_FLIPS) -> float:
    """``sign_flip_p`` by ``flips`` random sign vectors (in chunks of 10,000), with
    p = (1 + count) / (1 + flips) (Phipson & Smyth 2010: never 0, valid)."""
    rng, observed, tolerance = np.random.default_rng(seed), x.sum(), TOLERANCE * np.abs(x).sum()
    count = 0
    for start in range(0, flips, 10_000):
        signs = rng.choice([-1.0, 1.0], size=(min(10_000, flips - start), len(x)))
        sums = signs @ x
        if alternative == "less":
            count += np.count_nonzero(sums <= observed + tolerance)
        else:
            count += np.count_nonzero(sums >= observed - tolerance)
    return (1 + count) / (1 + flips)


def tost(x: np.ndarray, margin: float) -> float:
    """The equivalence test's p-value (two one-sided t-tests, Schuirmann 1987)."""
    above = stats.ttest_1samp(x, -margin, alternative="greater").pvalue
    below = stats.ttest_1samp(x, margin, alternative="less").pvalue
    return float(max(above, below))


def paired_test(
    x: Sequence[float], alternative: str, level: float = 0.95, margin: float | None = MARGIN
) -> dict:
    """One regime's per-seed contrasts ``x``: n, effect, its two-sided t interval at ``level``,
    one-sided t and sign-flip p-values towards ``alternative``, the other way, and beyond the
    ``margin`` (H0: no further than it), and TOST's (without a ``margin``, neither of the last);
    NaN where undefined, the reason in ``note``."""
    x = np.asarray(x, dtype=float)
    row = dict.fromkeys(PAIRED_COLUMNS[PAIRED_COLUMNS.index("ci_low") :], math.nan)
    row |= dict(n=len(x), effect=x.mean() if len(x) else math.nan, note="", flips="")
    if len(x) < 2:
        row["note"] = f"no test: {len(x)} seed{'s' * (len(x) != 1)} with both modes"
        return row
    if 2.0 ** -len(x) >= 1 - level:
        row["note"] = (
            f"{len(x)} seeds: the sign-flip test's smallest p-value is 1/2^{len(x)} = "
            f"{2.0 ** -len(x):.3g}, not below {1 - level:g}"
        )
    exact = len(x) <= EXACT_FLIPS  # how sign_flip_p tests them
    row["flips"] = f"all 2^{len(x)}" if exact else f"{RANDOM_FLIPS} random (seed {FLIP_SEED})"
    row["p_perm"] = sign_flip_p(x, alternative)
    row["p_perm_reverse"] = sign_flip_p(x, OPPOSITE[alternative])
    if np.ptp(x) <= TOLERANCE * np.abs(x).max():  # equal up to the float32 rounding
        row["note"] = f"no test: every seed has d = {x[0]:.4g}, zero variance, no t-test"
        return row
    with warnings.catch_warnings():  # near-identical seeds: scipy's precision-loss warning
        warnings.simplefilter("ignore", RuntimeWarning)
        interval = stats.ttest_1samp(x, 0.0).confidence_interval(confidence_level=level)
        row.update(ci_low=interval.low, ci_high=interval.high)
        row["p_t"] = stats.ttest_1samp(x, 0.0, alternative=alternative).pvalue
        row["p_t_reverse"] = stats.ttest_1samp(x, 0.0, alternative=OPPOSITE[alternative]).pvalue
        if margin is not None:
            beyond = margin if alternative == "greater" else -margin
            row["p_t_margin"] = stats.ttest_1samp(x, beyond, alternative=alternative).pvalue
            row["p_perm_margin"] = sign_flip_p(x - beyond, alternative)
            row["p_tost"] = tost(x, margin)
    return row


def conclusion(row: dict, alpha: float) -> str:
    """A regime's class, the first that holds: no test (under 2 seeds, zero variance); as
    predicted (significant, and beyond the margin, or without one); negligible (significant,
    and equivalent by TOST); opposite (significant the other way); equivalent; inconclusive."""
    if math.isnan(row["p_t"]):
        return "no test"
    equivalent = row["p_tost"] < alpha  # False without a margin (NaN)
    if row["p_t"] < alpha and row["p_perm"] < alpha:
        if math.isnan(row["p_t_margin"]) or max(row["p_t_margin"], row["p_perm_margin"]) < alpha:
            return "as predicted"
        return "negligible" if equivalent else "inconclusive"
    if row["p_t_reverse"] < alpha and row["p_perm_reverse"] < alpha:
        return "opposite"
    return "equivalent" if equivalent else "inconclusive"


def contrasts(
    differences: pd.DataFrame,
    budgets: dict[str, list[float]],
    level: float = 0.95,
    margin: float | None = MARGIN,
    images: ImageTests | None = None,
) -> pd.DataFrame:
    """One row per regime (``PAIRED_COLUMNS``): ``paired_test`` on its per-seed contrasts."""
    rows, (a, b) = [], HYPOTHESIS
    for regime, at in budgets.items():
        per_seed, left_out = regime_contrast(differences, at)
        row = paired_test(per_seed["d"], ALTERNATIVE[regime], level, margin)
        row["note"] = "; ".join(n for n in (row["note"], left_out) if n)
        if not at:
            row["note"] = f"no test: no budget in the {regime} regime"
        if len(per_seed):
            row["uniform_mean"] = per_seed["uniform"].mean()
            row["relative"] = 100 * row["effect"] / row["uniform_mean"]
        if images is not None and len(per_seed) >= 2:
            row["image_ci_low"], row["image_ci_high"] = images.interval(list(per_seed.index), at)
        row["conclusion"] = conclusion(row, 1 - level)
        row["margin"] = math.nan if margin is None else margin
        row["budgets"] = ", ".join(f"{b:g}" for b in at)
        row.update(regime=regime, predicted=PREDICTED[regime], mode_a=a, mode_b=b)
        rows.append(row)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def paired_outcome(classes: Sequence[str]) -> str:
    """The outcome from the regimes' classes: the first that holds."""
    if "opposite" in classes:
        return "contradicts"
    if all(c == "as predicted" for c in classes):
        return "supports"
    if "as predicted" in classes:
        return "supports one regime"
    if "negligible" in classes or "equivalent" in classes:
        return "does not support"
    if all(c == "no test" for c in classes):
        return "cannot be tested"
    return "inconclusive"


@dataclass(frozen=True)
class Paired:
    """The paired regime test of one setup's runs, in words by ``paired_text``."""

    differences: pd.DataFrame  # budget, seed, sensemode, uniform, d
    regimes: dict[str, list[float]]  # the budgets of each regime
    contrasts: pd.DataFrame  # PAIRED_COLUMNS, one row per regime
    outcome: str  # paired_outcome's
    level: float = 0.95
    unit: str = "pp"  # of the metric's differences: percentage points of an error in %
    images: ImageTests | None = None  # the per-image predictions, where every run has them
    mcnemar: pd.DataFrame = field(default_factory=pd.DataFrame)  # per budget and seed pair

    @property
    def sentence(self) -> str:
        if self.differences["d"].isna().all():
            lead, (a, b) = paired_text.LEADS["cannot be tested"], map(name, HYPOTHESIS)
            return f"Paired by seed, {lead}: no seed has both {a} and {b} runs at one budget."
        return paired_text.sentence(self.contrasts, self.outcome, self.level, self.unit)

    def markdown(self) -> str:
        if self.differences["d"].isna().all():
            return f"**Paired verdict:** {self.sentence}\n"
        return paired_text.markdown(
            self.contrasts,
            self.outcome,
            self.level,
            self.unit,
            self.images is not None,
            self.mcnemar,
        )

    def budget_means(self) -> pd.DataFrame:
        """Per budget: n seeds, the mean of d_s(b) and its t interval (NaN below 2 seeds)."""
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
    images: ImageTests | None = None,
) -> Paired:
    """The paired regime test for one setup's finished runs (mode, budget, seed, value)."""
    if margin is not None and not margin > 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    differences = paired_differences(runs)
    budgets = regimes(differences, small, large, boundary)
    found = contrasts(differences, budgets, level, margin, images)
    outcome = paired_outcome(list(found["conclusion"]))
    mcnemar = images.mcnemar() if images is not None else pd.DataFrame()
    return Paired(differences, budgets, found, outcome, level, unit, images, mcnemar)
