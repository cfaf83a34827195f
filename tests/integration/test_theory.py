"""The theory experiments (``python -m sdexp.theory``): their quick variants, run in process as
configured (normality's trains with a Lightning Trainer), assert the paper's results where the
theory is exact or tight at that size (the probes alone: tests/unit/test_theory.py; the command
line: tests/e2e/test_theory.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sdexp.theory import normality, regularizer
from sdexp.theory.probes import survival
from sdexp.theory.task import run_theory
from tests.helpers import compose_theory


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Each quick variant, run once through the task function, with its output directory."""
    cache = {}

    def get(experiment: str):
        if experiment not in cache:
            out = tmp_path_factory.mktemp(experiment)
            cache[experiment] = run_theory(compose_theory(experiment, out)), out
        return cache[experiment]

    return get


# --- configs and files ---------------------------------------------------------------------------


@pytest.mark.parametrize("experiment", ["depth", "gradient", "regularizer", "normality"])
def test_quick_variant_writes_csv_png_and_summary(experiment, outcomes):
    outcome, out = outcomes(f"{experiment}_quick")
    for key, frame in outcome.tables.items():
        assert (out / f"{key}.csv").stat().st_size > 0 and len(frame) > 0
    assert (out / f"{experiment}.png").read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    assert "Wall time" in summary and "|---|" in summary
    assert outcome.metrics["wall_time_s"] > 0


# --- Lemma 1 (depth) -----------------------------------------------------------------------------


def test_depth_is_poisson_binomial(outcomes):
    outcome, _ = outcomes("depth_quick")
    moments = outcome.tables["moments"]
    for row in moments.itertuples():
        p = survival(row.mode, 0.5, 100).numpy()
        assert row.exact_mean == pytest.approx(p.sum(), abs=1e-9)
        assert row.exact_variance == pytest.approx((p * (1 - p)).sum(), rel=1e-9)
        num_masks = outcome.tables["distribution"][f"sampled_{row.mode}"].sum()  # sums to 1
        se = np.sqrt(row.variance / 5000)
        assert num_masks == pytest.approx(1.0)
        assert abs(row.sampled_mean - row.expected_depth) < 4 * se


def test_lemma1_bound_covers_the_exact_quantiles(outcomes):
    bounds = outcomes("depth_quick")[0].tables["bounds"]
    assert (bounds.lemma1_bound >= bounds.exact_quantile).all()


def test_uniform_mode_has_the_largest_variance(outcomes):
    variances = outcomes("depth_quick")[0].tables["variances"]
    assert np.allclose(variances.mean_survival, 0.5)
    uniform = variances[variances["mode"] == "uniform"]
    others = variances[variances["mode"] != "uniform"]
    assert uniform.variance.item() == pytest.approx(100 * 0.5 * 0.5)
    assert (others.variance < uniform.variance.item()).all()
    assert (others["lemma1_bound_beta_0.05"] < uniform["lemma1_bound_beta_0.05"].item()).all()


# --- Prop. 1 (gradient) --------------------------------------------------------------------------


def test_gradient_growth_matches_prop1(outcomes):
    """Growth at l = 0 of ResNet20, width 128: 2 (standard), 1 + b (uniform), linear's theory."""
    frame = outcomes("gradient_quick")[0].tables["gradient"]
    plain = frame[(frame.scaling == "plain") & (frame.layer == 0)]
    expected = {("none", 1.0): 2.0, ("uniform", 0.5): 1.5, ("uniform", 0.7): 1.7}
    for (mode, budget), growth in expected.items():
        row = plain[(plain["mode"] == mode) & (plain.budget == budget)]
        assert row.growth.item() == pytest.approx(growth, rel=0.03)
        assert row.growth_theory.item() == pytest.approx(growth)
    linear = plain[plain["mode"] == "linear"]
    assert (linear.relative_error.abs() < 0.03).all()
    stable = frame[(frame.scaling == "stable") & (frame.layer == 0)]
    assert np.allclose(stable.q, stable.q_theory, rtol=0.05)
    assert (stable.q_theory <= np.exp(stable.budget) + 1e-12).all()  # bounded: at most e^b


# --- Theorem 1 and eq. 6 (regularizer) -----------------------------------------------------------


@pytest.mark.parametrize("stable", [True, False])
def test_expected_regularizer_is_flat_across_layers(stable, outcomes, tmp_path):
    """Theorem 1. Without the 1/sqrt(L) scaling ||z_l||^2 grows like 2^l and ||J_l||^2 like
    2^(L-l): only their product is flat, so the plain ResNet is the sharper check."""
    if stable:
        outcome = outcomes("regularizer_quick")[0]
    else:
        cfg = compose_theory(
            "regularizer_quick",
            tmp_path,
            "experiment.theorem1.stable=false",
            "experiment.eq6.budgets=[0.9]",
            "experiment.eq6.epochs=[0]",
        )
        outcome = run_theory(cfg)
    flat = regularizer.flatness(outcome.tables["regularizer_layers"])
    theory = outcome.metrics["regularizer/theorem1/theory"]
    assert abs(flat["deep_over_shallow"] - 1.0) < max(0.1, 3 * flat["deep_over_shallow_se"])
    assert flat["mean"] == pytest.approx(theory, rel=0.1)


def test_eq6_is_tight_at_high_budget(outcomes):
    gaps = outcomes("regularizer_quick")[0].tables["regularizer_eq6"]
    high, low = gaps[gaps.budget == gaps.budget.max()], gaps[gaps.budget == gaps.budget.min()]
    # the second-order term (g_l at p) against the output's variance over masks, within 5% plus
    # three standard errors of the Monte Carlo estimate
    error = (high.penalty_at_p - high.variance_part).abs()
    assert (error < 0.05 * high.variance_part + 3 * high.gap_se).all()
    # eq. 6 as written, against the whole Monte Carlo gap: much closer at b = 0.98 than at 0.5
    assert (high.relative_error.abs() < 0.25).all()
    assert high.relative_error.abs().mean() < 0.5 * low.relative_error.abs().mean()


# --- Theorem 2 (normality) -----------------------------------------------------------------------


def test_neurons_become_gaussian_with_depth(outcomes):
    outcome, _ = outcomes("normality_quick")
    output, layers = outcome.tables["normality_output"], outcome.tables["normality_layers"]
    assert (output.groupby("epoch").pvalue.median() > 0.05).all()  # output neuron: Gaussian
    medians = layers.groupby("layer").pvalue.median()
    assert medians[1] < 1e-6 and medians.iloc[-10:].min() > 0.05
    assert normality.normal_from(layers[layers.epoch == 0]) is not None


def test_lindeberg_ratio_falls_with_depth(outcomes):
    lindeberg = normality.lindeberg_medians(
        outcomes("normality_quick")[0].tables["normality_lindeberg"]
    )
    assert (lindeberg.diff().dropna() < 0).all().all()
    assert (lindeberg.to_numpy() >= 1.0 / lindeberg.index.to_numpy()[:, None]).all()
