"""The theory experiments (``python -m sdexp.theory``): their quick variants, run as configured,
assert the paper's results where the theory is exact or tight at that size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import get_method

from sdexp.models import VanillaResNet
from sdexp.theory import normality, regularizer
from sdexp.theory.depth import deviation_quantile
from sdexp.theory.gradient import theoretical_ratio
from sdexp.theory.probes import (
    gradient_norms,
    hidden_layers,
    information_discrepancy,
    network_output,
    sample_masks,
    survival,
)
from sdexp.theory.task import run_theory
from sdexp.theory.toy import toy_data
from tests.conftest import compose_config, user_env

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(path.stem for path in (ROOT / "sdexp" / "conf" / "experiment").glob("*.yaml"))


def compose_theory(experiment: str, output_dir: Path, *overrides: str):
    overrides = [f"experiment={experiment}", f"output_dir={output_dir}", *overrides]
    return compose_config(overrides, config_name="theory")


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


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_config_composes(experiment, tmp_path):
    cfg = compose_theory(experiment, tmp_path)
    assert callable(get_method(cfg.experiment._target_))
    if experiment.endswith("_quick"):  # a quick variant only shrinks its full experiment
        full = compose_theory(experiment.removesuffix("_quick"), tmp_path)
        assert cfg.experiment._target_ == full.experiment._target_


@pytest.mark.parametrize("experiment", ["depth", "gradient", "regularizer", "normality"])
def test_quick_variant_writes_csv_png_and_summary(experiment, outcomes):
    outcome, out = outcomes(f"{experiment}_quick")
    for key, frame in outcome.tables.items():
        assert (out / f"{key}.csv").stat().st_size > 0 and len(frame) > 0
    assert (out / f"{experiment}.png").read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    assert "Wall time" in summary and "|---|" in summary
    assert outcome.metrics["wall_time_s"] > 0


@pytest.mark.slow
def test_command_line_quick_run(tmp_path):
    """As a user runs it: the output directory gets the CSVs, the PNG and the summary."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sdexp.theory",
            "experiment=depth_quick",
            f"hydra.run.dir={tmp_path}",
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    assert {"depth.png", "summary.md", "distribution.csv", "bounds.csv"} <= {
        path.name for path in tmp_path.iterdir()
    }
    assert "python -m sdexp.theory experiment=depth_quick" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_wandb_offline_logs_summary_and_figure(tmp_path):
    env = user_env(WANDB_SILENT="true")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sdexp.theory",
            "experiment=depth_quick",
            "logger=wandb",
            f"hydra.run.dir={tmp_path}",
        ],
        check=True,
        cwd=ROOT,
        env=env,
        capture_output=True,
    )
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run_dir.rglob("media/images/depth/figure_*.png"))
    inspect = subprocess.run(
        ["wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    record = json.loads(inspect.stdout)
    assert record["name"] == "theory-depth" and record["config"]["experiment"]["depth"] == 100
    assert record["summary"]["depth/bound_holds"] == 1 and record["summary"]["wall_time_s"] > 0


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


def test_deviation_quantile_of_a_known_distribution():
    pmf = np.array([0.25, 0.5, 0.25])  # Binomial(2, 1/2): |L - 1| is 0 w.p. 1/2, else 1
    assert deviation_quantile(pmf, 1.0, 0.6) == 0.0
    assert deviation_quantile(pmf, 1.0, 0.4) == 1.0


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


def test_theoretical_ratio_without_stochastic_depth_is_a_power_of_two():
    q = theoretical_ratio(torch.ones(6, dtype=torch.float64), scale=1.0)
    assert np.allclose(q, 2.0 ** np.arange(6, -1, -1))


def test_gradient_norms_match_autograd_row_by_row():
    torch.manual_seed(0)
    model = VanillaResNet(input_shape=(8,), num_outputs=1, width=16, depth=4, stable=False)
    x = torch.randn(3, 8)
    multipliers = torch.tensor([[1.0, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1]])
    norms = gradient_norms(model, x, multipliers)
    for row in range(3):
        ys = list(hidden_layers(model, x[row : row + 1], multipliers[row : row + 1]))
        grads = torch.autograd.grad(model.head(ys[-1]).sum(), ys)
        expected = torch.stack([g.double().pow(2).sum() for g in grads])
        assert torch.allclose(norms[row], expected, rtol=1e-5)


# --- Theorem 1 and eq. 6 (regularizer) -----------------------------------------------------------


def test_information_discrepancy_is_the_jacobian_vector_product():
    """zeta_l from one backward pass through delta equals J_l z_l, a JVP of y_L -> y_out."""
    torch.manual_seed(0)
    model = VanillaResNet(input_shape=(8,), num_outputs=2, width=16, depth=5, stable=True)
    x = torch.randn(4, 8)
    zeta = information_discrepancy(model, x)
    ones = torch.ones(len(x), model.num_blocks) * model.gate.scale
    ys = list(hidden_layers(model, x, ones))
    for layer in range(1, model.num_blocks + 1):
        z = model.blocks[layer - 1].branch(ys[layer - 1])

        def rest(y, layer=layer):  # G_l: y_l -> y_out with every later block kept
            for block in model.blocks[layer:]:
                y = block(y, model.gate.scale)
            return model.head(y)

        _, jvp = torch.func.jvp(rest, (ys[layer],), (z,))
        assert torch.allclose(zeta[:, layer - 1], jvp, atol=1e-5)


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


def test_loss_gap_splits_into_output_variance_and_curvature():
    """gap - curvature part is Var_delta[y_out]: compare with the sample variance directly."""
    torch.manual_seed(0)
    model = VanillaResNet(input_shape=(16,), num_outputs=1, width=32, depth=10, stable=True)
    x, t = toy_data(64, 16, seed=0)
    p = survival("uniform", 0.8, 10)
    parts = regularizer.loss_gap(model, x, t, p, 4000, torch.Generator().manual_seed(0))
    delta = sample_masks(p, 4000 * len(x), torch.Generator().manual_seed(1)).float()
    with torch.no_grad():
        y = network_output(model, x.repeat(4000, 1), delta * model.gate.scale).view(4000, -1)
    variance = float(y.double().var(0).mean())
    assert parts["gap"] - parts["curvature_part"] == pytest.approx(variance, rel=0.05)


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


def test_shapiro_pvalues_come_from_the_sampled_neurons():
    torch.manual_seed(0)
    model = VanillaResNet(input_shape=(16,), num_outputs=1, width=32, depth=30, stable=True)
    x, _ = toy_data(8, 16, seed=0)
    p = survival("uniform", 0.7, 30)
    layers, out = normality.neuron_samples(model, x, p, 200, 0, torch.Generator().manual_seed(0))
    assert layers.shape == (30, 200, 8) and out.shape == (200, 8)
    # y_1 = y_0 + delta_1 s z_1 takes two values over the masks: clearly not Gaussian
    assert len(np.unique(layers[0, :, 0].round(5))) == 2
    assert (normality.shapiro_pvalues(layers[0]) < 1e-6).all()
    rng = np.random.default_rng(0)
    assert normality.shapiro_pvalues(rng.standard_normal((200, 8))).min() > 1e-3


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
