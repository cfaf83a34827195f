"""How noisy are SenseMode's sensitivities at initialisation, and how many batches should
``mode.batches`` average?

For each seed, the run's own network at initialisation (the model a run with that seed builds)
and its training batches in the run's order (epoch 0, then epochs 1, 2, ...), it computes the
first-order sensitivity S_l = dL/d delta_l at delta = 1 on each of ``2 * max(k)`` batches. Then,
for every k in ``--batches``, it compares two INDEPENDENT estimates from k batches each (batches
[0, k) and [k, 2k)): how far apart the survival profiles p they give are (the noise a run's
profile carries), and for the first: the median over blocks of |mean S_l| / its standard error
and the share of negative S_l. The cost is one forward and backward pass per batch, timed
against a training step of the same network.

    python scripts/sensitivity_noise.py dataset=digits model=resnet56 --seeds 0-7 \\
        --batches 1 2 4 8 16 32 --budgets 0.2 0.8 --out docs/sensitivity_noise

Prints a table, writes ``noise.csv`` (one row per seed and k) and ``summary.md`` to ``--out``,
and ``exponents.md``: how the profiles' distance falls with k, per budget (``exponents``). One
torch thread (as the CPU sweeps run). ``--fit NOISE_CSV --epoch-batches E`` writes only
``exponents.md``, from a ``noise.csv`` measured before:

    python scripts/sensitivity_noise.py --fit docs/sensitivity_noise/noise.csv \
        --epoch-batches 8 --out docs/sensitivity_noise

What the two estimates share: an epoch is E batches (digits: 500 training images in batches of
64, E = 8), and the batches run epoch after epoch. For 2k <= E the estimates [0, k) and [k, 2k)
hold disjoint images; for k >= E each holds every training image, in other batches (digits has
no augmentation: the same images), so their distance measures how the batching moves S (batch
norm's statistics, the last batch's size), not the sampling of the data.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from scipy import stats

from sdexp.run.module import loss_function
from sdexp.sensitivity import sensitivity_samples, summarize
from sdexp.survival import SenseMode


def seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def build(overrides: list[str], seed: int):
    """The data module, model and loss of a run with ``seed``, as ``sdexp.run.training`` builds
    them."""
    with initialize_config_module("sdexp.conf", version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"seed={seed}"])
    datamodule = instantiate(cfg.dataset, seed=seed)
    datamodule.setup("fit")
    pl.seed_everything(seed, workers=True, verbose=False)
    model = instantiate(
        cfg.model,
        input_shape=datamodule.input_shape,
        num_outputs=datamodule.num_outputs,
        mask_seed=seed,
    )
    return datamodule, model, loss_function(datamodule.task)


def run_batches(datamodule, count: int):
    """The first ``count`` training batches, preprocessed, epoch after epoch (the run's order)."""
    for batch in itertools.islice(datamodule.train_dataloader().stream(0), count):
        yield datamodule.on_after_batch_transfer(batch, 0)


def step_time(model, datamodule, loss_fn, repeats: int = 5) -> float:
    """Median seconds of one training step (forward, backward, SGD) with every block kept."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = next(iter(run_batches(datamodule, 1)))
    times = []
    model.train()
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()  # p = 1 at initialisation: every block runs
        optimizer.step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def profile_noise(p1: torch.Tensor, p2: torch.Tensor) -> dict:
    return {
        "p_rel_l2": ((p1 - p2).norm() / p1.norm()).item(),
        "p_max_abs": (p1 - p2).abs().max().item(),
        "p_rank_corr": stats.spearmanr(p1.numpy(), p2.numpy()).statistic,
    }


def measure(args) -> pd.DataFrame:
    rows = []
    most = 2 * max(args.batches)
    for seed in args.seeds:
        datamodule, model, loss_fn = build(args.overrides, seed)

        start = time.perf_counter()
        samples = sensitivity_samples(model, run_batches(datamodule, most), loss_fn)
        per_batch = (time.perf_counter() - start) / most
        step = step_time(model, datamodule, loss_fn)
        num_blocks = model.num_blocks
        for k in args.batches:
            first, second = summarize(samples[:k]), summarize(samples[k : 2 * k])
            row = {
                "seed": seed,
                "batches": k,
                "num_blocks": num_blocks,
                "t_median": (first.mean.abs() / first.standard_error).median().item()
                if first.standard_error is not None
                else float("nan"),
                "negative_share": (first.mean < 0).float().mean().item(),
                "s_rank_corr": stats.spearmanr(
                    first.mean.abs().numpy(), second.mean.abs().numpy()
                ).statistic,
                "seconds_per_batch": per_batch,
                "batch_over_step": per_batch / step,
            }
            for budget in args.budgets:
                mode = SenseMode(rule=args.rule)
                p1 = mode.survival(budget, num_blocks, first.mean)
                p2 = mode.survival(budget, num_blocks, second.mean)
                noise = profile_noise(p1, p2)
                row |= {f"{name}@{budget:g}": value for name, value in noise.items()}
            rows.append(row)
        print(f"seed {seed}: {most} batches at {per_batch * 1e3:.0f} ms each", flush=True)
    return pd.DataFrame(rows)


def exponents(frame: pd.DataFrame, epoch_batches: int) -> pd.DataFrame:
    """Per budget and range of k (2k <= E: the two estimates' images disjoint; k >= E: they
    share every image), the exponent a of distance ~ k^a: each seed's least-squares slope of
    log(p_rel_l2) against log(k) (``scipy.stats.linregress``), their mean over the seeds with
    the 95% t confidence interval (seeds independent; a seed's k share its batches)."""
    ranges = {
        f"2k <= {epoch_batches} (disjoint images)": frame["batches"] * 2 <= epoch_batches,
        f"k >= {epoch_batches} (the same images)": frame["batches"] >= epoch_batches,
    }
    rows = []
    for column in [c for c in frame.columns if c.startswith("p_rel_l2@")]:
        for label, chosen in ranges.items():
            part = frame[chosen]
            if part["batches"].nunique() < 2:
                continue
            slopes = [
                stats.linregress(np.log(g["batches"]), np.log(g[column])).slope
                for _, g in part.groupby("seed")
            ]
            ci = stats.ttest_1samp(slopes, 0.0).confidence_interval()
            ks = ", ".join(str(k) for k in sorted(part["batches"].unique()))
            rows.append(
                {
                    "budget": column.removeprefix("p_rel_l2@"),
                    "k": f"{ks}: {label}",
                    "exponent": np.mean(slopes),
                    "ci_low": ci.low,
                    "ci_high": ci.high,
                    "seeds": len(slopes),
                }
            )
    return pd.DataFrame(rows)


def write_exponents(frame: pd.DataFrame, epoch_batches: int, out: Path) -> str:
    """exponents.md: the ``exponents`` table under the command and commit that made it."""
    command = shlex.join(["python", "scripts/sensitivity_noise.py", *sys.argv[1:]])
    text = (
        "# SenseMode's profile noise: how it falls with the batches k\n\n"
        f"`{command}` at commit {commit()}: the exponent a of p_rel_l2 ~ k^a (two estimates of "
        "k batches each), per seed a least-squares slope on log-log axes, the mean over seeds "
        f"with its 95% t interval; an epoch is {epoch_batches} batches.\n\n"
        + exponents(frame, epoch_batches).to_markdown(index=False, floatfmt=".3g")
        + "\n"
    )
    (out / "exponents.md").write_text(text)
    return text


def commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", default=["dataset=digits", "model=resnet56"])
    parser.add_argument("--seeds", type=seeds, default=seeds("0-7"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.2, 0.8])
    parser.add_argument("--rule", default="proportional")
    parser.add_argument("--out", type=Path, default=Path("outputs/sensitivity_noise"))
    parser.add_argument("--fit", type=Path, help="a noise.csv: write only exponents.md from it")
    parser.add_argument("--epoch-batches", type=int, help="with --fit: the batches of an epoch")
    args = parser.parse_args(argv)
    if args.fit is not None:
        if args.epoch_batches is None:
            parser.error("--fit needs --epoch-batches: the training batches of one epoch")
        args.out.mkdir(parents=True, exist_ok=True)
        print(write_exponents(pd.read_csv(args.fit), args.epoch_batches, args.out))
        return
    torch.set_num_threads(1)
    frame = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "noise.csv", index=False)
    columns = [c for c in frame.columns if c not in ("seed", "num_blocks", "batches")]
    table = frame.groupby("batches")[columns].median()
    command = shlex.join(["python", "scripts/sensitivity_noise.py", *sys.argv[1:]])
    text = (
        f"# SenseMode's sensitivities: noise against batches\n\n"
        f"`{command}` at commit {commit()}; {len(args.seeds)} seeds, medians over seeds; "
        f"p noise: two independent estimates of k batches each, under rule {args.rule}.\n\n"
        + table.to_markdown(floatfmt=".3g")
        + "\n"
    )
    (args.out / "summary.md").write_text(text)
    print(text)
    datamodule, _, _ = build(args.overrides, args.seeds[0])
    print(write_exponents(frame, len(datamodule.train_dataloader()), args.out))


if __name__ == "__main__":
    main()
