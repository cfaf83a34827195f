"""python -m sdexp.bench: does a smaller budget train faster, and does the data keep up?

The paper's practical claim for SD over Dropout (Fig. 1b) is that a smaller budget trains
faster. Every figure printed here is a ratio against a baseline timed in the same process, on the
same device, interleaved with it (one baseline step, then one step of each variant, repeated), as
the median over repeats with min and max; machines are noisy, so no absolute time stands alone.

1. step: one SGD step (forward, backward, Nesterov update) of Stable ResNet110, batch 128, at
   budgets 1.0 .. 0.3 (uniform mode) relative to the same model without SD; beside it the
   per-sample "row" mask of ``torchvision.ops.stochastic_depth``, which still computes every
   block, and Dropout on every residual branch keeping the same expected fraction of units.
2. pipeline: training batches per second of our in-memory pipeline (one gather, batched crop,
   flip and normalisation) against a torchvision-transforms DataLoader doing the same
   augmentation, and the share of a training step spent waiting for data with each.
3. sensitivity: SenseMode's first-order sensitivities for one batch against one training step,
   and against exact removal (L + 1 forward passes).
4. theory: the Monte Carlo cost per sample of the theory gradient experiment (Prop. 1).

Results go to ``OUT/bench.json`` (to compare with a later run) and ``OUT/step_time.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

import sdexp
from sdexp.data import CIFARDataModule
from sdexp.models import CifarResNet, ResidualNetwork
from sdexp.sensitivity import removal_sensitivities, sensitivities
from sdexp.synthetic import unverified, write_synthetic_cifar
from sdexp.theory.gradient import sample_gradient_norms, settings

BUDGETS = (1.0, 0.9, 0.7, 0.5, 0.3)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def interleaved_ratios(
    baseline: Callable[[], object],
    variants: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int = 1,
) -> dict[str, dict]:
    """Time the baseline and each variant in turn, ``repeats`` times; ratios per round."""
    for fn in [baseline, *variants.values()] * warmup:
        fn()
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    base_times = []
    for _ in range(repeats):
        base = timed(baseline, device)
        base_times.append(base)
        for name, fn in variants.items():
            ratios[name].append(timed(fn, device) / base)
    return {"baseline_s": summary(base_times)} | {k: summary(v) for k, v in ratios.items()}


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


def step_benchmark(device, depth: int, batch_size: int, repeats: int, budgets=BUDGETS) -> dict:
    torch.manual_seed(0)
    model = CifarResNet(depth=depth, num_outputs=10).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def step(budget: float, forward=None) -> Callable[[], None]:
        def run() -> None:
            model.gate.set_survival([budget] * model.num_blocks)
            out = model(x) if forward is None else forward_every_block(model, x, forward)
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return run

    variants = {f"sd@{b}": step(b) for b in budgets}
    variants |= {f"{name}@{b}": step(b, op) for b in budgets for name, op in BASELINES.items()}
    result = interleaved_ratios(step(1.0), variants, device, repeats)
    info = {"model": f"resnet{depth}", "batch_size": batch_size, "budgets": list(budgets)}
    return info | {"rounds": repeats} | result


# --- 2. input pipeline ------------------------------------------------------------------------


def pipeline_benchmark(device, root: Path, batch_size: int, workers: int, step: Callable) -> dict:
    """Images per second over one epoch, ours vs torchvision transforms in a DataLoader, and
    the share of training steps spent waiting for the next batch with each."""
    ours = CIFARDataModule(
        "cifar10", str(root), download=False, verify_md5=False, val_size=0, batch_size=batch_size
    )
    ours.trainer = pl.Trainer(accelerator=device.type, devices=1, logger=False)  # placement
    ours.setup()

    def our_batches():
        for batch in ours.train_dataloader():
            yield ours.on_after_batch_transfer(batch, 0)

    transform = torchvision.transforms.Compose(
        [
            torchvision.transforms.RandomCrop(32, padding=4),
            torchvision.transforms.RandomHorizontalFlip(),
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize(ours.mean.tolist(), ours.std.tolist()),
        ]
    )
    dataset = unverified(torchvision.datasets.CIFAR10)(str(root), train=True, transform=transform)
    torchvision_loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )

    def torchvision_batches():
        for x, y in torchvision_loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    result = {"images": len(dataset), "batch_size": batch_size, "torchvision_workers": workers}
    for name, batches in (("ours", our_batches), ("torchvision", torchvision_batches)):
        next(iter(batches()))  # warm up (worker start-up, first allocation)
        seconds = timed(lambda batches=batches: sum(len(y) for _, y in batches()), device)
        result[f"{name}_images_per_s"] = len(dataset) / seconds
        result[f"{name}_data_wait_share"] = data_wait_share(batches(), step, device)
    result["speedup"] = result["ours_images_per_s"] / result["torchvision_images_per_s"]
    return result


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


def sensitivity_benchmark(device, depth: int, batch_size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = CifarResNet(depth=depth, num_outputs=10).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def train_step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    variants = {
        "first_order": lambda: sensitivities(model, [(x, y)], F.cross_entropy),
        "exact_removal": lambda: removal_sensitivities(model, x, y, F.cross_entropy),
    }
    return {"model": f"resnet{depth}", "batch_size": batch_size} | interleaved_ratios(
        train_step, variants, device, repeats
    )


# --- 4. theory Monte Carlo --------------------------------------------------------------------


def theory_benchmark(quick: bool, samples: int = 4) -> dict:
    """Seconds per Monte Carlo sample of the gradient experiment (Prop. 1, Table 1): one fresh
    Vanilla ResNet and a forward and backward pass for every setting's mask (on the CPU, where
    ``python -m sdexp.theory`` runs, with its one thread)."""
    width, depth = (64, 10) if quick else (512, 50)
    cases = settings(("none", "uniform", "linear"), (0.5, 0.7), (False, True))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds = timed(
            lambda: sample_gradient_norms(cases, width, depth, 256, samples, 1, seed=0),
            torch.device("cpu"),
        )
    finally:
        torch.set_num_threads(threads)
    return {
        "seconds_per_sample": seconds / samples,
        "description": f"Vanilla ResNet{depth}, width {width}, {len(cases)} settings per sample, "
        "1 CPU thread",
    }


# --- report -----------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def print_report(results: dict) -> None:
    step = results["step"]
    print(f"\n{results['device']} | torch {results['torch']} | sdexp {results['sdexp']}")
    print(
        f"\n1. step time / no-SD step ({step['model']}, batch {step['batch_size']}; "
        f"no-SD step {step['baseline_s']['median']:.3g} s); "
        f"median of {step['rounds']} rounds [min, max]"
    )
    print(f"{'budget':>8} {'ours (skip)':>22} {'row mask':>22} {'dropout':>22}")
    for b in step["budgets"]:
        cells = [step[f"{kind}@{b}"] for kind in ("sd", "row", "dropout")]
        text = [f"{c['median']:.3f} [{c['min']:.2f}, {c['max']:.2f}]" for c in cells]
        print(f"{b:>8} " + " ".join(f"{t:>22}" for t in text))
    pipe = results["pipeline"]
    print(
        f"\n2. input pipeline ({pipe['images']} images, batch {pipe['batch_size']}): ours "
        f"{pipe['ours_images_per_s']:,.0f} img/s, torchvision DataLoader "
        f"({pipe['torchvision_workers']} workers) {pipe['torchvision_images_per_s']:,.0f} img/s: "
        f"x{pipe['speedup']:.1f}; waiting for data: ours {100 * pipe['ours_data_wait_share']:.2f}%"
        f", torchvision {100 * pipe['torchvision_data_wait_share']:.2f}% of a step"
    )
    sens = results["sensitivity"]
    print(
        f"\n3. sensitivities per batch / one training step ({sens['model']}): first order "
        f"{sens['first_order']['median']:.2f}, exact removal (L + 1 forwards) "
        f"{sens['exact_removal']['median']:.2f}"
    )
    theory = results["theory"]
    if theory:
        print(
            f"\n4. theory gradient Monte Carlo: {theory['seconds_per_sample'] * 1e3:.2f} ms per "
            f"sample ({theory['description']})"
        )


def plot(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    step = results["step"]
    budgets = step["budgets"]
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    for kind, label in (
        ("sd", "SD, blocks skipped (ours)"),
        ("row", "row mask (torchvision)"),
        ("dropout", "Dropout"),
    ):
        cells = [step[f"{kind}@{b}"] for b in budgets]
        median = [c["median"] for c in cells]
        err = [
            [m - c["min"] for m, c in zip(median, cells, strict=True)],
            [c["max"] - m for m, c in zip(median, cells, strict=True)],
        ]
        ax.errorbar(budgets, median, yerr=err, marker="o", capsize=3, label=label)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal: b")
    ax.set(
        xlabel="budget b = mean survival probability",
        ylabel="step time / no-SD step",
        title=f"{step['model']}, batch {step['batch_size']}, {results['device']}",
        xlim=(0, 1.05),
    )
    ax.title.set_fontsize(8)
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
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "device": device_name(device),
        "torch": torch.__version__,
        "sdexp": sdexp.__version__,
        "args": vars(args),
        "step": step_benchmark(device, args.depth, args.batch_size, args.repeats),
    }
    model = CifarResNet(depth=args.depth, num_outputs=10).to(device).train()
    model.gate.set_survival([0.3] * model.num_blocks)  # the smallest budget: the hardest case
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def train_step(x: Tensor, y: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    with tempfile.TemporaryDirectory() as root:
        write_synthetic_cifar(root, "cifar10", train_size=args.images, test_size=10)
        results["pipeline"] = pipeline_benchmark(
            device, Path(root), args.batch_size, args.workers, train_step
        )
    results["sensitivity"] = sensitivity_benchmark(device, args.depth, args.batch_size, repeats=3)
    results["theory"] = theory_benchmark(args.quick)
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "step_time.png")
    print_report(results)
    print(f"\nwritten: {out / 'bench.json'}, {out / 'step_time.png'}")
    return results


if __name__ == "__main__":
    main()
