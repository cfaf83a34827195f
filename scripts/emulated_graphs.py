"""A stand-in for ``torch.cuda.make_graphed_callables`` that runs eagerly on any device.

``sdexp.run.graphs.GraphedSteps`` takes what captures its graphs as an argument (``make_graphed``);
on a GPU that is ``torch.cuda.make_graphed_callables``. The CPU tests
(``tests/unit/test_graphs.py``, ``tests/integration/test_graphs.py``) and the dry run of
``scripts/gpu_check.py`` (``QUICK=1``) pass this stand-in, which keeps the contract the code
around the graphs depends on. It is a test double, so it is not in the package
(no run imports it); it sits here, beside the script that needs it on a machine without the
tests' fixtures, and the tests import it as ``scripts.emulated_graphs`` (the checkout's root is
on their path).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def emulated_make_graphed_callables(
    module: nn.Module, sample_args: tuple[Tensor, ...], num_warmup_iters: int = 3
) -> nn.Module:
    """``torch.cuda.make_graphed_callables`` for one module, emulated eagerly on any device.

    It keeps the contract that the code around the graphs depends on: the checks at capture
    (no hooks, no trainable buffers, tensors only, no autocast cache); ``num_warmup_iters``
    warm-up forward and backward passes in the module's mode (so BatchNorm statistics move);
    the sample arguments become the static inputs that live inputs are copied into (a shape
    the graph was not captured for is an error); outputs and parameter gradients are static
    buffers, overwritten at every replay and handed out as such (so a gradient left None
    takes the buffer, as on a GPU). A replay runs the module's forward again on the static
    inputs. ``replays`` and ``backward_replays`` count them, for tests.
    """
    hooks = module._forward_hooks, module._forward_pre_hooks, module._backward_hooks
    if any(len(h) for h in hooks):
        raise AssertionError("Modules must not have hooks registered at the time they are passed")
    if any(b.requires_grad for b in module.buffers()):
        raise AssertionError("only parameters may be trainable, buffers must not require grad")
    if not all(isinstance(a, Tensor) for a in sample_args):
        raise AssertionError("sample_args must contain only Tensors")
    for device_type in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device_type) and torch.is_autocast_cache_enabled():
            raise RuntimeError("make_graphed_callables does not support the autocast caching")
    forward = module.forward
    params = tuple(module.parameters())
    surface = (*sample_args, *params)
    wanted = [t for t in surface if t.requires_grad]
    for _ in range(num_warmup_iters):
        out = forward(*sample_args)
        torch.autograd.grad(out, wanted, torch.zeros_like(out))
    static_out = torch.empty_like(out)
    static_grads = [torch.empty_like(t) if t.requires_grad else None for t in surface]
    live: dict[str, Tensor] = {}

    class Replay(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs: Tensor) -> Tensor:
            for static, given in zip(sample_args, inputs, strict=False):
                if given.shape != static.shape:
                    raise RuntimeError(
                        f"a graph captured for shape {list(static.shape)} got {list(given.shape)}"
                    )
                if static.data_ptr() != given.data_ptr():
                    static.copy_(given)
            with torch.enable_grad():
                live["out"] = forward(*sample_args)
            static_out.copy_(live["out"].detach())
            module.replays += 1
            return static_out.detach()

        @staticmethod
        @once_differentiable
        def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
            grads = iter(torch.autograd.grad(live.pop("out"), wanted, grad))
            for buffer in static_grads:
                if buffer is not None:
                    buffer.copy_(next(grads))
            module.backward_replays += 1
            return tuple(None if b is None else b.detach() for b in static_grads)

    def graphed(*args: Tensor) -> Tensor:
        return Replay.apply(*args, *params)

    module.replays = module.backward_replays = 0
    module.forward = graphed
    return module
