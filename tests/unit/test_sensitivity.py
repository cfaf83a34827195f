"""First-order sensitivities against exact removal; one backward pass per batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr

from sdexp.models import CifarResNet, VanillaResNet
from sdexp.sensitivity import (
    removal_sensitivities,
    sensitivities,
    sensitivity_samples,
    summarize,
)


def toy_batch(n=512, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, torch.sin(x.sum(1, keepdim=True) / d**0.5)


def test_first_order_ranks_layers_like_exact_removal():
    torch.manual_seed(0)
    model = VanillaResNet(input_shape=(16,), num_outputs=1, width=64, depth=20)
    x, y = toy_batch()
    first_order = sensitivities(model, [(x, y)], F.mse_loss)
    exact = removal_sensitivities(model, x, y, F.mse_loss)
    assert spearmanr(first_order, exact).statistic > 0.9
    # The second-order term shifts every layer alike: the estimate is linear in the exact value.
    assert pearsonr(first_order, exact).statistic > 0.95


def test_one_forward_and_one_backward_per_batch():
    torch.manual_seed(0)
    model = VanillaResNet(input_shape=(16,), num_outputs=1, width=16, depth=12)
    forwards, backwards = [0], [0]
    block = model.blocks[5].branch
    block.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    block.register_full_backward_hook(lambda *_: backwards.__setitem__(0, backwards[0] + 1))
    batches = [toy_batch(32, seed=s) for s in range(3)]
    result = sensitivities(model, batches, F.mse_loss)
    assert result.shape == (12,)
    assert forwards[0] == 3 and backwards[0] == 3  # not L + 1 forward passes per batch
    assert all(p.grad is None for p in model.parameters())  # weights untouched


def test_batch_norm_statistics_untouched():
    torch.manual_seed(0)
    model = CifarResNet(depth=20, num_outputs=10).eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    sensitivities(model, [(x, y)], F.cross_entropy)
    removal_sensitivities(model, x, y, F.cross_entropy)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training  # the mode is restored


def test_average_over_batches():
    torch.manual_seed(0)
    model = VanillaResNet(input_shape=(16,), num_outputs=1, width=16, depth=6)
    batches = [toy_batch(64, seed=s) for s in range(2)]
    mean = sensitivities(model, batches, F.mse_loss)
    each = [sensitivities(model, [b], F.mse_loss) for b in batches]
    torch.testing.assert_close(mean, (each[0] + each[1]) / 2)


def test_standard_error_over_batches():
    """SenseMode records S_l with its standard error: the batches' sample standard deviation
    over sqrt(batches); the mean is the running total a single pass would give."""
    torch.manual_seed(0)
    model = VanillaResNet(input_shape=(16,), num_outputs=1, width=16, depth=6)
    batches = [toy_batch(64, seed=s) for s in range(5)]
    samples = sensitivity_samples(model, batches, F.mse_loss)
    assert samples.shape == (5, 6)
    each = torch.stack([sensitivities(model, [b], F.mse_loss) for b in batches])
    assert torch.equal(samples, each)
    estimate = summarize(samples)
    assert estimate.batches == 5
    assert torch.equal(estimate.mean, sensitivities(model, batches, F.mse_loss))
    spread = (samples - samples.mean(0)).pow(2).sum(0).div(4).sqrt()  # n - 1 = 4
    torch.testing.assert_close(estimate.standard_error, spread / 5**0.5)
    assert summarize(samples[:1]).standard_error is None  # one batch: no spread to measure
