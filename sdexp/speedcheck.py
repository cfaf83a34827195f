"""python -m sdexp.speedcheck: how much cheaper do the fast paths make the Table 2 grid on one GPU?

Issue 10's measurements, with the current code, on this machine's device (``scripts/gpu_check.sh``
runs them all within a few minutes on an H200):

1. ``single``, one process:
   - parity: eager against graphed (``speed.cuda_graphs``) SGD steps of Stable ResNet110 at
     b = 0.5, from the same initialisation, batches and masks, 30 steps, under both of the
     recipe's ``dropped_blocks``. Free-running: the losses agree to a tolerance. In lock step
     (the graphed network starts every step from the eager network's state): the blocks a
     step drops end it with parameters, momentum buffers and BatchNorm buffers bit-identical
     to eager's, and with BatchNorm buffers (and, under ``frozen``, everything) untouched.
   - throughput: training images per second of one run, over a Lightning epoch loop on
     CIFAR-shaped data (the in-memory pipeline with crop and flip), at b = 1, 0.5 and 0.3,
     eager against graphed, fp32 and bf16 autocast; ResNet56 too; one validation pass.
   - overhead: Lightning's share of a graphed step (the same steps in a bare PyTorch loop),
     and the waits for the device per training step (CUDA's sync debug mode counts them).
2. ``concurrent``: aggregate images per second of K runs on the GPU at once (K processes, each
   pinned to its share of the CPUs as ``hydra/launcher=gpu_shared`` pins its jobs; timed from
   a common start), for K = 1, 2, 4, 8; run it once without and once with the MPS daemon.
3. ``report``: the tables, the targets, and the four Table 2 presets' cost in GPU-hours.

Every figure is the wall time of the measured steps with the device synchronised at both ends,
after warm-up steps (the capture of the graphs happens in the first). ``--quick``: tiny sizes
for a CPU, with ``sdexp.graphs.emulated_make_graphed_callables`` in place of CUDA graphs, to
check the code path (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import sdexp
from sdexp.data import CIFARDataModule
from sdexp.graphs import GraphedSteps, emulated_make_graphed_callables
from sdexp.models import CifarResNet
from sdexp.module import (
    LightningData,
    Speed,
    StepGradients,
    StochasticDepthModule,
    start_momentum,
)
from sdexp.survival import MODES, Uniform
from sdexp.synthetic import write_synthetic_cifar

BASELINE_IMAGES_PER_S = 2169  # issue 10: eager fp32, b = 1, batch 128, H200 (gpu_check_h200.log)
BUDGETS = (1.0, 0.5, 0.3)
PRECISIONS = ("32-true", "bf16-mixed")


@dataclass(frozen=True)
class Sizes:
    """How much to measure: full (a GPU) or quick (a CPU dry run)."""

    depth: int = 110
    small_depth: int = 56
    batch_size: int = 64  # the reference recipe's
    train_images: int = 25_000
    val_images: int = 5_000
    warmup: int = 15  # the graphs are captured in the first
    eager_steps: int = 60
    graphed_steps: int = 200
    sync_steps: int = 60
    parity_steps: int = 30
    concurrent_steps: int = 150
    budgets: tuple[float, ...] = BUDGETS
    precisions: tuple[str, ...] = PRECISIONS


QUICK = Sizes(
    depth=14,
    small_depth=8,
    batch_size=8,
    train_images=96,
    val_images=16,
    warmup=2,
    eager_steps=3,
    graphed_steps=3,
    sync_steps=3,
    parity_steps=4,
    concurrent_steps=3,
    budgets=(1.0, 0.5),
    precisions=("32-true",),
)


@dataclass(frozen=True)
class Setup:
    """What one measured run trains: the ``reference`` recipe's optimiser on Stable ResNet."""

    depth: int
    batch_size: int
    budget: float
    graphs: bool = False
    precision: str = "32-true"
    fused: bool = False
    channels_last: bool = False
    dropped_blocks: str = "decay"

    @property
    def name(self) -> str:
        parts = [f"resnet{self.depth}", "graphed" if self.graphs else "eager"]
        parts += ["bf16" if self.precision.startswith("bf16") else "fp32", f"b={self.budget:g}"]
        parts += ["fused"] * self.fused + ["channels_last"] * self.channels_last
        return " ".join(parts)


def sgd(params, **kwargs) -> torch.optim.SGD:
    """The reference recipe's optimiser (sdexp/conf/recipe/reference.yaml)."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, **kwargs)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def graph_maker(device: torch.device):
    """CUDA graphs on a GPU; their eager stand-in elsewhere (a dry run of the code path)."""
    return None if device.type == "cuda" else emulated_make_graphed_callables


def build(setup: Setup, data_dir: Path, device: torch.device, val_images: int):
    pl.seed_everything(0, verbose=False)
    model = CifarResNet(depth=setup.depth, num_outputs=10, mask_seed=0)
    module = StochasticDepthModule(
        model,
        Uniform(),
        setup.budget,
        "classification",
        10,
        optimizer=sgd,
        dropped_blocks=setup.dropped_blocks,
        speed=Speed(
            channels_last=setup.channels_last,
            cuda_graphs=setup.graphs,
            fused_optimizer=setup.fused,
        ),
        make_graphed=graph_maker(device),
    )
    data = CIFARDataModule(
        data_dir=str(data_dir),
        download=False,
        verify_md5=False,
        val_size=val_images,
        batch_size=setup.batch_size,
        normalize=False,
    )
    return module, data


def device_waits(caught: list) -> int:
    """How many of the recorded warnings are CUDA sync debug mode's ("called a synchronizing
    CUDA operation"): each is one wait of the host for the device."""
    return sum("synchroniz" in str(w.message) for w in caught)


class Window(pl.Callback):
    """Times training steps [start, end of epoch), the device synchronised at both ends.

    ``barrier``: called before the window opens (concurrent runs start together). ``caught``:
    the list ``warnings.catch_warnings(record=True)`` records into; with it, CUDA's sync debug
    mode is on inside the window and the waits before each step are counted (``marks``)."""

    def __init__(self, start: int, barrier: Callable[[], None] | None = None, caught=None):
        self.start, self.barrier, self.caught = start, barrier, caught
        self.marks: list[int] = []
        self.t0 = self.t1 = self.wall0 = self.wall1 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.start:
            if self.barrier is not None:
                self.barrier()
            synchronize(pl_module.device)
            self.t0, self.wall0 = time.perf_counter(), time.time()
            if self.caught is not None and pl_module.device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
        if self.caught is not None and batch_idx >= self.start:
            self.marks.append(device_waits(self.caught))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.caught is not None:
            self.marks.append(device_waits(self.caught))
            if pl_module.device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        synchronize(pl_module.device)
        self.t1, self.wall1 = time.perf_counter(), time.time()


def trainer_for(device: torch.device, precision: str, batches: int, callbacks, log_every=50):
    return pl.Trainer(
        accelerator=device.type,
        devices=1,
        precision=precision,
        max_epochs=1,
        limit_train_batches=batches,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=log_every,
        callbacks=callbacks,
    )


def timed_fit(
    setup: Setup,
    data_dir: Path,
    device: torch.device,
    sizes: Sizes,
    steps: int,
    barrier: Callable[[], None] | None = None,
    count_waits: bool = False,
    log_every: int = 50,
) -> dict:
    """Images per second of ``steps`` training steps of one run, after ``sizes.warmup``."""
    module, data = build(setup, data_dir, device, sizes.val_images)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        window = Window(sizes.warmup, barrier, caught if count_waits else None)
        trainer = trainer_for(device, setup.precision, sizes.warmup + steps, [window], log_every)
        trainer.fit(module, datamodule=LightningData(data))
    seconds = window.t1 - window.t0
    result = {
        "name": setup.name,
        "setup": dataclasses.asdict(setup),
        "steps": steps,
        "seconds": seconds,
        "step_ms": 1e3 * seconds / steps,
        "images_per_s": steps * setup.batch_size / seconds,
        "wall": [window.wall0, window.wall1],
    }
    if device.type == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if count_waits:
        marks = window.marks
        per_step = [b - a for a, b in zip(marks, marks[1:], strict=False)]
        logs = [(sizes.warmup + i + 1) % log_every == 0 for i in range(len(per_step))]
        result["waits"] = {
            "counted": device.type == "cuda",  # CUDA's sync debug mode; nothing to count on a CPU
            "log_every_n_steps": log_every,
            "plain_steps": [n for n, log in zip(per_step, logs, strict=True) if not log],
            "logging_steps": [n for n, log in zip(per_step, logs, strict=True) if log],
        }
    return result


def validation_seconds(setup: Setup, data_dir: Path, device: torch.device, sizes: Sizes) -> float:
    """One pass over the validation split (eager: evaluation never uses the graphs)."""
    module, data = build(setup, data_dir, device, sizes.val_images)
    trainer = pl.Trainer(
        accelerator=device.type,
        devices=1,
        precision=setup.precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(module, datamodule=LightningData(data), verbose=False)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    trainer.validate(module, datamodule=trainer.datamodule, verbose=False)
    synchronize(device)
    return time.perf_counter() - start


# --- Lightning's share of a step ----------------------------------------------------------------


def bare_loop(setup: Setup, data_dir: Path, device: torch.device, sizes: Sizes, steps: int):
    """The training steps of ``timed_fit`` without Lightning: the same module pieces (graphs,
    recipe's gradients, optimiser), the same data pipeline, the same NaN check every 50 steps."""
    module, data = build(setup, data_dir, device, sizes.val_images)
    data.trainer = pl.Trainer(accelerator=device.type, devices=1, logger=False)  # placement
    data.setup("fit")
    module.to(device).train()
    network = module.model
    network.gate.set_survival(Uniform().survival(setup.budget, network.num_blocks).tolist())
    optimizer = sgd(module.parameters(), **({"fused": True} if setup.fused else {}))
    if setup.fused:
        start_momentum(optimizer)
    gradients = StepGradients(network, setup.dropped_blocks)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in setup.precision)
    graphs = None
    start = 0.0
    for index, batch in enumerate(data.train_dataloader()):
        if index == sizes.warmup:
            synchronize(device)
            start = time.perf_counter()
        if index == sizes.warmup + steps:
            break
        x, y = data.on_after_batch_transfer(data.transfer_batch_to_device(batch, device, 0), 0)
        x = module.network_input(x)
        with autocast:
            if setup.graphs and graphs is None:
                graphs = GraphedSteps(network, module.loss_fn, x, y, graph_maker(device))
            loss = graphs.loss(x, y) if graphs is not None else F.cross_entropy(network(x), y)
        gradients.clear()
        loss.backward()
        optimizer.step()
        if (index + 1) % 50 == 0 and not torch.isfinite(loss.detach().cpu()):
            raise RuntimeError("the loss is not finite")
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"name": setup.name + " (bare loop)", "steps": steps, "step_ms": 1e3 * seconds / steps}


# --- parity --------------------------------------------------------------------------------------


def block_tensors(network, optimizer, index: int) -> dict[str, torch.Tensor]:
    """Parameters, momentum buffers and BatchNorm buffers of block ``index``."""
    block = network.blocks[index]
    found = {f"param.{k}": v.detach().clone() for k, v in block.named_parameters()}
    found |= {f"buffer.{k}": v.clone() for k, v in block.named_buffers()}
    for k, p in block.named_parameters():
        buffer = optimizer.state.get(p, {}).get("momentum_buffer")
        if buffer is not None:
            found[f"momentum.{k}"] = buffer.clone()
    return found


def copy_state(source, source_opt, target, target_opt) -> None:
    """``target`` := ``source``, in place (the graphs hold the target's tensors)."""
    with torch.no_grad():
        for a, b in zip(source.parameters(), target.parameters(), strict=True):
            b.copy_(a)
        for a, b in zip(source.buffers(), target.buffers(), strict=True):
            b.copy_(a)
        for a, b in zip(source.parameters(), target.parameters(), strict=True):
            buffer = source_opt.state.get(a, {}).get("momentum_buffer")
            if buffer is None:
                target_opt.state.pop(b, None)
            elif "momentum_buffer" in target_opt.state.get(b, {}):
                target_opt.state[b]["momentum_buffer"].copy_(buffer)
            else:
                target_opt.state[b]["momentum_buffer"] = buffer.clone()
    target.gate.generator.set_state(source.gate.generator.get_state())


def parity(
    device: torch.device,
    sizes: Sizes,
    dropped_blocks: str,
    lock_step: bool,
    fused: bool,
    make_graphed=None,
) -> dict:
    """Eager and graphed SGD steps at b = 0.5 from the same init, batches and masks.
    ``make_graphed``: what captures the graphs (default: CUDA graphs on a GPU, else their
    stand-in)."""
    torch.manual_seed(0)
    eager = CifarResNet(depth=sizes.depth, num_outputs=10, mask_seed=0).to(device).train()
    graphed = copy.deepcopy(eager)
    for network in (eager, graphed):
        network.gate.set_survival([0.5] * network.num_blocks)
    kwargs = {"fused": True} if fused else {}
    eager_opt, graphed_opt = sgd(eager.parameters(), **kwargs), sgd(graphed.parameters(), **kwargs)
    if fused:
        start_momentum(eager_opt)
        start_momentum(graphed_opt)
    g = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(sizes.batch_size, 3, 32, 32, generator=g).to(device),
            torch.randint(0, 10, (sizes.batch_size,), generator=g).to(device),
        )
        for _ in range(sizes.parity_steps)
    ]
    maker = make_graphed or graph_maker(device)
    graphs = GraphedSteps(graphed, F.cross_entropy, *batches[0], maker)
    losses, worst, mismatches = [], 0.0, []

    gradients = {id(n): StepGradients(n, dropped_blocks) for n in (eager, graphed)}

    def step(loss_of, network, optimizer, x, y) -> torch.Tensor:
        loss = loss_of(x, y)
        gradients[id(network)].clear()
        loss.backward()
        optimizer.step()
        return loss.detach()

    for t, (x, y) in enumerate(batches):
        if lock_step:
            copy_state(eager, eager_opt, graphed, graphed_opt)
        a = step(lambda x, y: F.cross_entropy(eager(x), y), eager, eager_opt, x, y)
        dropped = [i for i, kept in enumerate(eager.gate.last_mask) if not kept]
        before = {i: block_tensors(graphed, graphed_opt, i) for i in dropped}
        b = step(graphs.loss, graphed, graphed_opt, x, y)
        if graphed.gate.last_mask != eager.gate.last_mask:
            raise RuntimeError(f"step {t}: the two networks drew different masks")
        a, b = float(a), float(b)
        losses.append((a, b))
        worst = max(worst, abs(a - b) / max(abs(a), 1e-12))
        for i in dropped:
            mine, theirs = (
                block_tensors(graphed, graphed_opt, i),
                block_tensors(eager, eager_opt, i),
            )
            for key, value in mine.items():
                untouched = key.startswith("buffer") or dropped_blocks == "frozen"
                if untouched and not torch.equal(value, before[i][key]):
                    mismatches.append(f"step {t}, block {i}: {key} changed")
                if lock_step and not torch.equal(value, theirs[key]):
                    mismatches.append(f"step {t}, block {i}: {key} differs from eager")
    drift = max(
        ((p - q).abs().max() / p.abs().max().clamp_min(1e-12)).item()
        for p, q in zip(eager.parameters(), graphed.parameters(), strict=True)
    )
    return {
        "dropped_blocks": dropped_blocks,
        "lock_step": lock_step,
        "fused": fused,
        "steps": len(batches),
        "losses": losses,
        "loss_max_relative_difference": worst,
        "parameters_max_relative_difference": drift,
        "dropped_block_mismatches": mismatches[:20],
        "dropped_block_mismatch_count": len(mismatches),
    }


# --- 1. single -----------------------------------------------------------------------------------


def prepare_data(root: Path, sizes: Sizes) -> Path:
    """Synthetic CIFAR-10 in the real on-disk format, written once per folder."""
    if not (root / "cifar-10-batches-py" / "data_batch_1").exists():
        write_synthetic_cifar(root, "cifar10", sizes.train_images + sizes.val_images, 100)
    return root


class Deadline:
    """Parts after ``seconds`` are skipped (and listed): the device time is lent, not owned."""

    def __init__(self, seconds: float) -> None:
        self.end, self.skipped = time.monotonic() + seconds, []

    def allows(self, part: str) -> bool:
        if time.monotonic() < self.end:
            return True
        self.skipped.append(part)
        print(f"  (deadline: skipping {part})", flush=True)
        return False


class Parts:
    """Runs the parts of a check in turn: past the deadline a part is skipped (and listed); a
    part that fails is recorded with the end of its traceback and the next one runs (one
    failure must not cost the measurements of a lent GPU); the results are written after each."""

    def __init__(self, path: Path, deadline_s: float, results: dict) -> None:
        self.path, self.deadline, self.results = path, Deadline(deadline_s), results
        results.setdefault("errors", [])

    def __call__(self, name: str, part: Callable[[], object]) -> object | None:
        try:
            return part() if self.deadline.allows(name) else None
        except Exception as error:  # noqa: BLE001 - recorded, and the check goes on
            tail = traceback.format_exc().splitlines()[-12:]
            self.results["errors"].append({"part": name, "error": repr(error), "traceback": tail})
            print(f"  {name}: FAILED ({type(error).__name__}: {error})", flush=True)
            return None
        finally:
            gc.collect()  # the graphs' memory pools of the run just measured
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.results["skipped"] = self.deadline.skipped
            self.path.write_text(json.dumps(self.results, indent=1))


def single(args, sizes: Sizes, device: torch.device) -> dict:
    data_dir = prepare_data(Path(args.data), sizes)
    results: dict = {"info": info(device, sizes), "parity": [], "runs": [], "validation": []}
    part = Parts(Path(args.out) / "single.json", args.deadline_s, results)
    batch = sizes.batch_size

    def run(setup: Setup, steps: int) -> None:
        def measure() -> None:
            result = timed_fit(setup, data_dir, device, sizes, steps)
            results["runs"].append(result)
            memory = result.get("max_memory_gib")
            print(
                f"  {setup.name:<46} {result['step_ms']:8.2f} ms/step "
                f"{result['images_per_s']:10,.0f} img/s"
                + (f", {memory:.2f} GiB" if memory is not None else ""),
                flush=True,
            )

        part(setup.name, measure)

    def validate(depth: int) -> None:
        """A pass over the validation split, eager, in each precision."""
        for precision in sizes.precisions:
            setup = Setup(depth, batch, 0.5, precision=precision)

            def measure(setup=setup, precision=precision) -> None:
                seconds = validation_seconds(setup, data_dir, device, sizes)
                found = {"depth": depth, "precision": precision, "seconds": seconds}
                results["validation"].append(found | {"images": sizes.val_images})
                print(f"  validation pass, resnet{depth} {precision}: {seconds:.2f} s", flush=True)

            part(f"validation {setup.name}", measure)

    print("== parity, eager against graphed, b = 0.5", flush=True)
    for dropped_blocks in ("decay", "frozen"):
        for lock_step in (True, False):

            def check(dropped_blocks=dropped_blocks, lock_step=lock_step) -> None:
                found = parity(device, sizes, dropped_blocks, lock_step, fused=True)
                results["parity"].append(found)
                print(
                    f"  {dropped_blocks:<6} {'lock step' if lock_step else 'free':<9} "
                    f"loss rel. diff {found['loss_max_relative_difference']:.2e}, params "
                    f"{found['parameters_max_relative_difference']:.2e}, dropped-block "
                    f"mismatches {found['dropped_block_mismatch_count']}",
                    flush=True,
                )

            part(f"parity {dropped_blocks}", check)

    print("== one run: eager against graphed (+ fused SGD)", flush=True)
    for precision in sizes.precisions:
        for budget in sizes.budgets:
            run(Setup(sizes.depth, batch, budget, precision=precision), sizes.eager_steps)
            run(Setup(sizes.depth, batch, budget, True, precision, True), sizes.graphed_steps)
    validate(sizes.depth)

    print("== waits for the device per training step (CUDA sync debug mode)", flush=True)
    for graphs in (False, True):
        setup = Setup(sizes.depth, batch, 0.5, graphs, fused=graphs)

        def count(setup=setup) -> None:
            found = timed_fit(setup, data_dir, device, sizes, sizes.sync_steps, count_waits=True)
            waits = found["waits"]
            results.setdefault("waits", []).append({"name": setup.name, **waits})
            print(
                f"  {setup.name:<46} plain steps: max {max(waits['plain_steps'], default=0)}, "
                f"logging steps: {waits['logging_steps']} (counted: {waits['counted']})",
                flush=True,
            )

        part(f"waits {setup.name}", count)

    print("== Lightning's share of a graphed step", flush=True)

    def share() -> None:
        setup = Setup(sizes.depth, batch, 0.5, True, fused=True)
        bare = results["bare_loop"] = bare_loop(setup, data_dir, device, sizes, sizes.graphed_steps)
        lightning = next((r for r in results["runs"] if r["name"] == setup.name), None)
        if lightning is not None:
            results["lightning_share"] = 1 - bare["step_ms"] / lightning["step_ms"]
            print(
                f"  bare loop {bare['step_ms']:.2f} ms/step, Lightning {lightning['step_ms']:.2f}"
                f" ms/step: Lightning's share {100 * results['lightning_share']:.0f}%",
                flush=True,
            )

    part("bare loop", share)

    print(f"== resnet{sizes.small_depth}; variants of resnet{sizes.depth} at b = 0.5", flush=True)
    for precision in sizes.precisions:
        for budget in sizes.budgets:
            small = Setup(sizes.small_depth, batch, budget, True, precision, fused=True)
            run(small, sizes.graphed_steps)
    validate(sizes.small_depth)
    for budget in sizes.budgets:
        run(Setup(sizes.small_depth, batch, budget), sizes.eager_steps)
    run(Setup(sizes.depth, batch, 0.5, True), sizes.graphed_steps)  # graphed, SGD not fused
    bf16 = sizes.precisions[-1]
    run(Setup(sizes.depth, batch, 0.5, True, bf16, True, True), sizes.graphed_steps)
    return results


# --- 2. concurrent runs --------------------------------------------------------------------------


def wait_for_all(folder: Path, slot: int, jobs: int, limit_s: float = 600) -> None:
    """A barrier between processes: say this one is ready, wait until all ``jobs`` are."""
    (folder / f"ready.{slot}").write_text(str(os.getpid()))
    deadline = time.monotonic() + limit_s
    while len(list(folder.glob("ready.*"))) < jobs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(folder.glob('ready.*')))} of {jobs} runs ready")
        time.sleep(0.005)


def setup_from(args) -> Setup:
    return Setup(args.depth, args.batch_size, args.budget, args.graphs, args.precision, args.graphs)


def worker(args, sizes: Sizes, device: torch.device) -> None:
    """One of K concurrent runs: pinned to its CPU share, timed from the common start."""
    from sdexp.sharing import pin_threads

    (jobs,) = args.jobs
    cpus = pin_threads(args.slot, jobs)
    barrier = partial(wait_for_all, Path(args.barrier), args.slot, jobs)
    setup = setup_from(args)
    result = timed_fit(setup, Path(args.data), device, sizes, args.steps, barrier=barrier)
    result |= {"slot": args.slot, "jobs": jobs, "cpus": cpus}
    Path(args.result).write_text(json.dumps(result))


def worker_command(args, slot: int, jobs: int, scratch: Path, data_dir: Path) -> list[str]:
    options = {
        "--slot": slot,
        "--jobs": jobs,
        "--barrier": scratch / "barrier",
        "--result": scratch / f"{slot}.json",
        "--data": data_dir,
        "--device": args.device,
        "--steps": args.steps,
        "--depth": args.depth,
        "--batch-size": args.batch_size,
        "--budget": args.budget,
        "--precision": args.precision,
    }
    command = [sys.executable, "-m", "sdexp.speedcheck", "worker"]
    command += [str(x) for option in options.items() for x in option]
    return command + ["--graphs"] * args.graphs + ["--quick"] * args.quick


def run_together(args, jobs: int, data_dir: Path) -> tuple[list[dict], list[dict]]:
    """``jobs`` worker processes at once; their results, and the failures with their logs."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "barrier").mkdir()
        processes = []
        for slot in range(jobs):
            log = open(scratch / f"{slot}.log", "w")  # noqa: SIM115 - closed below
            command = worker_command(args, slot, jobs, scratch, data_dir)
            processes.append((subprocess.Popen(command, stdout=log, stderr=log), log))
        failed = []
        for slot, (process, log) in enumerate(processes):
            try:
                code = process.wait(timeout=args.timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                code = "timeout"
            log.close()
            if code != 0:
                tail = (scratch / f"{slot}.log").read_text()[-2000:]
                failed.append({"slot": slot, "exit": code, "log": tail})
        results = [json.loads(p.read_text()) for p in sorted(scratch.glob("[0-9]*.json"))]
    return results, failed


def concurrent(args, sizes: Sizes) -> dict:
    """K runs at once for every K in ``--jobs``: aggregate images per second over the span
    from the first start to the last end of their timed steps."""
    data_dir = prepare_data(Path(args.data), sizes)
    setup = setup_from(args)
    found: dict = {"label": args.label, "setup": setup.name, "mps": mps_env(), "runs": []}
    print(f"== {args.label}: {setup.name}, K runs at once", flush=True)
    deadline = Deadline(args.deadline_s)
    for jobs in args.jobs:
        if not deadline.allows(f"K = {jobs}"):
            continue
        results, failed = run_together(args, jobs, data_dir)
        entry: dict = {"jobs": jobs, "failed": failed, "per_run": results}
        if results and not failed:
            span = max(r["wall"][1] for r in results) - min(r["wall"][0] for r in results)
            entry["images_per_s"] = sum(r["steps"] * setup.batch_size for r in results) / span
            rates = [r["images_per_s"] for r in results]
            print(
                f"  K = {jobs}: {entry['images_per_s']:10,.0f} img/s in all "
                f"(each run {min(rates):,.0f} to {max(rates):,.0f})",
                flush=True,
            )
        else:
            print(f"  K = {jobs}: runs {[f['slot'] for f in failed]} failed", flush=True)
            print(failed[0]["log"] if failed else "no results", flush=True)
        found["runs"].append(entry)
        found["skipped"] = deadline.skipped
        (Path(args.out) / f"concurrent_{args.label}.json").write_text(json.dumps(found, indent=1))
    return found


def mps_env() -> dict:
    return {k: v for k, v in os.environ.items() if k.startswith("CUDA_MPS")}


# --- 3. report: cost of the presets --------------------------------------------------------------


def preset_budgets(num_blocks: int, seeds: int = 4) -> list[float]:
    """The budget of every run of a Table 2 preset (sdexp/conf/sweep/table2_*.yaml): SenseMode,
    Uniform and Linear at 0.1 .. 0.9 where the mode can meet the budget, the no-SD baseline
    once per seed (at b = 1), over ``seeds`` seeds."""
    budgets = []
    for name in ("sensemode", "uniform", "linear", "none"):
        mode = MODES[name]()
        cells = {mode.effective_budget(b / 10) for b in range(1, 10)}
        budgets += [b for b in sorted(cells) if b >= mode.smallest_budget(num_blocks)] * seeds
    return budgets


def fit_line(points: dict[float, float]) -> tuple[float, float]:
    """Least squares t(b) = a + c b through the measured step times."""
    xs, ys = list(points), list(points.values())
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    c = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if n > 1 else 0.0
    return my - c * mx, c


def preset_hours(
    step_s: dict[float, float],
    validation_s: float,
    num_blocks: int,
    train_images: int = 45_000,
    batch_size: int = 64,
    epochs: int = 164,
    test_passes: float = 4.0,
) -> float:
    """GPU-hours of one preset run one at a time: every run's epochs of training steps (step
    time t(b) from the line through the measured budgets) and a validation pass per epoch, plus
    its two test passes at the end (10,000 images each: ``test_passes`` validation passes)."""
    a, c = fit_line(step_s)
    steps = math.ceil(train_images / batch_size)
    seconds = sum(
        epochs * (steps * (a + c * b) + validation_s) + test_passes * validation_s
        for b in preset_budgets(num_blocks)
    )
    return seconds / 3600


def table(rows: list[list[str]]) -> list[str]:
    """A Markdown table, header first."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return [*lines, ""]


class Measured:
    """What ``single.json`` and the ``concurrent_*.json`` files of one folder hold."""

    def __init__(self, out: Path) -> None:
        self.single = json.loads((out / "single.json").read_text())
        self.runs = {r["name"]: r for r in self.single["runs"]}
        fields = self.single["info"]["sizes"]
        self.sizes = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        self.concurrent = {
            p.stem.removeprefix("concurrent_"): json.loads(p.read_text())
            for p in sorted(out.glob("concurrent_*.json"))
        }

    def run(self, depth: int, budget: float, graphed: bool, precision: str) -> dict | None:
        """Eager runs use PyTorch's default SGD, graphed runs the fused one."""
        s = self.sizes
        return self.runs.get(Setup(depth, s.batch_size, budget, graphed, precision, graphed).name)

    def step_seconds(self, depth: int, graphed: bool, precision: str) -> dict[float, float]:
        found = {b: self.run(depth, b, graphed, precision) for b in self.sizes.budgets}
        return {b: r["step_ms"] / 1e3 for b, r in found.items() if r}

    def validation_seconds(self, depth: int, precision: str) -> float:
        """A pass over 5,000 validation images (scaled from the measured one)."""
        for v in self.single["validation"]:
            if v["depth"] == depth and v["precision"] == precision:
                return v["seconds"] * 5_000 / v["images"]
        return 0.0

    def best_precision(self, depth: int) -> str | None:
        """The precision of the faster graphed runs (over all budgets)."""
        options = {p: self.step_seconds(depth, True, p) for p in self.sizes.precisions}
        complete = {p: t for p, t in options.items() if len(t) == len(self.sizes.budgets)}
        return min(complete, key=lambda p: sum(complete[p].values())) if complete else None

    def aggregate(self) -> dict[str, dict[int, float]]:
        """Images per second of K runs at once, per label (plain, mps) and K."""
        return {
            label: {e["jobs"]: e["images_per_s"] for e in c["runs"] if "images_per_s" in e}
            for label, c in self.concurrent.items()
        }


def parity_lines(m: Measured) -> list[str]:
    rows = [["recipe", "steps", "loss: max rel. diff", "params: max rel. diff", "dropped blocks"]]
    for p in m.single["parity"]:
        mode = "lock step" if p["lock_step"] else "free-running"
        bad = p["dropped_block_mismatch_count"]
        rows.append(
            [
                f"{p['dropped_blocks']}, {mode}",
                str(p["steps"]),
                f"{p['loss_max_relative_difference']:.1e}",
                f"{p['parameters_max_relative_difference']:.1e}",
                "bit-identical" if not bad else f"{bad} mismatches",
            ]
        )
    return ["## Parity: eager against graphed steps (b = 0.5, fused SGD, fp32)", "", *table(rows)]


def throughput_lines(m: Measured) -> list[str]:
    s = m.sizes
    rows = [["network, precision", "b", "eager", "graphed + fused SGD", "speed-up"]]
    for depth in (s.depth, s.small_depth):
        for precision in s.precisions:
            for b in s.budgets:
                eager, fast = m.run(depth, b, False, precision), m.run(depth, b, True, precision)
                cells = [
                    f"{r['images_per_s']:,.0f} ({r['step_ms']:.1f} ms)" if r else "-"
                    for r in (eager, fast)
                ]
                ratio = (
                    f"{fast['images_per_s'] / eager['images_per_s']:.1f}x"
                    if eager and fast
                    else "-"
                )
                rows.append([f"resnet{depth} {precision}", f"{b:g}", *cells, ratio])
    lines = [f"## One run: training images per second (batch {s.batch_size}; step time)", ""]
    lines += table(rows)
    for r in m.single["runs"]:
        if "channels_last" in r["name"] or ("graphed" in r["name"] and "fused" not in r["name"]):
            lines.append(f"- {r['name']}: {r['images_per_s']:,.0f} img/s ({r['step_ms']:.2f} ms)")
    if "bare_loop" in m.single:
        bare, share = m.single["bare_loop"], m.single.get("lightning_share")
        shown = f"; Lightning's share of the step: {100 * share:.0f}%" if share is not None else ""
        lines.append(f"- {bare['name']}: {bare['step_ms']:.2f} ms/step{shown}")
    for w in m.single.get("waits", []):
        lines.append(
            f"- waits for the device, {w['name']}: at most {max(w['plain_steps'], default=0)} "
            f"per step, {w['logging_steps']} on the logging steps (counted: {w['counted']})"
        )
    memory = [r["max_memory_gib"] for r in m.single["runs"] if "max_memory_gib" in r]
    if memory:
        lines.append(f"- GPU memory of one run: at most {max(memory):.2f} GiB")
    return [*lines, ""]


def concurrent_lines(m: Measured) -> list[str]:
    rates = m.aggregate()
    if not rates:
        return []
    rows = [["runs at once", *(f"{label}: img/s in all" for label in rates)]]
    for jobs in sorted({k for r in rates.values() for k in r}):
        rows.append([str(jobs), *(f"{r[jobs]:,.0f}" if jobs in r else "-" for r in rates.values())])
    lines = ["## Several runs on the GPU at once", "", *table(rows)]
    lines += [f"- {label}: {c['setup']}" for label, c in m.concurrent.items()]
    return [*lines, ""]


def costs(m: Measured) -> dict[str, dict[str, float | None]]:
    """GPU-hours of the ResNet110 and ResNet56 presets and of the four (two of each)."""
    s = m.sizes
    best = {d: m.best_precision(d) for d in (s.depth, s.small_depth)}
    found = {}
    for label, graphed in (("eager fp32, one run at a time", False), ("graphed, one run", True)):
        hours = {}
        for depth in (s.depth, s.small_depth):
            precision = (best[depth] or "32-true") if graphed else "32-true"
            times = m.step_seconds(depth, graphed, precision)
            if len(times) == len(s.budgets):
                validation = m.validation_seconds(depth, precision)
                hours[depth] = preset_hours(times, validation, CifarResNet.blocks_for(depth))
        found[label] = hours
    for label, rates in m.aggregate().items():
        jobs = max(rates, key=rates.get, default=1)
        if 1 in rates and jobs > 1:
            speedup = rates[jobs] / rates[1]
            one = found["graphed, one run"]
            found[f"graphed, {jobs} runs at once ({label})"] = {
                d: h / speedup for d, h in one.items()
            }
    return {
        label: {
            f"resnet{s.depth}": hours.get(s.depth),
            f"resnet{s.small_depth}": hours.get(s.small_depth),
            "four_presets": 2 * (hours[s.depth] + hours[s.small_depth])
            if len(hours) == 2
            else None,
        }
        for label, hours in found.items()
    }


def cost_lines(found: dict) -> list[str]:
    if not found:
        return []
    columns = list(next(iter(found.values())))
    rows = [["GPU-hours", *(c.replace("_", " ") for c in columns)]]
    for label, hours in found.items():
        rows.append([label, *(f"{hours[c]:.1f}" if hours[c] else "-" for c in columns)])
    return [
        "## Cost of the Table 2 presets (96 runs of 164 epochs, 45,000 images, batch 64)",
        "",
        *table(rows),
        "t(b): the line through the measured step times; every epoch adds a validation pass and "
        "every run two test passes; CIFAR-100 costs what CIFAR-10 does (only the head differs); "
        "the speed-up of concurrent runs, measured at b = 0.5, is assumed at every budget.",
        "",
    ]


def targets(m: Measured, found: dict) -> dict[str, dict]:
    """Issue 10's targets, each with its measured value."""
    s = m.sizes
    result = {}
    eager = m.run(s.depth, 1.0, False, "32-true")
    graphed = [m.run(s.depth, 1.0, True, p) for p in s.precisions]
    graphed = [r for r in graphed if r]
    if eager and graphed:
        ratio = max(r["images_per_s"] for r in graphed) / eager["images_per_s"]
        result["graphed run at b = 1 >= 5x eager fp32"] = {"value": ratio, "met": ratio >= 5}
    best = max((max(r.values()) for r in m.aggregate().values() if r), default=None)
    if best:
        ratio = best / BASELINE_IMAGES_PER_S
        result["best aggregate >= 10x 2,169 img/s"] = {"value": ratio, "met": ratio >= 10}
    for depth in (s.depth, s.small_depth):
        precision = m.best_precision(depth)
        if precision:
            times = m.step_seconds(depth, True, precision)
            ordered = [times[b] * 1e3 for b in sorted(times, reverse=True)]
            falls = all(a > b for a, b in zip(ordered, ordered[1:], strict=False))
            result[f"resnet{depth} graphed step time falls with b"] = {
                "value": ordered,
                "met": falls,
            }
    four = [h["four_presets"] for h in found.values() if h["four_presets"]]
    if four:
        result["four presets <= 16 GPU-hours"] = {"value": min(four), "met": min(four) <= 16}
    return result


def target_lines(found: dict) -> list[str]:
    lines = ["## Targets (issue 10)", ""]
    for name, t in found.items():
        value = t["value"]
        shown = (
            f"{value:.2f}" if isinstance(value, float) else " > ".join(f"{v:.2f} ms" for v in value)
        )
        lines.append(f"- {'met' if t['met'] else 'MISSED'}: {name} (measured: {shown})")
    return [*lines, ""]


def error_lines(m: Measured) -> list[str]:
    errors = m.single.get("errors", []) + [
        {"part": f"{label}, K = {e['jobs']}", "error": f"{len(e['failed'])} runs failed"}
        for label, c in m.concurrent.items()
        for e in c["runs"]
        if e.get("failed")
    ]
    skipped = m.single.get("skipped", []) + [
        f"{label}: {part}" for label, c in m.concurrent.items() for part in c.get("skipped", [])
    ]
    lines = [f"- FAILED: {e['part']}: {e['error']}" for e in errors]
    lines += [f"- skipped (deadline): {part}" for part in skipped]
    return ["## Failures and skipped parts", "", *lines, ""] if lines else []


def report(args) -> dict:
    """The tables, costs and targets of the measurements in ``--out``: ``speedcheck.md``
    and ``speedcheck.json`` (everything measured, with the costs and targets)."""
    out = Path(args.out)
    if not (out / "single.json").exists():
        print(f"nothing to report: no {out / 'single.json'}")
        return {}
    m = Measured(out)
    found = costs(m)
    met = targets(m, found)
    head = m.single["info"]
    lines = [f"# Speed check: {head['device']}", ""]
    lines += [f"torch {head['torch']}, Lightning {head['lightning']}, {head['date']}", ""]
    lines += parity_lines(m) + throughput_lines(m) + concurrent_lines(m)
    lines += cost_lines(found) + target_lines(met) + error_lines(m)
    text = "\n".join(lines)
    (out / "speedcheck.md").write_text(text)
    summary = {"info": head, "targets": met, "cost_gpu_hours": found}
    summary |= {"single": m.single, "concurrent": m.concurrent}
    (out / "speedcheck.json").write_text(json.dumps(summary, indent=1))
    print(text)
    return summary


# --- entry point ---------------------------------------------------------------------------------


def info(device: torch.device, sizes: Sizes) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        graphs = "CUDA graphs"
    else:
        name = f"CPU ({os.cpu_count()} cores), emulated graphs: a dry run"
        graphs = "emulated (sdexp.graphs.emulated_make_graphed_callables)"
    return {
        "device": name,
        "graphs": graphs,
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "sdexp": sdexp.__version__,
        "sizes": dataclasses.asdict(sizes),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main(argv: list[str] | None = None) -> dict | None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no banner for every timed run
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["single", "concurrent", "report", "worker"])
    parser.add_argument("--out", default="outputs/speedcheck")
    parser.add_argument("--data", default=None, help="synthetic CIFAR folder (default OUT/data)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--deadline-s", type=float, default=600, help="skip parts after this")
    # concurrent runs (and each worker)
    parser.add_argument("--label", default="plain", help="concurrent: plain or mps")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--precision", default="auto", help="auto: the faster graphed one")
    parser.add_argument("--graphs", action="store_true")
    parser.add_argument("--timeout-s", type=float, default=300)
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--barrier", default=None)
    parser.add_argument("--result", default=None)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.data = args.data or str(out / "data")
    args.depth = args.depth or sizes.depth
    args.batch_size = args.batch_size or sizes.batch_size
    args.steps = args.steps or sizes.concurrent_steps
    device = torch.device(args.device)
    if args.precision == "auto":
        args.precision = faster_precision(out, sizes)
    if args.part == "single":
        return single(args, sizes, device)
    if args.part == "concurrent":
        if args.graphs and not graphs_worked(out):
            print("no graphed run succeeded in single.json: the concurrent runs are eager")
            args.graphs = False
        return concurrent(args, sizes)
    if args.part == "worker":
        worker(args, sizes, device)
        return None
    return report(args)


def graphs_worked(out: Path) -> bool:
    """Whether ``single.json`` (if there is one yet) holds a graphed run that succeeded."""
    path = out / "single.json"
    if not path.exists():
        return True
    return any("graphed" in r["name"] for r in json.loads(path.read_text())["runs"])


def faster_precision(out: Path, sizes: Sizes) -> str:
    """The precision of the faster graphed run at b = 0.5 in ``single.json`` (fp32 without)."""
    path = out / "single.json"
    if not path.exists():
        return "32-true"
    runs = {r["name"]: r for r in json.loads(path.read_text())["runs"]}
    rates = {
        p: runs[name]["images_per_s"]
        for p in sizes.precisions
        if (name := Setup(sizes.depth, sizes.batch_size, 0.5, True, p, True).name) in runs
    }
    return max(rates, key=rates.get) if rates else "32-true"


if __name__ == "__main__":
    main()
