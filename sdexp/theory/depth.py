"""Lemma 1 and Fig. 1a: the depth L_delta = sum_l delta_l of the sampled subnetwork.

L_delta is Poisson-binomial (``sdexp.subnetwork``): its exact distribution against a Monte Carlo
histogram for the uniform and linear modes at one budget (Fig. 1a: L = 100, b = 0.5); the Lemma 1
bound (eq. 2) against the exact and sampled quantiles of |L_delta - L_p|; and at that budget the
uniform mode's variance v_p = L b (1 - b), the largest, against the linear mode's, SenseMode's on
random sensitivities and random survival vectors' with the same mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from sdexp.subnetwork import depth_distribution, depth_variance, expected_depth, lemma1_deviation
from sdexp.survival import SenseMode
from sdexp.theory.outcome import Outcome, check_mark, markdown_table
from sdexp.theory.probes import sample_masks, survival


def deviation_quantile(pmf: np.ndarray, mean: float, beta: float) -> float:
    """The smallest d with P(|L_delta - L_p| <= d) >= 1 - beta, from the exact pmf over k = 0..L."""
    deviation = np.abs(np.arange(len(pmf)) - mean)
    order = np.argsort(deviation, kind="stable")
    covered = np.cumsum(pmf[order])
    return float(deviation[order][np.searchsorted(covered, 1.0 - beta - 1e-12)])


def random_modes(budget: float, num_blocks: int, count: int, rng: np.random.Generator):
    """``count`` survival vectors with mean exactly ``budget``, half from SenseMode (proportional
    rule) on random sensitivities, half b + t (u - mean u) with u uniform and t between 10% and
    100% of the largest value that keeps p in [0, 1]."""
    sensemode = SenseMode(rule="proportional")
    for _ in range(count // 2):
        sensitivity = torch.from_numpy(rng.exponential(size=num_blocks))
        yield "sensemode", sensemode.survival(budget, num_blocks, sensitivity)
        u = rng.uniform(-1.0, 1.0, num_blocks)
        u -= u.mean()
        room = min((1.0 - budget) / u.max(), budget / -u.min())
        yield "random", torch.from_numpy(budget + rng.uniform(0.1, 1.0) * room * u)


def run(
    depth: int = 100,
    budget: float = 0.5,
    modes: Sequence[str] = ("uniform", "linear"),
    num_masks: int = 100_000,
    betas: Sequence[float] = (0.5, 0.2, 0.1, 0.05, 0.01, 1e-3),
    num_random_modes: int = 500,
    seed: int = 0,
) -> Outcome:
    generator = torch.Generator().manual_seed(seed)
    probabilities = {mode: survival(mode, budget, depth) for mode in modes}
    distribution = pd.DataFrame({"k": np.arange(depth + 1)})
    bounds, summary_rows = [], []
    for mode, p in probabilities.items():
        pmf = depth_distribution(p.tolist())
        sampled = sample_masks(p, num_masks, generator).sum(1).long()
        histogram = np.bincount(sampled.numpy(), minlength=depth + 1) / num_masks
        distribution[f"exact_{mode}"], distribution[f"sampled_{mode}"] = pmf, histogram
        mean, variance = expected_depth(p.tolist()), depth_variance(p.tolist())
        deviations = (sampled.double() - mean).abs().numpy()
        for beta in betas:
            bounds.append(
                {
                    "mode": mode,
                    "beta": beta,
                    "lemma1_bound": lemma1_deviation(p.tolist(), beta),
                    "exact_quantile": deviation_quantile(pmf, mean, beta),
                    "sampled_quantile": float(np.quantile(deviations, 1.0 - beta)),
                }
            )
        summary_rows.append(
            {
                "mode": mode,
                "expected_depth": mean,
                "exact_mean": float(pmf @ np.arange(depth + 1)),
                "sampled_mean": float(sampled.double().mean()),
                "variance": variance,
                "exact_variance": float(pmf @ (np.arange(depth + 1) - mean) ** 2),
                "sampled_variance": float(sampled.double().var()),
                "total_variation": 0.5 * float(np.abs(histogram - pmf).sum()),
            }
        )
    bounds, moments = pd.DataFrame(bounds), pd.DataFrame(summary_rows)
    rng = np.random.default_rng(seed)
    candidates = [*probabilities.items(), *random_modes(budget, depth, num_random_modes, rng)]
    variances = pd.DataFrame(
        {
            "mode": name,
            "mean_survival": float(p.mean()),
            "variance": depth_variance(p.tolist()),
            "lemma1_bound_beta_0.05": lemma1_deviation(p.tolist(), 0.05),
        }
        for name, p in candidates
    )
    return Outcome(
        name="depth",
        title="Lemma 1 and Fig. 1a: the depth of the sampled subnetwork",
        tables={
            "distribution": distribution,
            "bounds": bounds,
            "moments": moments,
            "variances": variances,
        },
        figure=figure(distribution, bounds, modes, depth, budget, num_masks),
        summary=summary(moments, bounds, variances, depth, budget, num_masks),
        metrics=metrics(moments, bounds, variances),
    )


def uniform_is_widest(variances: pd.DataFrame) -> tuple[float, float]:
    """(v_p of the uniform mode, the largest v_p of every other mode at the same budget)."""
    uniform = variances["mode"] == "uniform"
    return tuple(float(variances.loc[rows, "variance"].max()) for rows in (uniform, ~uniform))


def metrics(moments: pd.DataFrame, bounds: pd.DataFrame, variances: pd.DataFrame) -> dict:
    out = {}
    for row in moments.itertuples():
        for key in ("variance", "sampled_variance", "total_variation"):
            out[f"depth/{row.mode}/{key}"] = getattr(row, key)
    uniform, others = uniform_is_widest(variances)
    out["depth/uniform_variance"], out["depth/largest_other_variance"] = uniform, others
    out["depth/bound_holds"] = float((bounds.lemma1_bound >= bounds.exact_quantile).all())
    return out


def summary(moments, bounds, variances, depth, budget, num_masks) -> str:
    uniform, others = uniform_is_widest(variances)
    moment_table = markdown_table(
        "mode | L_p = sum p_l | exact mean | sampled mean | v_p = sum p_l(1-p_l) | "
        "sampled variance | TV(sampled, exact)",
        [
            f"{r.mode} | {r.expected_depth:.2f} | {r.exact_mean:.2f} | {r.sampled_mean:.2f} | "
            f"{r.variance:.3f} | {r.sampled_variance:.3f} | {r.total_variation:.4f}"
            for r in moments.itertuples()
        ],
    )
    bound_table = markdown_table(
        "mode | beta | Lemma 1 bound | exact quantile | sampled quantile | bound holds",
        [
            f"{r.mode} | {r.beta:g} | {r.lemma1_bound:.2f} | {r.exact_quantile:.2f} | "
            f"{r.sampled_quantile:.2f} | {check_mark(r.lemma1_bound >= r.exact_quantile)}"
            for r in bounds.itertuples()
        ],
    )
    counts = variances["mode"].value_counts()
    return f"""
L = {depth} blocks, budget b = {budget}, {num_masks} sampled masks per mode.
Paper (Fig. 1a): the uniform mode's distribution of L_delta is wider than the linear mode's
(the figure has no numbers). Theory (Lemma 1): L_delta is Poisson-binomial with mean
L_p = sum p_l and variance v_p = sum p_l (1 - p_l).

{moment_table}

Lemma 1 (eq. 2): with probability >= 1 - beta, |L_delta - L_p| <= v_p u^-1(log(2/beta) / v_p).

{bound_table}

Largest variance at fixed budget: uniform v_p = {uniform:.3f} = L b (1 - b) against at most
{others:.3f} (smaller by {uniform - others:.2g}) for {len(variances) - 1} other modes with the
same mean ({", ".join(f"{n} {m}" for m, n in counts.items() if m != "uniform")}):
uniform is the largest: {check_mark(uniform > others)}.
"""


def figure(distribution, bounds, modes, depth, budget, num_masks):
    fig = Figure(figsize=(11, 3.8))
    (ax, bx) = fig.subplots(1, 2)
    k = distribution.k
    for i, mode in enumerate(modes):
        color, rows, label = f"C{i}", bounds[bounds["mode"] == mode], f"{mode}: {num_masks} masks"
        ax.bar(k, distribution[f"sampled_{mode}"], width=1.0, alpha=0.35, color=color, label=label)
        ax.plot(k, distribution[f"exact_{mode}"], color=color, lw=1.5, label=f"{mode}: exact")
        bx.plot(rows.beta, rows.lemma1_bound, "-", color=color, label=f"{mode}: Lemma 1 bound")
        label = f"{mode}: exact quantile"
        bx.plot(rows.beta, rows.exact_quantile, "o--", color=color, ms=4, label=label)
        bx.plot(rows.beta, rows.sampled_quantile, "x", color=color, ms=6)
    support = distribution.k[distribution.filter(like="exact_").max(axis=1) > 1e-5]
    ax.set(xlim=(support.min() - 1, support.max() + 1), xlabel=r"$L_\delta$", ylabel="probability")
    ax.set_title(f"(Fig. 1a) $L_\\delta$, ResNet{depth}, $\\bar L/L$ = {budget}")
    ax.legend(fontsize=8)
    bx.set(xscale="log", xlabel=r"$\beta$", ylabel=r"$|L_\delta - L_p|$ at level $1-\beta$")
    bx.set_title("Lemma 1: bound vs quantiles (x: sampled)")
    bx.legend(fontsize=8)
    fig.tight_layout()
    return fig
