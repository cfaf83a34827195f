"""The theory's probes and formulas (``sdexp.theory``) against direct computation: Lemma 1's
quantiles, Prop. 1's ratio, gradient norms, Theorem 1's information discrepancy, eq. 6's loss
gap, Theorem 2's normality test; every experiment config composes (the experiments run:
tests/integration/test_theory.py)."""

from __future__ import annotations

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
from sdexp.theory.toy import toy_data
from tests.helpers import compose_theory, config_options

EXPERIMENTS = config_options("experiment")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_config_composes(experiment, tmp_path):
    cfg = compose_theory(experiment, tmp_path)
    assert callable(get_method(cfg.experiment._target_))
    if experiment.endswith("_quick"):  # a quick variant only shrinks its full experiment
        full = compose_theory(experiment.removesuffix("_quick"), tmp_path)
        assert cfg.experiment._target_ == full.experiment._target_


def test_deviation_quantile_of_a_known_distribution():
    pmf = np.array([0.25, 0.5, 0.25])  # Binomial(2, 1/2): |L - 1| is 0 w.p. 1/2, else 1
    assert deviation_quantile(pmf, 1.0, 0.6) == 0.0
    assert deviation_quantile(pmf, 1.0, 0.4) == 1.0


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
