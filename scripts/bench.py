"""python scripts/bench.py: does a smaller budget train faster, and does the data keep up?

The paper's practical claim for SD over Dropout (Fig. 1b) is that a smaller budget trains
faster. Every figure is a ratio against a baseline timed in the same process, on the same
device, interleaved with it (one baseline step, then one step of each variant, repeated): the
median over the rounds, with min and max; machines are noisy, so no absolute time stands alone.

1. step: one SGD step (forward, backward, Nesterov update) of Stable ResNet110, batch 128, at
   budgets 1.0 .. 0.3 (uniform mode) against the same model without SD; beside it the per-sample
   "row" mask of ``torchvision.ops.stochastic_depth`` and Dropout on every branch (the same
   expected kept fraction), which both still compute every block.
2. pipeline: images per second of our in-memory pipeline (``sdexp.loader``: one gather, batched
   crop, flip and normalisation) against a torchvision-transforms DataLoader doing the same, and
   the share of a training step spent waiting for the next batch with each.
3. sensitivity: SenseMode's first-order sensitivities of one batch against one training step,
   and exact removal (L + 1 forward passes) against the same step.

What real runs record is not measured here: a run's epochs (``epoch_times_s``), a sweep's
device-hours (``sdexp-table``'s cost.md), the theory commands' wall time (their summary.md).
On a GPU, ``scripts/gpu_check.py`` times graphed and compiled steps. Results: ``OUT/bench.json``
and ``OUT/step_time.png``; ``--quick`` runs tiny sizes (it checks that the script runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from matplotlib.figure import Figure
from torch import Tensor

import sdexp
from sdexp.data import CIFARDataModule
from sdexp.loader import EpochLoader
from sdexp.models import CifarResNet, ResidualNetwork
from sdexp.sensitivity import removal_sensitivities, sensitivities
from sdexp.synthetic import unverified, write_synthetic_cifar

BUDGETS = (1.0, 0.9, 0.7, 0.5, 0.3)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn`` takes, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def interleaved_ratios(
    baseline: Callable[[], object],
    variants: dict[str, Callable[[], object]],
    device: torch.device,
    rounds: int,
) -> dict[str, dict]:
    """The baseline and each variant in turn, ``rounds`` times (after one warm-up round): each
    variant's time over the baseline's of the same round, and the baseline's seconds."""
    for fn in [baseline, *variants.values()]:
        fn()
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    seconds = []
    for _ in range(rounds):
        seconds.append(timed(baseline, device))
        for name, fn in variants.items():
            ratios[name].append(timed(fn, device) / seconds[-1])
    return {"baseline_s": spread(seconds)} | {k: spread(v) for k, v in ratios.items()}


def training_step(model: ResidualNetwork, optimizer, forward=None) -> Callable[[Tensor, Tensor]]:
    """One SGD step of ``model`` (``forward(x)`` instead of the model's own, if given)."""

    def step(x: Tensor, y: Tensor) -> None:
        loss = F.cross_entropy(model(x) if forward is None else forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


# --- 1. step time against the budget --------------------------------------------------------


def forward_every_block(model: ResidualNetwork, x: Tensor, branch_op) -> Tensor:
    """The network with every block computed and ``branch_op(branch_output, p_l)`` applied to
    each branch: the per-sample mask and Dropout baselines (no block is ever skipped)."""
    y = model.stem(x)
    for block, p in zip(model.blocks, model.gate.survival, strict=True):
        y = block.post(block.shortcut(y) + model.gate.scale * branch_op(block.branch(y), p))
    return model.head(y)


def row_mask(branch: Tensor, p: float) -> Tensor:
    return torchvision.ops.stochastic_depth(branch, 1.0 - p, "row", training=True)


def dropout(branch: Tensor, p: float) -> Tensor:
    return F.dropout(branch, 1.0 - p, training=True)


BASELINES = {"row": row_mask, "dropout": dropout}


def step_benchmark(device, depth: int, batch_size: int, rounds: int) -> dict:
    torch.manual_seed(0)
    model = CifarResNet(depth=depth, num_outputs=10).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def at(budget: float, op=None) -> Callable[[], None]:
        forward = None if op is None else lambda inputs: forward_every_block(model, inputs, op)
        step = training_step(model, optimizer, forward)

        def run() -> None:
            model.gate.set_survival([budget] * model.num_blocks)
            step(x, y)

        return run

    variants = {f"sd@{b}": at(b) for b in BUDGETS}
    variants |= {f"{name}@{b}": at(b, op) for b in BUDGETS for name, op in BASELINES.items()}
    found = interleaved_ratios(at(1.0), variants, device, rounds)
    info = {"model": f"resnet{depth}", "batch_size": batch_size, "budgets": list(BUDGETS)}
    return info | {"rounds": rounds} | found


# --- 2. input pipeline ------------------------------------------------------------------------


def pipeline_benchmark(device, root: Path, batch_size: int, workers: int, step: Callable) -> dict:
    """Images per second over one epoch, ours against torchvision's transforms in a DataLoader,
    and the share of training steps spent waiting for the next batch with each."""
    ours = CIFARDataModule(
        "cifar10", str(root), download=False, verify_md5=False, val_size=0, batch_size=batch_size
    )
    ours.setup()  # held on the device it trains on, as a run holds it (dataset.on_device)
    epoch = EpochLoader(ours.splits["train"].to(device), batch_size, train=True, padding=4)

    def our_batches():
        for batch in epoch:
            yield ours.preprocess(batch.inputs, batch.augment), batch.targets

    transforms = torchvision.transforms
    dataset = unverified(torchvision.datasets.CIFAR10)(
        str(root),
        train=True,
        transform=transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(ours.mean.tolist(), ours.std.tolist()),
            ]
        ),
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )

    def torchvision_batches():
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    found = {"images": len(dataset), "batch_size": batch_size, "torchvision_workers": workers}
    for name, batches in (("ours", our_batches), ("torchvision", torchvision_batches)):
        next(iter(batches()))  # warm up (worker start-up, first allocation)
        seconds = timed(lambda batches=batches: sum(len(y) for _, y in batches()), device)
        found[f"{name}_images_per_s"] = len(dataset) / seconds
        found[f"{name}_data_wait_share"] = data_wait_share(batches(), step, device)
    found["speedup"] = found["ours_images_per_s"] / found["torchvision_images_per_s"]
    return found


def data_wait_share(batches, step: Callable[[Tensor, Tensor], None], device, steps: int = 10):
    """Fraction of wall time spent getting the next (preprocessed) batch during training, in
    steady state (after the epoch's first batch, which also draws the epoch's order)."""
    step(*next(batches))
    wait = total = 0.0
    for _ in range(steps):
        synchronize(device)  # the previous step's queued work is not the data's wait
        start = time.perf_counter()
        x, y = next(batches)
        synchronize(device)
        ready = time.perf_counter()
        step(x, y)
        synchronize(device)
        wait, total = wait + ready - start, total + time.perf_counter() - start
    return wait / total


# --- 3. sensitivities -------------------------------------------------------------------------


def sensitivity_benchmark(device, depth: int, batch_size: int, rounds: int) -> dict:
    torch.manual_seed(0)
    model = CifarResNet(depth=depth, num_outputs=10).to(device).train()
    step = training_step(model, torch.optim.SGD(model.parameters(), lr=0.01))
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    variants = {
        "first_order": lambda: sensitivities(model, [(x, y)], F.cross_entropy),
        "exact_removal": lambda: removal_sensitivities(model, x, y, F.cross_entropy),
    }
    found = interleaved_ratios(lambda: step(x, y), variants, device, rounds)
    return {"model": f"resnet{depth}", "batch_size": batch_size} | found


# --- what it found ----------------------------------------------------------------------------


def report(results: dict) -> str:
    step, pipe, sens = results["step"], results["pipeline"], results["sensitivity"]
    lines = [
        f"{results['device']} | torch {results['torch']} | sdexp {results['sdexp']}",
        f"1. step / no-SD step ({step['model']}, batch {step['batch_size']}, no-SD step "
        f"{step['baseline_s']['median']:.3g} s), median of {step['rounds']} rounds [min, max]:",
    ]
    for b in step["budgets"]:
        cells = [step[f"{kind}@{b}"] for kind in ("sd", *BASELINES)]
        shown = [f"{c['median']:.3f} [{c['min']:.2f}, {c['max']:.2f}]" for c in cells]
        lines.append(f"   b = {b}: skipped {shown[0]}, row mask {shown[1]}, dropout {shown[2]}")
    lines.append(
        f"2. pipeline ({pipe['images']} images, batch {pipe['batch_size']}): ours "
        f"{pipe['ours_images_per_s']:,.0f} img/s, torchvision ({pipe['torchvision_workers']} "
        f"workers) {pipe['torchvision_images_per_s']:,.0f} img/s (x{pipe['speedup']:.1f}); "
        f"waiting for data {100 * pipe['ours_data_wait_share']:.2f}% of a step, torchvision "
        f"{100 * pipe['torchvision_data_wait_share']:.2f}%"
    )
    lines.append(
        f"3. sensitivities of a batch / one training step ({sens['model']}): first order "
        f"{sens['first_order']['median']:.2f}, exact removal {sens['exact_removal']['median']:.2f}"
    )
    return "\n".join(lines)


def plot(step: dict, device: str, path: Path) -> None:
    """Step time against the budget, per kind of step: median with [min, max]."""
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    kinds = {"sd": "SD, blocks skipped (ours)", "row": "row mask (torchvision)"}
    for kind, label in (kinds | {"dropout": "Dropout"}).items():
        cells = [step[f"{kind}@{b}"] for b in step["budgets"]]
        median = [c["median"] for c in cells]
        below = [m - c["min"] for m, c in zip(median, cells, strict=True)]
        above = [c["max"] - m for m, c in zip(median, cells, strict=True)]
        bars = {"yerr": [below, above], "marker": "o", "capsize": 3}
        ax.errorbar(step["budgets"], median, label=label, **bars)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal: b")
    ax.set(xlabel="budget b = mean survival probability", ylabel="step time / no-SD step")
    ax.set(xlim=(0, 1.05))
    ax.set_title(f"{step['model']}, batch {step['batch_size']}, {device}", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--depth", type=int, default=110, help="CIFAR ResNet depth (6n + 2)")
    parser.add_argument("--batch-size", type=int, default=128)
    # An SD step's time follows its sampled depth (std sqrt(L b (1 - b)) blocks, Lemma 1) and a
    # CPU's timings drift by 10%: 15 rounds make the medians steady to about 0.02.
    parser.add_argument("--repeats", type=int, default=15, help="rounds of step timings")
    parser.add_argument("--images", type=int, default=10_000, help="synthetic CIFAR images")
    parser.add_argument("--workers", type=int, default=2, help="torchvision DataLoader workers")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--out", default=f"outputs/bench/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    args = parser.parse_args(argv)
    if args.quick:
        args.depth, args.batch_size, args.repeats, args.images = 8, 8, 1, 256
    device, out = torch.device(args.device), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    results = {
        "device": f"{name}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "sdexp": sdexp.__version__,
        "args": vars(args),
        "step": step_benchmark(device, args.depth, args.batch_size, args.repeats),
    }
    model = CifarResNet(depth=args.depth, num_outputs=10).to(device).train()
    model.gate.set_survival([0.3] * model.num_blocks)  # the smallest budget: the hardest case
    step = training_step(model, torch.optim.SGD(model.parameters(), lr=0.01))
    with tempfile.TemporaryDirectory() as root:
        write_synthetic_cifar(root, "cifar10", train_size=args.images, test_size=10)
        results["pipeline"] = pipeline_benchmark(
            device, Path(root), args.batch_size, args.workers, step
        )
    results["sensitivity"] = sensitivity_benchmark(device, args.depth, args.batch_size, 3)
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    plot(results["step"], results["device"], out / "step_time.png")
    print(f"{report(results)}\nwritten: {out / 'bench.json'}, {out / 'step_time.png'}")
    return results


if __name__ == "__main__":
    main()
