"""speed.cuda_graphs through the Lightning module on the CPU, with
``emulated_make_graphed_callables`` standing in for ``torch.cuda.make_graphed_callables``: a
graphed run is the eager run (bit for bit; to rounding with compiled pieces inside the graphs).
The pieces themselves: tests/unit/test_graphs.py."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from scripts.emulated_graphs import emulated_make_graphed_callables as EMULATED
from sdexp.data import CIFARDataModule
from sdexp.models import CifarResNet
from sdexp.run.config import Speed
from sdexp.run.graphs import GraphedSteps, KeptPath
from sdexp.run.module import LightningData, StochasticDepthModule
from sdexp.survival import Uniform
from tests.helpers import assert_same, cpu_trainer, sgd, state, train_step


def fit(cifar_root, make_graphed=None, dropped_blocks="decay", epochs=2, depth=14, **speed):
    """Two epochs of a tiny Stable ResNet on the fixture's CIFAR copy (100 training images in
    batches of 32: the last one partial), validating after each."""
    pl.seed_everything(0, verbose=False)
    model = CifarResNet(depth=depth, num_outputs=10, mask_seed=0)
    module = StochasticDepthModule(
        model,
        Uniform(),
        0.5,
        "classification",
        10,
        optimizer=lambda p, **kw: torch.optim.SGD(
            p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, **kw
        ),
        dropped_blocks=dropped_blocks,
        speed=Speed(cuda_graphs=make_graphed is not None, **speed),
        make_graphed=make_graphed,
    )
    data = CIFARDataModule(
        data_dir=str(cifar_root), download=False, verify_md5=False, val_size=20, batch_size=32
    )
    trainer = cpu_trainer(max_epochs=epochs, log_every_n_steps=2)
    trainer.fit(module, datamodule=LightningData(data))
    return module, trainer


@pytest.mark.slow
@pytest.mark.parametrize("dropped_blocks", ["decay", "frozen"])
def test_a_graphed_run_is_the_eager_run(cifar_root, dropped_blocks):
    eager, _ = fit(cifar_root, dropped_blocks=dropped_blocks)
    graphed, trainer = fit(cifar_root, EMULATED, dropped_blocks=dropped_blocks)
    assert_same(
        state(eager.model, eager.optimizers().optimizer),
        state(graphed.model, graphed.optimizers().optimizer),
    )
    graphs = graphed.graphs
    full_batches = 2 * 3  # per epoch: 32, 32, 32 and a partial batch of 4 (eager)
    assert graphs.stem.replays == graphs.head_loss.replays == full_batches
    assert trainer.global_step == 2 * 4
    assert graphs.signature[0] == (32, 3, 32, 32)
    # evaluation ran eagerly: validating again replays nothing
    trainer.validate(graphed, datamodule=trainer.datamodule, verbose=False)
    assert graphs.stem.replays == full_batches


@pytest.mark.slow
def test_a_graphed_run_with_the_fast_paths(cifar_root):
    eager, _ = fit(cifar_root, epochs=1, fused_optimizer=True, channels_last=True)
    graphed, _ = fit(cifar_root, EMULATED, epochs=1, fused_optimizer=True, channels_last=True)
    assert graphed.optimizers().optimizer.defaults["fused"]
    assert graphed.graphs.signature[0] == (32, 3, 32, 32)
    assert_same(
        state(eager.model, eager.optimizers().optimizer),
        state(graphed.model, graphed.optimizers().optimizer),
    )


# --- compiled pieces inside the graphs (speed.compile_blocks with speed.cuda_graphs) -------------
# torch.compile (inductor's C++ code on the CPU) takes about a minute for the first network here:
# one small network shape for all of these tests, on one pytest-xdist worker (the "compile"
# group), so that Dynamo compiles it once.


def compiled_shapes() -> int:
    """How many graphs Dynamo holds for the kept path (one per block shape and multiplier)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    return len(_debug_get_cache_entry_list(KeptPath.forward.__code__))


def small_resnet() -> CifarResNet:
    """ResNet8 on 32x32 images (the fixture's CIFAR): L = 3, one block per stage."""
    torch.manual_seed(0)
    model = CifarResNet(depth=8, num_outputs=10, mask_seed=0).train()
    model.gate.set_survival([0.5] * model.num_blocks)
    return model


@pytest.mark.slow
@pytest.mark.xdist_group("compile")
def test_compiled_graphed_steps_are_the_eager_steps_to_rounding():
    """Fusion reorders floating point: each step's loss within 1e-5 (relative) of eager's, the
    parameters within 1e-3 after six steps. The blocks a step drops are bit for bit untouched
    (``frozen``): nothing of theirs runs, compiled or not."""
    eager, fast = small_resnet(), small_resnet()
    eager_sgd, fast_sgd = sgd(eager), sgd(fast)
    g = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g))
        for _ in range(6)
    ]
    graphs = GraphedSteps(fast, F.cross_entropy, *data[0], EMULATED, compile_pieces=True)
    assert graphs.compiled and compiled_shapes() >= 3  # the three block shapes of ResNet8
    losses = []
    for x, y in data:
        a = train_step(lambda x, y: F.cross_entropy(eager(x), y), eager, eager_sgd, x, y, "frozen")
        before = state(fast, fast_sgd)
        b = train_step(graphs.loss, fast, fast_sgd, x, y, "frozen")
        assert fast.gate.last_mask == eager.gate.last_mask
        torch.testing.assert_close(b, a, rtol=1e-5, atol=0)
        losses.append((a, b))
        after = state(fast, fast_sgd)
        for index, kept in enumerate(fast.gate.last_mask):
            if not kept:
                block = [k for k in after if f"blocks.{index}." in k]
                assert block and all(torch.equal(before[k], after[k]) for k in block)
    assert [k.replays for k in graphs.kept] != [0, 0, 0]
    a, b = state(eager, eager_sgd), state(fast, fast_sgd)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.xdist_group("compile")
def test_a_compiled_graphed_run(cifar_root):
    """speed.compile_blocks with speed.cuda_graphs through the Lightning module: the graphs are
    of compiled pieces, evaluation stays eager, the run is the eager run to rounding."""
    eager, _ = fit(cifar_root, epochs=1, depth=8)
    fast, trainer = fit(cifar_root, EMULATED, epochs=1, depth=8, compile_blocks=True)
    assert fast.graphs.compiled and fast.graphs.stem.replays == 3
    assert fast.model.blocks[0].branch._compiled_call_impl is None  # the branches stay eager
    trainer.validate(fast, datamodule=trainer.datamodule, verbose=False)
    assert fast.graphs.stem.replays == 3  # evaluation replays nothing
    a = state(eager.model, eager.optimizers().optimizer)
    b = state(fast.model, fast.optimizers().optimizer)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)
