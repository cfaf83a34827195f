"""SenseMode's variants against each other, paired by seed (``mode.batches=64`` against
``mode.batches=8``, say): the test of their difference, not a comparison of how significant each
is against Uniform (a difference in significance is not a significant difference). Per budget
and pair of variants, over the seeds that ran both: d_s = value(a) - value(b), its mean, t
interval, two-sided paired t-test and sign-flip test.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from sdexp.analysis.paired import sign_flip_p

VARIANT_COLUMNS = ["budget", "variant_a", "variant_b", "n", "effect", "ci_low", "ci_high"]
VARIANT_COLUMNS += ["p_t", "p_perm"]


def two_sided(x: np.ndarray, level: float) -> dict:
    """n, mean, t interval, two-sided t and sign-flip p-values of the paired differences ``x``."""
    row = {"n": len(x), "effect": x.mean() if len(x) else math.nan}
    row |= dict.fromkeys(["ci_low", "ci_high", "p_t", "p_perm"], math.nan)
    if len(x) < 2 or np.ptp(x) == 0:
        return row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_1samp(x, 0.0)
        interval = test.confidence_interval(confidence_level=level)
    # two-sided: twice the smaller one-sided p, at most 1 (the flips' distribution is symmetric)
    p_perm = min(1.0, 2 * min(sign_flip_p(x, "less"), sign_flip_p(x, "greater")))
    return row | dict(ci_low=interval.low, ci_high=interval.high, p_t=test.pvalue, p_perm=p_perm)


def variant_contrasts(sense: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per budget and pair of SenseMode's variants (``VARIANT_COLUMNS``)."""
    sense = sense.assign(budget=sense["budget"].astype(float).round(10))
    wide = sense.pivot(index=["budget", "seed"], columns="variant", values="value")
    rows = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        for budget, part in wide[[a, b]].dropna().groupby(level="budget"):
            d = (part[a] - part[b]).to_numpy()
            rows.append({"budget": budget, "variant_a": a, "variant_b": b, **two_sided(d, level)})
    return pd.DataFrame(rows, columns=VARIANT_COLUMNS)


def variant_text(contrasts: pd.DataFrame, level: float, unit: str) -> str:
    """'**SenseMode (batches=64) - SenseMode (batches=8)**, paired by seed: at b = 0.2 ...'."""
    u = f" {unit}" if unit else ""
    parts = []
    for (a, b), rows in contrasts.groupby(["variant_a", "variant_b"], sort=False):
        at = "; ".join(
            f"at b = {r.budget:g} {r.effect:+.3g}{u} ({level:.0%} CI {r.ci_low:+.3g} to "
            f"{r.ci_high:+.3g}, n = {r.n} seeds; two-sided p_t = {r.p_t:.2g}, "
            f"p_perm = {r.p_perm:.2g})"
            for r in rows.itertuples()
        )
        parts.append(f"**SenseMode ({a}) - SenseMode ({b})**, paired by seed: {at}.")
    return "\n\n".join(parts)
