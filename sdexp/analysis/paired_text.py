"""The paired regime test's result as text (``sdexp.analysis.paired``): its sentence, how it was
tested (the stance), and the markdown of ``verdict.md``."""

from __future__ import annotations

import pandas as pd

from sdexp.analysis.hypothesis import HYPOTHESIS, name

#: The paired verdict's first words by outcome, after "Paired by seed, ".
LEADS = {
    "supports": "the runs support the Budget Hypothesis",
    "supports one regime": "the runs support the Budget Hypothesis in one regime only",
    "does not support": "the runs do not support the Budget Hypothesis (a null result)",
    "contradicts": "the runs contradict the Budget Hypothesis",
    "inconclusive": "the runs neither support nor contradict the Budget Hypothesis (inconclusive)",
    "cannot be tested": "the Budget Hypothesis cannot be tested",
}
NO_IMAGES = (
    "No per-image predictions (predictions.csv) for every run compared: the intervals are over "
    "seeds only, without the test set's sampling noise, and there is no McNemar test."
)


def p_text(label: str, p: float) -> str:
    """'p_t = 0.0031', 'p_t < 0.0001'."""
    return f"{label} < 0.0001" if p < 1e-4 else f"{label} = {p:.2g}"


def judged(row: pd.Series, unit: str, alpha: float) -> str:
    """A regime's class in words, with the tests that decided it."""
    a, b = HYPOTHESIS
    better, other = name(row["predicted"]), name(b if row["predicted"] == a else a)
    u = f" {unit}" if unit else ""
    margin = f"±{row['margin']:g}{u}"
    beyond = (
        f"beyond the margin: {p_text('p_t', row['p_t_margin'])}, "
        f"{p_text('p_perm', row['p_perm_margin'])}"
    )
    tost = p_text("TOST p", row["p_tost"]) if pd.notna(row["p_tost"]) else ""
    if row["conclusion"] == "as predicted":
        if pd.isna(row["margin"]):
            return f"{better} better, as predicted (no smallest effect of interest: --margin)"
        return f"{better} better by more than {row['margin']:g}{u}, as predicted ({beyond})"
    if row["conclusion"] == "negligible":
        return f"{better} better, as predicted, but negligible: within {margin} ({tost})"
    if row["conclusion"] == "opposite":
        return f"{other} better, against the prediction"
    if row["conclusion"] == "equivalent":
        return f"no significant difference, and equivalent within {margin} ({tost})"
    if row["p_t"] < alpha and row["p_perm"] < alpha:
        return (
            f"{better} better, as predicted, but of undetermined size: neither shown beyond "
            f"{row['margin']:g}{u} ({beyond}) nor within ±{row['margin']:g}{u} ({tost}): "
            "inconclusive"
        )
    if not tost:
        return "no significant difference, and no equivalence test (--margin): inconclusive"
    return (
        f"no significant difference, and not shown equivalent within {margin} ({tost}): "
        "inconclusive"
    )


def regime_text(row: pd.Series, level: float, unit: str) -> str:
    """'at small budgets (b = 0.2) SenseMode - Uniform = -0.87 pp, -37% of Uniform's ...'."""
    where = f"at {row['regime']} budgets (b = {row['budgets'] or 'none'})"
    if row["conclusion"] == "no test":
        return f"{where} no test ({row['note'].removeprefix('no test: ')})"
    u = f" {unit}" if unit else ""
    images = (
        f"; with the test set's noise, bootstrap over seeds and images: "
        f"{row['image_ci_low']:+.3g} to {row['image_ci_high']:+.3g}"
        if pd.notna(row["image_ci_low"])
        else ""
    )
    return (
        f"{where} SenseMode - Uniform = {row['effect']:+.3g}{u}, {row['relative']:+.2g}% of "
        f"Uniform's mean {row['uniform_mean']:.3g} ({level:.0%} CI {row['ci_low']:+.3g} to "
        f"{row['ci_high']:+.3g}{images}; n = {row['n']} pairs; one-sided "
        f"{p_text('p_t', row['p_t'])}, {p_text('p_perm', row['p_perm'])}): "
        f"{judged(row, unit, 1 - level)}"
    )


def sentence(contrasts: pd.DataFrame, outcome: str, level: float, unit: str) -> str:
    """The paired verdict in one sentence: the outcome, then each regime."""
    regimes = "; ".join(regime_text(row, level, unit) for _, row in contrasts.iterrows())
    return f"Paired by seed, {LEADS[outcome]}: {regimes}."


def stance(contrasts: pd.DataFrame, level: float, unit: str) -> str:
    """How the paired test was run and decided, in a paragraph."""
    alpha = f"{1 - level:g}"
    margins = contrasts["margin"].dropna()
    u = f" {unit}" if unit else ""
    flips = ", ".join(sorted({f for f in contrasts["flips"] if f}))
    rule = (
        f"As predicted: significant in the predicted direction and beyond ±{margins.iloc[0]:g}{u} "
        f"(the same two one-sided tests against the margin: p_t_margin, p_perm_margin); "
        f"negligible: significant and equivalent (TOST: two one-sided t-tests against "
        f"±{margins.iloc[0]:g}{u}, p_tost); equivalent: not significant either way and "
        f"equivalent; opposite: significant the other way; else inconclusive."
        if len(margins)
        else "No smallest effect of interest (--margin): as predicted when significant in the "
        "predicted direction, opposite the other way, else inconclusive."
    )
    return (
        "d_s(b) = SenseMode - Uniform of seed s at budget b (runs sharing a seed share the "
        "initialisation, the data order and the gate's stream); a regime's effect is the "
        "mean over seeds of each seed's mean d_s(b) over the regime's budgets, with its "
        f"{level:.0%} t confidence interval (two-sided), and in % of Uniform's mean. One-sided "
        "tests in the predicted direction (small: d < 0, large: d > 0): the paired t-test (p_t) "
        f"and the sign-flip permutation test (p_perm; flips: {flips or 'none'}); a test counts "
        f"only when both are below {alpha}. {rule} Supports: both regimes as predicted; "
        "supports one regime: one as predicted, the other not opposite; contradicts: either "
        "opposite; does not support: none as predicted, one negligible or equivalent."
    )


def mcnemar_text(mcnemar: pd.DataFrame, level: float) -> str:
    """Per budget: how many seed pairs McNemar's exact test finds different, and which way."""
    alpha = 1 - level
    parts = []
    for budget, rows in mcnemar.groupby("budget"):
        low = rows[rows["p_value"] < alpha]
        a_worse = int((low["only_a_wrong"] > low["only_b_wrong"]).sum())
        parts.append(
            f"at b = {budget:g}, {len(low)} of {len(rows)} seed pairs below {alpha:g} "
            f"({a_worse} with SenseMode wrong more often, {len(low) - a_worse} Uniform)"
        )
    return (
        "McNemar's exact test per seed pair (two-sided binomial test of the images only one "
        "mode got wrong): " + "; ".join(parts) + "."
    )


def markdown(
    contrasts: pd.DataFrame,
    outcome: str,
    level: float,
    unit: str,
    images: bool,
    mcnemar: pd.DataFrame,
) -> str:
    """The paired verdict for verdict.md: sentence, test set's noise, stance, table."""
    shown = contrasts.drop(columns=["mode_a", "mode_b", "margin"])
    shown["predicted"] = shown["predicted"].map(name)
    numbers = ("effect", "ci_low", "ci_high", "uniform_mean", "relative")
    for column in (*numbers, "image_ci_low", "image_ci_high"):
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    for column in [c for c in shown.columns if c.startswith("p_")]:
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    if not images:
        shown = shown.drop(columns=["image_ci_low", "image_ci_high"])
    text = f"**Paired verdict:** {sentence(contrasts, outcome, level, unit)}\n"
    noise = mcnemar_text(mcnemar, level) if len(mcnemar) else "" if images else NO_IMAGES
    table = shown.to_markdown(index=False, disable_numparse=True)
    return "\n".join(
        [text, *([noise, ""] if noise else []), stance(contrasts, level, unit), "", table, ""]
    )
