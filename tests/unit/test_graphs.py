"""speed.cuda_graphs on the CPU: the logic around the graphs (what is captured, what replays at
each step, BatchNorm buffers, the partial batch, gradients under both recipes, evaluation),
with ``emulated_make_graphed_callables`` standing in for ``torch.cuda.make_graphed_callables``.

The stand-in replays a piece by running its forward again on its static inputs, so a graphed
run must be bit for bit the eager run; it hands out static gradient buffers as the real graphs
do, so gradient handling that works only by luck on the CPU fails here too."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scripts.emulated_graphs import emulated_make_graphed_callables
from sdexp.errors import ConfigError
from sdexp.models import CifarResNet, VanillaResNet
from sdexp.recipe import StepGradients
from sdexp.run.graphs import GraphedSteps, KeptPath
from tests.helpers import assert_same, sgd, state, train_step

EMULATED = emulated_make_graphed_callables


SIDE = 16  # small images: the unit tests run in about a second each


def resnet(survival: float = 0.5, seed: int = 0, **kwargs) -> CifarResNet:
    """ResNet14: 6 blocks, two of them starting a stage (a shortcut with pooling)."""
    torch.manual_seed(seed)
    shape = (3, SIDE, SIDE)
    model = CifarResNet(depth=14, num_outputs=10, input_shape=shape, mask_seed=seed, **kwargs)
    model.train()
    model.gate.set_survival([survival] * model.num_blocks)
    return model


def batches(count: int, size: int = 8, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 3, SIDE, SIDE, generator=g), torch.randint(0, 10, (size,), generator=g))
        for _ in range(count)
    ]


# --- which pieces are captured and which replay ------------------------------------------------


def test_each_step_replays_the_kept_blocks_only():
    model = resnet()
    x, y = batches(1)[0]
    graphs = GraphedSteps(model, F.cross_entropy, x, y, EMULATED)
    assert len(graphs.kept) == model.num_blocks and all(
        isinstance(k, KeptPath) for k in graphs.kept
    )
    assert all(k.block is b for k, b in zip(graphs.kept, model.blocks, strict=True))
    assert graphs.head_loss.head is model.head and graphs.stem.stem is model.stem
    kept = torch.zeros(model.num_blocks, dtype=torch.long)
    steps = 6
    for x, y in batches(steps):
        graphs.loss(x, y).backward()
        kept += torch.tensor(model.gate.last_mask)
    assert graphs.stem.replays == graphs.head_loss.replays == steps
    assert [k.replays for k in graphs.kept] == kept.tolist()
    assert [k.backward_replays for k in graphs.kept] == kept.tolist()
    assert 0 < kept.sum() < steps * model.num_blocks  # some blocks dropped, some kept


def test_a_block_with_zero_survival_is_not_captured():
    model = resnet()
    model.gate.set_survival([0.5, 0.0, 1.0, 1.0, 0.0, 0.5])
    graphs = GraphedSteps(model, F.cross_entropy, *batches(1)[0], EMULATED)
    assert [k is None for k in graphs.kept] == [False, True, False, False, True, False]
    graphs.loss(*batches(1)[0]).backward()  # never kept by the gate: nothing to replay


def test_capture_restores_batchnorm_buffers():
    model = resnet()
    before = {k: v.clone() for k, v in model.named_buffers()}
    GraphedSteps(model, F.cross_entropy, *batches(1)[0], EMULATED)
    assert_same(before, dict(model.named_buffers()))
    # ...which the warm-up iterations had moved
    block = resnet().blocks[0]
    mean = block.branch[1].running_mean.clone()
    emulated_make_graphed_callables(KeptPath(block, 1.0), (torch.randn(4, 16, SIDE, SIDE),))
    assert not torch.equal(mean, block.branch[1].running_mean)


def test_a_batch_of_another_shape_is_not_for_the_graphs():
    model = resnet()
    x, y = batches(1)[0]
    graphs = GraphedSteps(model, F.cross_entropy, x, y, EMULATED)
    assert graphs.matches(x, y)
    assert not graphs.matches(x[:5], y[:5])
    with pytest.raises(RuntimeError, match="captured for shape"):
        graphs.loss(x[:5], y[:5])  # what would happen if it were sent there


def test_a_changed_multiplier_is_refused():
    model = resnet(inverted=True)  # kept blocks scaled by s / p_l: captured into the graph
    graphs = GraphedSteps(model, F.cross_entropy, *batches(1)[0], EMULATED)
    model.gate.set_survival([0.9] * model.num_blocks)
    with pytest.raises(RuntimeError, match="multiplier changed since capture"):
        for x, y in batches(5):
            graphs.loss(x, y)


def test_only_the_training_step_is_graphed():
    model = resnet()
    graphs = GraphedSteps(model, F.cross_entropy, *batches(1)[0], EMULATED)
    model.eval()
    with pytest.raises(RuntimeError, match="evaluate with the network"):
        graphs.loss(*batches(1)[0])
    model(batches(1)[0][0])  # the network's own forward: eager, no replay
    assert graphs.stem.replays == 0 and all(k.replays == 0 for k in graphs.kept)


def test_without_a_stand_in_a_cpu_run_is_refused():
    with pytest.raises(ConfigError, match=r"^speed\.cuda_graphs: CUDA graphs need a CUDA device"):
        GraphedSteps(resnet(), F.cross_entropy, *batches(1)[0])


def test_capture_under_autocast_turns_its_cache_off():
    model = resnet()
    x, y = batches(1)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # cache_enabled=True, as Lightning's
        y0 = torch.randn(8, 16, SIDE, SIDE)
        with pytest.raises(RuntimeError, match="autocast caching"):
            emulated_make_graphed_callables(KeptPath(model.blocks[0], 1.0), (y0,))
        graphs = GraphedSteps(model, F.cross_entropy, x, y, EMULATED)
        loss = graphs.loss(x, y)
    assert graphs.kept[0].block.branch[0].weight.dtype == torch.float32
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dropped_blocks", ["decay", "frozen"])
def test_step_gradients(dropped_blocks):
    """After a forward pass: None for all the backward pass writes; for the dropped blocks,
    None (frozen) or zeros of its own (decay), zero again even if someone wrote into them."""
    model = resnet()
    x, y = batches(1)[0]
    gradients = StepGradients(model, dropped_blocks)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    for _ in range(2):
        loss = F.cross_entropy(model(x), y)
        gradients.clear()
        mask = model.gate.last_mask
        assert 0 < sum(mask) < len(mask)
        for kept, block in zip(mask, model.blocks, strict=True):
            for p in block.parameters():
                if kept or dropped_blocks == "frozen":
                    assert p.grad is None
                else:
                    assert p.grad is gradients.zeros[p] and not p.grad.any()
                    p.grad.fill_(3.0)  # an in-place write, as gradient clipping does
        assert model.stem[0].weight.grad is None and model.head[-1].weight.grad is None
        loss.backward()
    assert (not gradients.zeros) == (dropped_blocks == "frozen")


# --- the graphed step computes the eager step ---------------------------------------------------


@pytest.mark.parametrize("dropped_blocks", ["decay", "frozen"])
@pytest.mark.parametrize("fused", [False, True])
def test_graphed_steps_are_the_eager_steps_bit_for_bit(dropped_blocks, fused):
    """Same init, batches and masks: the same losses and the same parameters, momentum and
    BatchNorm buffers after every step, with a partial batch (eager in both) in between."""
    eager, graphed = resnet(), resnet()
    eager_sgd, graphed_sgd = sgd(eager, fused=fused), sgd(graphed, fused=fused)
    data = batches(8)
    graphs = GraphedSteps(graphed, F.cross_entropy, *data[0], EMULATED)
    data[4] = data[4][0][:3], data[4][1][:3]  # a partial batch: runs eagerly

    def plain(network):
        return lambda x, y: F.cross_entropy(network(x), y)

    for x, y in data:
        fast = graphs.loss if graphs.matches(x, y) else plain(graphed)
        a = train_step(plain(eager), eager, eager_sgd, x, y, dropped_blocks)
        b = train_step(fast, graphed, graphed_sgd, x, y, dropped_blocks)
        assert eager.gate.last_mask == graphed.gate.last_mask
        assert torch.equal(a, b)
        assert_same(state(eager, eager_sgd), state(graphed, graphed_sgd))
    assert graphs.stem.replays == len(data) - 1


def test_a_gradient_left_none_would_take_the_graphs_buffer():
    """Why ``StepGradients`` leaves no gradient a graph's buffer from an earlier step: with
    PyTorch's own ``zero_grad(set_to_none=False)`` a None gradient stays None, the backward
    takes a graph's static buffer as ``.grad``, and the next zero-fill and backward add it to
    itself."""
    model = resnet(survival=1.0)
    data = batches(2)
    graphs = GraphedSteps(model, F.cross_entropy, *data[0], EMULATED)
    weight = model.head[-1].weight
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    for x, y in data:
        loss = graphs.loss(x, y)
        optimizer.zero_grad(set_to_none=False)  # the old decay path
        loss.backward()
    doubled = weight.grad.clone()
    reference = resnet(survival=1.0)
    reference.load_state_dict(model.state_dict())
    F.cross_entropy(reference(data[1][0]), data[1][1]).backward()
    torch.testing.assert_close(doubled, 2 * reference.head[-1].weight.grad)


def test_the_vanilla_resnet_too():
    """Any residual network: the Vanilla ResNet of Sec. 2 on the toy regression (MSE)."""
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(VanillaResNet(input_shape=(16,), num_outputs=1, width=16, depth=6).train())
        models[-1].gate.set_survival([0.5] * 6)
    eager, graphed = models
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 16, generator=g), torch.randn(8, 1, generator=g)) for _ in range(4)]
    graphs = GraphedSteps(graphed, F.mse_loss, *data[0], EMULATED)
    eager_sgd, graphed_sgd = sgd(eager), sgd(graphed)
    for x, y in data:
        a = train_step(lambda x, y: F.mse_loss(eager(x), y), eager, eager_sgd, x, y, "decay")
        b = train_step(graphs.loss, graphed, graphed_sgd, x, y, "decay")
        assert torch.equal(a, b)
    assert_same(state(eager, eager_sgd), state(graphed, graphed_sgd))


def test_fused_sgd_is_plain_sgd_when_blocks_start_late():
    """``frozen`` with fused SGD: a block dropped at the first step starts its momentum later;
    with ``start_momentum`` the fused update is SGD's up to float rounding."""
    plain, fused = resnet(), resnet()
    plain_sgd, fused_sgd = sgd(plain), sgd(fused, fused=True)
    for x, y in batches(4):
        train_step(lambda x, y: F.cross_entropy(plain(x), y), plain, plain_sgd, x, y, "frozen")
        train_step(lambda x, y: F.cross_entropy(fused(x), y), fused, fused_sgd, x, y, "frozen")
    a, b = state(plain, plain_sgd), state(fused, fused_sgd)
    assert a.keys() - b.keys() == set()  # b: buffers also for blocks never kept
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


# --- on a GPU: the real torch.cuda.make_graphed_callables ----------------------------------------


def block_keys(model, index: int) -> list[str]:
    return [k for k in model.state_dict() if k.startswith(f"blocks.{index}.")]


@pytest.mark.gpu
@pytest.mark.parametrize("dropped_blocks", ["decay", "frozen"])
def test_real_cuda_graphs_are_the_eager_steps(dropped_blocks):
    """The parity above with the real graphs (no stand-in) on a CUDA GPU, deterministic cuDNN:
    the same masks at every step, a partial batch eager in between; each step's loss and every
    parameter, momentum and BatchNorm buffer after it the eager step's to float rounding
    (capture may pick other kernels), and the blocks a frozen step drops bit for bit untouched.
    (The Lightning module with real graphs, in lock step: scripts/gpu_check.py.)"""
    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        cuda = torch.device("cuda")
        eager, graphed = resnet().to(cuda), resnet().to(cuda)
        eager_sgd, graphed_sgd = sgd(eager), sgd(graphed)
        data = [(x.to(cuda), y.to(cuda)) for x, y in batches(8)]
        graphs = GraphedSteps(graphed, F.cross_entropy, *data[0])  # torch.cuda's own
        data[4] = data[4][0][:3], data[4][1][:3]  # a partial batch: runs eagerly

        def plain(network):
            return lambda x, y: F.cross_entropy(network(x), y)

        masks = []
        for x, y in data:
            fast = graphs.loss if graphs.matches(x, y) else plain(graphed)
            before = state(graphed, graphed_sgd)
            a = train_step(plain(eager), eager, eager_sgd, x, y, dropped_blocks)
            b = train_step(fast, graphed, graphed_sgd, x, y, dropped_blocks)
            assert eager.gate.last_mask == graphed.gate.last_mask
            masks += graphed.gate.last_mask
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
            mine, theirs = state(graphed, graphed_sgd), state(eager, eager_sgd)
            assert mine.keys() == theirs.keys()
            for key in theirs:
                torch.testing.assert_close(mine[key], theirs[key], rtol=1e-4, atol=1e-5)
            for index, kept in enumerate(graphed.gate.last_mask):
                if not kept and dropped_blocks == "frozen":
                    dropped = block_keys(graphed, index)
                    assert all(torch.equal(before[k], mine[k]) for k in dropped), index
        assert 0 < sum(masks) < len(masks)  # some blocks dropped, some kept
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
