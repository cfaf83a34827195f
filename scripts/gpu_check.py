"""The GPU check: fused kernels inside the graphs, bf16 against fp32, runs per GPU.

    python scripts/gpu_check.py OUT           # a GPU: about 6 minutes on an H200, at most 7
    QUICK=1 python scripts/gpu_check.py OUT   # a CPU: every part at tiny sizes (a dry run)

a. speed: one run of Stable ResNet110, batch 64, at b = 1, 0.5, 0.3: training images per second
   eager, graphed (speed.cuda_graphs) and compiled + graphed (with speed.compile_blocks), fp32
   then bf16 autocast; the time to capture (and compile) the graphs; lock-step parity of the
   compiled and the graphed step with eager's (both recipes); the losses of every step, so that
   the runs' trajectories can be compared (same init, batches and masks).
b. precision: short digits runs through train.py (dataset=digits model=resnet56 model.depth=20,
   its recipe's 50 epochs, uniform b = 0.5), fp32 and bf16, four seeds, all at once
   (hydra/launcher=gpu_shared, which runs the MPS daemon itself): final test errors and the
   per-step training losses of each seed in both precisions.
c. runs per GPU: aggregate images per second of K = 1, 8, 16, 4, 12 runs at once under MPS (b =
   0.5, --precision, default bf16; compiled if (a) found that faster by 10%), from one pool of
   16 processes, each pinned to its share of the CPUs as gpu_shared pins its jobs.

Every step is timed in a bare loop with CUDA events (as airbench times its steps), after warm-up
steps; aggregate rates span the first start to the last end of the runs' timed steps. Each part
runs in a process of its own with a deadline: past it, nothing new starts (what was skipped is
listed), and a part that fails is recorded while the next one runs. OUT gets gpu_check.json
(everything), gpu_check.md (the tables) and each part's JSON as it goes; the tables are printed
last. On a CPU (QUICK=1) graphs are ``scripts/emulated_graphs.py``'s stand-in.

On a bare GPU machine whose Python has torch and Lightning but not Hydra, and no package index
to install it from: build the missing wheels on a machine where the index answers,

    scripts/gpu_wheels.sh                 # hydra-core, omegaconf, antlr4, joblib launcher: .whl/

copy the checkout with its .whl/ to the GPU machine, and there, from the checkout:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && mkdir -p OUT
    python3 scripts/gpu_check.py OUT 2>&1 | tee OUT/gpu_check.log

Its parts get 380 s (BUDGET_S, --budget-s); allow about 7 minutes in all. What it measured last,
and what earlier checks measured: the manual's Performance page (docs/performance/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a script beside the package, run from a checkout (not installed)

PRECISIONS = ("32-true", "bf16-mixed")
VARIANTS = ("eager", "graphed", "compiled")  # compiled: compiled pieces inside the graphs


@dataclass(frozen=True)
class Sizes:
    """How much to measure: on a GPU, or QUICK on a CPU (its numbers mean nothing)."""

    depth: int = 110
    batch: int = 64
    side: int = 32
    warmup: int = 15
    eager_steps: int = 40
    steps: int = 200  # graphed and compiled
    parity_steps: int = 20
    budgets: tuple[float, ...] = (1.0, 0.5, 0.3)
    jobs: tuple[int, ...] = (1, 8, 16, 4, 12)  # the most telling first
    run_steps: int = 150
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    digits_epochs: int = 50  # the digits recipe's


QUICK = Sizes(
    depth=8,
    batch=8,
    side=16,
    warmup=1,
    eager_steps=2,
    steps=3,
    parity_steps=3,
    budgets=(1.0, 0.5),
    jobs=(1, 2),
    run_steps=3,
    seeds=(0,),
    digits_epochs=2,
)


# --- one run's training step, in a bare loop ------------------------------------------------------


class Run:
    """A Stable CIFAR ResNet trained by the reference recipe's SGD (fused), one ``variant``
    and ``precision``; ``step(x, y)`` is one training step (the gate draws its mask)."""

    def __init__(self, sizes: Sizes, device, variant: str, precision: str, x, y) -> None:
        import torch
        import torch.nn.functional as F

        from scripts.emulated_graphs import emulated_make_graphed_callables
        from sdexp.models import CifarResNet
        from sdexp.recipe import StepGradients, start_momentum
        from sdexp.run.graphs import GraphedSteps

        torch.manual_seed(0)
        shape = (3, sizes.side, sizes.side)
        net = CifarResNet(depth=sizes.depth, num_outputs=10, input_shape=shape, mask_seed=0)
        self.net = net.to(device).train()
        self.device, self.variant, self.F = device, variant, F
        self.optimizer = torch.optim.SGD(
            net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, fused=True
        )
        start_momentum(self.optimizer)
        self.gradients = StepGradients(net, "decay")
        self.autocast = torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"
        )
        self.graphs = None
        start = synchronized(device)
        if variant != "eager":
            maker = None if device.type == "cuda" else emulated_make_graphed_callables
            with self.autocast:
                self.graphs = GraphedSteps(net, F.cross_entropy, x, y, maker, variant == "compiled")
        self.build_s = synchronized(device) - start  # capture, and compilation for "compiled"

    def set_budget(self, budget: float) -> None:
        self.net.gate.set_survival([budget] * self.net.num_blocks)  # uniform mode

    def step(self, x, y):
        with self.autocast:
            if self.graphs is not None:
                loss = self.graphs.loss(x, y)
            else:
                loss = self.F.cross_entropy(self.net(x), y)
        self.gradients.clear()
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def synchronized(device) -> float:
    """The host's clock once the device has done what it was given."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Clock:
    """Device time: CUDA events around the work (host time on a CPU)."""

    def __init__(self, device) -> None:
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"
        self.restart()

    def restart(self) -> None:
        if self.cuda:
            self.start = self.torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.start = time.perf_counter()

    def seconds(self) -> float:
        if not self.cuda:
            return time.perf_counter() - self.start
        end = self.torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return self.start.elapsed_time(end) / 1e3


def batches(sizes: Sizes, device, count: int = 8) -> list:
    """Fixed random batches (inputs and labels), on the device, cycled through."""
    import torch

    g = torch.Generator().manual_seed(1)
    shape = (sizes.batch, 3, sizes.side, sizes.side)
    return [
        (
            torch.randn(*shape, generator=g).to(device),
            torch.randint(0, 10, (sizes.batch,), generator=g).to(device),
        )
        for _ in range(count)
    ]


def timed(run: Run, data: list, warmup: int, steps: int) -> tuple[float, list[float]]:
    """Seconds per step over ``steps`` after ``warmup``, and every step's loss (held on the
    device until the end: no wait in between)."""
    import torch

    losses = torch.zeros(warmup + steps, device=run.device)
    for i in range(warmup):
        losses[i] = run.step(*data[i % len(data)])
    clock = Clock(run.device)
    for i in range(warmup, warmup + steps):
        losses[i] = run.step(*data[i % len(data)])
    return clock.seconds() / steps, losses.tolist()


# --- a. speed ------------------------------------------------------------------------------------


def measure(sizes: Sizes, device, data, variant: str, precision: str) -> dict:
    """One run through the budgets: its build time, step time and losses at each."""
    run = Run(sizes, device, variant, precision, *data[0])
    steps = sizes.eager_steps if variant == "eager" else sizes.steps
    found = {"variant": variant, "precision": precision, "build_s": run.build_s, "budgets": []}
    for budget in sizes.budgets:
        run.set_budget(budget)
        seconds, losses = timed(run, data, sizes.warmup, steps)
        found["budgets"].append(
            {
                "budget": budget,
                "steps": steps,
                "step_ms": 1e3 * seconds,
                "images_per_s": sizes.batch / seconds,
                "losses": losses,
            }
        )
    return found


def block_state(run: Run, index: int) -> dict:
    """Block ``index``'s parameters, BatchNorm buffers and momentum buffers."""
    block = run.net.blocks[index]
    found = {f"param.{k}": v.detach().clone() for k, v in block.named_parameters()}
    found |= {f"buffer.{k}": v.clone() for k, v in block.named_buffers()}
    for k, p in block.named_parameters():
        found[f"momentum.{k}"] = run.optimizer.state[p]["momentum_buffer"].clone()
    return found


def copy_state(source: Run, target: Run) -> None:
    """``target`` := ``source`` in place (its graphs hold its tensors), masks' generator too."""
    import torch

    with torch.no_grad():
        for a, b in zip(source.net.parameters(), target.net.parameters(), strict=True):
            b.copy_(a)
            m = target.optimizer.state[b]["momentum_buffer"]
            m.copy_(source.optimizer.state[a]["momentum_buffer"])
        for a, b in zip(source.net.buffers(), target.net.buffers(), strict=True):
            b.copy_(a)
    target.net.gate.generator.set_state(source.net.gate.generator.get_state())


def parity(sizes: Sizes, device, data, variant: str, dropped_blocks: str) -> dict:
    """Lock step at b = 0.5: every step starts the fast run from the eager run's state, on the
    same batch and mask. Dropped blocks must end it bit-identical to eager's; the loss and the
    kept blocks differ by the fast path's rounding (none for graphs alone)."""
    eager = Run(sizes, device, "eager", "32-true", *data[0])
    fast = Run(sizes, device, variant, "32-true", *data[0])
    for run in (eager, fast):
        run.gradients.dropped_blocks = dropped_blocks
        run.set_budget(0.5)
    loss_diff = kept_diff = 0.0
    mismatches = 0
    for t in range(sizes.parity_steps):
        copy_state(eager, fast)
        x, y = data[t % len(data)]
        a, b = float(eager.step(x, y)), float(fast.step(x, y))
        if eager.net.gate.last_mask != fast.net.gate.last_mask:
            raise RuntimeError(f"step {t}: the two runs drew different masks")
        loss_diff = max(loss_diff, abs(a - b) / max(abs(a), 1e-12))
        for i, kept in enumerate(eager.net.gate.last_mask):
            mine, theirs = block_state(fast, i), block_state(eager, i)
            for key, value in mine.items():
                if not kept:
                    mismatches += not bool((value == theirs[key]).all())
                elif key.startswith("param"):
                    scale = theirs[key].abs().max().clamp_min(1e-12)
                    kept_diff = max(kept_diff, float((value - theirs[key]).abs().max() / scale))
    return {
        "variant": variant,
        "dropped_blocks": dropped_blocks,
        "steps": sizes.parity_steps,
        "loss_max_relative_difference": loss_diff,
        "kept_params_max_relative_difference": kept_diff,
        "dropped_block_mismatches": mismatches,
    }


def speed(args, sizes: Sizes) -> dict:
    """Part a, in its own process."""
    import torch

    device = torch.device("cpu" if args.quick else "cuda")
    data = batches(sizes, device)
    results: dict = {"runs": [], "parity": []}
    part = Parts(Path(args.out) / "speed.json", args.deadline_s, results)

    def run(variant: str, precision: str) -> None:
        def go() -> None:
            found = measure(sizes, device, data, variant, precision)
            results["runs"].append(found)
            rates = ", ".join(f"{b['images_per_s']:,.0f}" for b in found["budgets"])
            print(f"  {variant} {precision}: built in {found['build_s']:.1f} s; img/s {rates}")

        part(f"{variant} {precision}", go)

    def check(variant: str, dropped_blocks: str) -> None:
        def go() -> None:
            found = parity(sizes, device, data, variant, dropped_blocks)
            results["parity"].append(found)
            print(
                f"  parity {variant} {dropped_blocks}: loss "
                f"{found['loss_max_relative_difference']:.1e}, kept params "
                f"{found['kept_params_max_relative_difference']:.1e}, dropped-block mismatches "
                f"{found['dropped_block_mismatches']}"
            )

        part(f"parity {variant} {dropped_blocks}", go)

    # cheap and telling first: a compilation that outlasts the deadline costs only what follows
    run("eager", "32-true")
    run("graphed", "32-true")
    run("graphed", "bf16-mixed")  # with fp32's: the precision drift of the same steps
    run("compiled", "32-true")
    check("compiled", "decay")
    check("compiled", "frozen")
    check("graphed", "decay")
    run("compiled", "bf16-mixed")
    run("eager", "bf16-mixed")
    return results


class Parts:
    """Runs a part's pieces in turn: past the deadline a piece is skipped (and listed); a piece
    that fails is recorded with the end of its traceback and the next one runs; the results
    are written after each (a lent GPU's measurements are kept, whatever happens next)."""

    def __init__(self, path: Path, deadline_s: float, results: dict) -> None:
        self.path, self.end, self.results = path, time.monotonic() + deadline_s, results
        results.setdefault("errors", [])
        results.setdefault("skipped", [])

    def __call__(self, name: str, piece: Callable[[], object]) -> None:
        if time.monotonic() > self.end:
            self.results["skipped"].append(name)
            print(f"  (deadline: skipping {name})", flush=True)
            return
        try:
            piece()
        except Exception as error:  # noqa: BLE001 - recorded, and the check goes on
            tail = traceback.format_exc().splitlines()[-12:]
            self.results["errors"].append({"part": name, "error": repr(error), "traceback": tail})
            print(f"  {name}: FAILED ({type(error).__name__}: {error})", flush=True)
        finally:
            self.path.write_text(json.dumps(self.results, indent=1))
            sys.stdout.flush()


# --- b. precision: digits runs through train.py -------------------------------------------------


def digits_command(sizes: Sizes, sweep_dir: Path, quick: bool) -> list[str]:
    seeds = ",".join(map(str, sizes.seeds))
    # The checkout's configs by path: on a lent machine the checkout is on PYTHONPATH, not
    # installed, so the package sdexp.conf (pyproject's mapping of conf/) does not exist there.
    command = [sys.executable, str(ROOT / "train.py"), "--config-path", str(ROOT / "conf")]
    command += ["-m", "dataset=digits", "model=resnet56"]
    command += ["model.depth=20", f"seed={seeds}", "trainer.precision=32-true,bf16-mixed"]
    command += ["logger=csv", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]
    command += [f"trainer.max_epochs={sizes.digits_epochs}", "hydra/launcher=gpu_shared"]
    command += [f"hydra.launcher.n_jobs={2 * len(sizes.seeds)}", f"hydra.sweep.dir={sweep_dir}"]
    if not quick:  # the presets' fast paths on a GPU (refused on a CPU)
        command += ["speed.cuda_graphs=true", "speed.fused_optimizer=true"]
    return command


def step_losses(run_dir: Path) -> dict[int, float]:
    """train/loss by step, from the run's CSV log."""
    import csv

    (path,) = run_dir.glob("csv/version_*/metrics.csv")
    with path.open() as file:
        rows = csv.DictReader(file)
        return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def precision(args, sizes: Sizes, work: Path, timeout_s: float) -> dict:
    """Part b: the digits sweep, then its numbers per precision and seed."""
    from sdexp.results import read_result

    sweep_dir = work / "digits"
    command = digits_command(sizes, sweep_dir, args.quick)
    found: dict = {"command": " ".join(command[1:]), "runs": []}
    start = time.monotonic()
    log = work / "digits.log"
    with log.open("w") as file:  # its own session: a timeout ends the sweep's workers too
        sweep = subprocess.Popen(
            command, cwd=ROOT, stdout=file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            found["exit"] = sweep.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
            found["exit"] = "timeout"
    found["seconds"] = time.monotonic() - start
    said = log.read_text()
    found["said"] = [line for line in said.splitlines() if line.startswith("MPS:")]
    if found["exit"] != 0:
        found["log_tail"] = said[-3000:]
    for path in sorted(sweep_dir.rglob("results.json")):
        result = read_result(path.parent)
        entry = {"seed": result.key.seed, "status": result.status, "test": result.test}
        entry["precision"] = result.config["trainer"]["precision"]
        entry["losses"] = step_losses(path.parent)
        found["runs"].append(entry)
    found["summary"] = compare_precisions(found["runs"])
    return found


def compare_precisions(runs: list[dict]) -> dict:
    """Test errors per precision over seeds, their paired difference, and how far the two
    precisions' training losses move apart, step by step, for the same seed."""
    ok = [r for r in runs if r["status"] == "ok"]
    by = {(r["precision"], r["seed"]): r for r in ok}
    summary: dict = {}
    for p in PRECISIONS:
        tests = [r["test"] for r in ok if r["precision"] == p]
        summary[p] = {"n": len(tests), **mean_std(tests)}
    seeds = sorted({s for p, s in by if (PRECISIONS[0], s) in by and (PRECISIONS[1], s) in by})
    paired, drift = [], []
    for s in seeds:
        a, b = by[(PRECISIONS[0], s)], by[(PRECISIONS[1], s)]
        paired.append(b["test"] - a["test"])
        steps = sorted(a["losses"].keys() & b["losses"].keys())
        drift += [abs(b["losses"][k] - a["losses"][k]) for k in steps]
    summary["bf16_minus_fp32"] = {"n": len(paired), **mean_std(paired)}
    summary["loss_drift"] = {"steps": len(drift), **mean_max(drift)}
    return summary


def mean_std(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
    }


def mean_max(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values) if values else None, "max": max(values, default=None)}


# --- c. runs per GPU: a pool of workers, rounds of K at once ------------------------------------


def worker(args, sizes: Sizes) -> None:
    """One of the pool: builds its run, says it is ready, then for each round K in which its
    slot takes part, times its steps from the round's common start."""
    import torch

    from sdexp.run.sharing import pin_threads

    pin_threads(args.slot, args.slots)  # as hydra/launcher=gpu_shared pins its jobs
    device = torch.device("cpu" if args.quick else "cuda")
    folder = Path(args.folder)
    data = batches(sizes, device)
    run = Run(sizes, device, args.variant, args.precision, *data[0])
    run.set_budget(0.5)
    timed(run, data, sizes.warmup, 1)
    publish(folder / f"ready.{args.slot}", {"build_s": run.build_s})
    for jobs in sizes.jobs:
        while not (folder / f"go.{jobs}").exists():
            if (folder / "stop").exists():
                return
            time.sleep(0.005)
        if args.slot >= jobs:
            continue
        timed(run, data, 0, 2)  # the clocks up again after the wait
        synchronized(device)
        wall = time.time()
        seconds, _ = timed(run, data, 0, sizes.run_steps)
        found = {"slot": args.slot, "start": wall, "end": time.time(), "step_s": seconds}
        publish(folder / f"{jobs}.{args.slot}.json", found)


def publish(path: Path, found: dict) -> None:
    """Write ``path`` whole or not at all: the orchestrator reads it as soon as it exists."""
    hidden = path.with_name(f".{path.name}.tmp")
    hidden.write_text(json.dumps(found))
    os.replace(hidden, path)


def aggregate(folder: Path, jobs: int, sizes: Sizes, limit_s: float) -> dict:
    """Round ``jobs``: start it, wait for its runs, and sum their images over its span."""
    (folder / f"go.{jobs}").touch()
    end = time.monotonic() + limit_s
    while len(list(folder.glob(f"{jobs}.*.json"))) < jobs and time.monotonic() < end:
        time.sleep(0.01)
    runs = [json.loads(p.read_text()) for p in folder.glob(f"{jobs}.*.json")]
    found: dict = {"jobs": jobs, "finished": len(runs)}
    if len(runs) == jobs:
        span = max(r["end"] for r in runs) - min(r["start"] for r in runs)
        found["images_per_s"] = jobs * sizes.run_steps * sizes.batch / span
        found["per_run"] = [sizes.batch / r["step_s"] for r in runs]
    return found


def runs_per_gpu(args, sizes: Sizes, work: Path, deadline_s: float, speed_found: dict) -> dict:
    """Part c under MPS: the compiled pool if (a) found it worth it, else (or if its 16 fresh
    processes are not ready within half the time) the graphed one; rounds in ``sizes.jobs``
    order until the deadline."""
    from sdexp.run.sharing import start_mps, stop_mps

    found: dict = {"precision": args.precision, "budget": 0.5, "rounds": [], "pools": []}
    end = time.monotonic() + deadline_s
    control, found["mps"] = start_mps()
    print(f"  {found['mps']}", flush=True)
    variants = ["graphed"]
    if compiled_pays(speed_found, args.precision):
        variants.insert(0, "compiled")
    try:
        for variant in variants:
            found["variant"] = variant
            last = variant == variants[-1]
            ready_by = end if last else time.monotonic() + (end - time.monotonic()) / 2
            if pool(args, sizes, work / "pool", variant, (ready_by, end), found):
                break
    finally:
        if control is not None:
            print(f"  {stop_mps(control)}", flush=True)
    return found


def pool(args, sizes: Sizes, folder: Path, variant: str, limits: tuple, found: dict) -> bool:
    """One pool of workers: False if they were not all ready by ``limits[0]`` (nothing
    measured), else True, with the rounds it ran before ``limits[1]`` in ``found``."""
    ready_by, end = limits
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        stale.unlink()
    slots = max(sizes.jobs)
    command = [sys.executable, __file__, "--part", "worker", "--slots", str(slots)]
    command += ["--folder", str(folder), "--variant", variant, "--precision", args.precision]
    command += ["--quick"] * args.quick
    logs = [(folder / f"log.{slot}").open("w") for slot in range(slots)]
    workers = [
        subprocess.Popen([*command, "--slot", str(s)], stdout=log, stderr=subprocess.STDOUT)
        for s, log in enumerate(logs)
    ]
    start = time.monotonic()
    entry: dict = {"variant": variant, "slots": slots}
    found["pools"].append(entry)
    try:
        while len(list(folder.glob("ready.*"))) < slots and time.monotonic() < ready_by:
            if any(p.poll() is not None for p in workers):
                entry["not_ready"] = "a worker ended before it was ready"
                entry["log_tail"] = next(
                    (folder / f"log.{s}").read_text()[-2000:]
                    for s, p in enumerate(workers)
                    if p.poll() is not None
                )
                break
            time.sleep(0.05)
        ready = [json.loads(p.read_text()) for p in folder.glob("ready.*")]
        entry["ready_after_s"] = time.monotonic() - start
        entry["build_s"] = mean_max([r["build_s"] for r in ready])
        if len(ready) < slots:
            waited = entry["ready_after_s"]
            entry.setdefault("not_ready", f"{len(ready)} of {slots} ready after {waited:.0f} s")
            print(f"  {variant}: {entry['not_ready']}", flush=True)
            return False
        for jobs in sizes.jobs:
            if time.monotonic() > end:
                found.setdefault("skipped", []).append(jobs)
                continue
            found["rounds"].append(aggregate(folder, jobs, sizes, max(end - time.monotonic(), 5)))
            shown = found["rounds"][-1].get("images_per_s")
            print(f"  K = {jobs}: " + (f"{shown:,.0f} img/s in all" if shown else "unfinished"))
    except Exception as error:  # noqa: BLE001 - recorded; the pool is ended below
        found["error"] = repr(error)
        found["log_tail"] = (folder / "log.0").read_text()[-2000:]
    finally:
        (folder / "stop").touch()
        for process in workers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()
    return True


def compiled_pays(speed_found: dict, precision: str) -> bool:
    """Whether compiled + graphed ran at least 10% faster than graphed at b = 0.5."""
    rate = {
        r["variant"]: b["images_per_s"]
        for r in speed_found.get("runs", [])
        if r["precision"] == precision
        for b in r["budgets"]
        if b["budget"] == 0.5
    }
    return "compiled" in rate and "graphed" in rate and rate["compiled"] >= 1.1 * rate["graphed"]


# --- the report ---------------------------------------------------------------------------------


def drift(a: list[list[float]], b: list[list[float]]) -> dict:
    """|loss_b - loss_a| step by step over the steps both runs took in the same order."""
    pairs = []
    for x, y in zip(a, b, strict=False):
        pairs += list(zip(x, y, strict=False))
        if len(x) != len(y):
            break
    return {"steps": len(pairs), **mean_max([abs(q - p) for p, q in pairs])}


def speed_lines(found: dict) -> list[str]:
    runs = {(r["variant"], r["precision"]): r for r in found.get("runs", [])}
    lines = ["a. one run, img/s (ms per step), bare loop timed with CUDA events", ""]
    lines += ["| precision | b | eager | graphed | compiled + graphed | compiled / graphed |"]
    lines += ["|---|---|---|---|---|---|"]
    for precision in PRECISIONS:
        budgets = {b["budget"] for r in runs.values() for b in r["budgets"]}
        for budget in sorted(budgets, reverse=True):
            cells, rates = [], {}
            for variant in VARIANTS:
                r = runs.get((variant, precision))
                b = next((b for b in r["budgets"] if b["budget"] == budget), None) if r else None
                cells.append(f"{b['images_per_s']:,.0f} ({b['step_ms']:.1f})" if b else "-")
                if b:
                    rates[variant] = b["images_per_s"]
            both = {"compiled", "graphed"} <= rates.keys()
            cells.append(f"{rates['compiled'] / rates['graphed']:.2f}x" if both else "-")
            lines.append(f"| {precision} | {budget:g} | " + " | ".join(cells) + " |")
    built = [f"{v} {p} {r['build_s']:.1f} s" for (v, p), r in runs.items() if v != "eager"]
    lines += ["", "built (capture; compile + capture): " + ", ".join(built)]
    for p in found.get("parity", []):
        lines.append(
            f"parity, lock step, {p['variant']} {p['dropped_blocks']}, {p['steps']} steps at "
            f"b = 0.5: loss {p['loss_max_relative_difference']:.1e}, kept params "
            f"{p['kept_params_max_relative_difference']:.1e}, dropped-block mismatches "
            f"{p['dropped_block_mismatches']}"
        )
    pairs = [
        (("graphed", "32-true"), ("eager", "32-true")),
        (("compiled", "32-true"), ("graphed", "32-true")),
        (("graphed", "bf16-mixed"), ("graphed", "32-true")),
        (("compiled", "bf16-mixed"), ("graphed", "32-true")),
    ]
    for fast, base in pairs:
        if fast in runs and base in runs:
            d = drift(*[[b["losses"] for b in runs[k]["budgets"]] for k in (base, fast)])
            found.setdefault("drift", {})[f"{' '.join(fast)} - {' '.join(base)}"] = d
            lines.append(
                f"loss drift {' '.join(fast)} against {' '.join(base)}, same init, batches and "
                f"masks, {d['steps']} steps: mean |diff| {d['mean']:.2e}, max {d['max']:.2e}"
            )
    return lines


def report(everything: dict, out: Path) -> str:
    info = everything["info"]
    lines = [f"# GPU check: {info['device']}", "", info["software"], ""]
    lines += speed_lines(everything.get("speed", {}))
    b = everything.get("precision", {})
    if b.get("summary"):
        s = b["summary"]
        lines += ["", f"b. digits, ResNet20, b = 0.5 ({b['seconds']:.0f} s): {b['command']}"]
        for p in PRECISIONS:
            lines.append(f"- {p}: test error {fmt(s[p])} % over {s[p]['n']} seeds")
        d, drift_ = s["bf16_minus_fp32"], s["loss_drift"]
        lines.append(f"- bf16 - fp32, paired by seed: {fmt(d)} points (n = {d['n']})")
        if drift_["steps"]:
            lines.append(
                f"- training loss, bf16 against fp32, same seed: mean |diff| "
                f"{drift_['mean']:.2e}, max {drift_['max']:.2e} over {drift_['steps']} steps"
            )
        lines += [f"- {line}" for line in b.get("said", [])]
    c = everything.get("runs", {})
    if c:
        what = f"{c.get('variant')} {c['precision']}, b = 0.5"
        lines += ["", f"c. K runs at once under MPS, {what}: {c['mps']}"]
        for r in sorted(c["rounds"], key=lambda r: r["jobs"]):
            rate = r.get("images_per_s")
            lines.append(
                f"- K = {r['jobs']}: " + (f"{rate:,.0f} img/s in all" if rate else "unfinished")
            )
        for entry in c.get("pools", []):
            built = entry.get("build_s", {})
            lines.append(
                f"- pool of {entry['slots']} {entry['variant']} runs: built in "
                + (f"{built['mean']:.1f} s (mean), " if built.get("mean") else "")
                + (entry.get("not_ready") or f"all ready after {entry['ready_after_s']:.0f} s")
            )
        best = max((r.get("images_per_s") or 0 for r in c["rounds"]), default=0)
        if best:
            hours = 4 * 96 * 164 * 45_000 / best / 3600
            lines.append(
                f"- at {best:,.0f} img/s, the four presets' training images (4 x 96 runs x 164 "
                f"epochs x 45,000) take {hours:.1f} h (b = 0.5; the presets' mean budget is "
                "0.56; validation and test passes not counted)"
            )
        if c.get("error"):
            lines.append(f"- FAILED: {c['error']}")
    failures = [
        f"- {name}: {e['part']}: {e['error']}"
        for name in ("speed",)
        for e in everything.get(name, {}).get("errors", [])
    ] + [f"- skipped: {s}" for s in everything.get("speed", {}).get("skipped", [])]
    failures += [f"- {p}" for p in everything.get("problems", [])]
    if failures:
        lines += ["", "Failures and skipped parts:", *failures]
    text = "\n".join(lines) + "\n"
    (out / "gpu_check.md").write_text(text)
    (out / "gpu_check.json").write_text(json.dumps(everything, indent=1))
    return text


def fmt(stats: dict) -> str:
    if stats["mean"] is None:
        return "-"
    return f"{stats['mean']:.2f}" + (f" ± {stats['std']:.2f}" if stats.get("std") else "")


# --- the orchestrator --------------------------------------------------------------------------


def machine(quick: bool) -> dict:
    """The device and the software, without touching the GPU (the MPS daemon comes later)."""
    import pytorch_lightning as pl
    import torch

    try:
        import hydra

        hydra_version = hydra.__version__
    except ImportError:
        hydra_version = "missing"
    device = f"CPU ({os.cpu_count()} cores), emulated graphs: a dry run"
    if not quick:
        query = ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        smi = subprocess.run(["nvidia-smi", *query], capture_output=True, text=True)
        device = f"{smi.stdout.strip()} (name, driver, memory)" if smi.returncode == 0 else "?"
    return {
        "device": device,
        "software": f"torch {torch.__version__} (CUDA {torch.version.cuda}), Lightning "
        f"{pl.__version__}, Hydra {hydra_version}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "sizes": dataclasses.asdict(QUICK if quick else Sizes()),
    }


def child(args, part: str, deadline_s: float, timeout_s: float) -> int | str:
    """``part`` of this script in a process of its own (killed at ``timeout_s``)."""
    command = [sys.executable, __file__, str(args.out), "--part", part]
    command += ["--deadline-s", f"{deadline_s:.0f}"]
    try:
        return subprocess.run(command + ["--quick"] * args.quick, timeout=timeout_s).returncode
    except subprocess.TimeoutExpired:
        return "timeout"


def check(args) -> None:
    sizes = QUICK if args.quick else Sizes()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)  # for the parts' processes
    os.environ.setdefault("WANDB_MODE", "offline")
    start = time.monotonic()

    def left(share: float) -> float:
        """Seconds until ``share`` of the budget is spent."""
        return args.budget_s * share - (time.monotonic() - start)

    everything: dict = {"info": machine(args.quick), "problems": []}
    print(f"== {everything['info']['device']}; {everything['info']['software']}", flush=True)

    print(f"== a. speed ({time.monotonic() - start:.0f} s)", flush=True)
    code = child(args, "speed", left(0.40), left(0.47))
    if code:
        everything["problems"].append(f"speed: exit status {code}")
    speed_file = out / "speed.json"
    everything["speed"] = json.loads(speed_file.read_text()) if speed_file.exists() else {}

    print(f"== b. precision: digits runs ({time.monotonic() - start:.0f} s)", flush=True)
    try:
        everything["precision"] = found = precision(args, sizes, work, left(0.67))
        (out / "precision.json").write_text(json.dumps(found, indent=1))
        print(f"  exit {found['exit']}, {len(found['runs'])} runs, {found['seconds']:.0f} s")
        if found["exit"] != 0:
            everything["problems"].append(f"precision: the digits sweep's exit {found['exit']}")
    except Exception as error:  # noqa: BLE001 - recorded; part c still runs
        everything["problems"].append(f"precision: {error!r}")

    print(f"== c. runs per GPU ({time.monotonic() - start:.0f} s)", flush=True)
    try:
        found = runs_per_gpu(args, sizes, work, left(0.97), everything["speed"])
        everything["runs"] = found
        (out / "runs.json").write_text(json.dumps(found, indent=1))
    except Exception as error:  # noqa: BLE001 - recorded; the report still comes
        everything["problems"].append(f"runs per GPU: {error!r}")

    print(f"== report ({time.monotonic() - start:.0f} s)\n", flush=True)
    print(report(everything, out), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", nargs="?", default="outputs/gpu_check")
    parser.add_argument("--part", default="check", choices=["check", "speed", "worker"])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("QUICK") == "1")
    parser.add_argument("--work", default=os.environ.get("WORK", "/tmp/sdexp_gpu_check"))
    parser.add_argument("--budget-s", type=float, default=float(os.environ.get("BUDGET_S", 0)))
    parser.add_argument("--deadline-s", type=float, default=600)
    parser.add_argument("--precision", default=os.environ.get("PRECISION", "bf16-mixed"))
    # a worker of part c
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--folder", default=None)
    parser.add_argument("--variant", default="graphed")
    args = parser.parse_args()
    args.budget_s = args.budget_s or (1500 if args.quick else 380)
    sizes = QUICK if args.quick else Sizes()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.part == "speed":
        speed(args, sizes)
    elif args.part == "worker":
        worker(args, sizes)
    else:
        check(args)


if __name__ == "__main__":
    main()
