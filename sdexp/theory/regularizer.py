"""Theorem 1, Fig. 3 and eq. 6: the explicit regularization of stochastic depth.

With the quadratic loss, eq. 6 reads E_delta[loss(W; delta)] ~ loss(W; p) + 1/(2L) sum_l
p_l (1 - p_l) g_l(W), g_l(W) = (2/n) sum_i ||zeta_l(x_i)||^2, zeta_l = J_l z_l (eq. 5), loss(W; p)
the average network's loss. Theorem 1: at He initialisation E_W[g_l] is the same for every layer,
so at a fixed budget the uniform mode maximises the expected penalty. Under Assumption 1 the
common value is E_W[g_l] = 8 (1 + s^2)^(L-1) ||x||^2 / d for one output (||y_0||^2 = 2N ||x||^2 / d,
||z_l||^2 and ||J_l||^2 grow by (1 + s^2) per layer, and zeta_l is their inner product).
``regularizer_draws`` checks Theorem 1 (Fig. 3: L = 50, width 512), ``eq6_check`` eq. 6 on the toy
task, expanded around delta = 1 as in the paper and around delta = p (footnote 2) beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor

from sdexp.data import ToyDataModule
from sdexp.gate import branch_scale
from sdexp.models import ResidualNetwork
from sdexp.theory.outcome import Outcome, markdown_table
from sdexp.theory.probes import (
    information_discrepancy,
    layer_regularizers,
    network_output,
    sample_masks,
    survival,
)
from sdexp.theory.toy import toy_data, toy_resnet, train_with_probe


def theoretical_regularizer(depth: int, stable: bool, x: Tensor) -> float:
    """E_W[g_l] = 8 (1 + s^2)^(L-1) E||x||^2 / d at He init (one output; see module doc)."""
    s2 = branch_scale(depth, stable) ** 2
    return 8.0 * (1.0 + s2) ** (depth - 1) * float(x.double().pow(2).sum(1).mean()) / x.shape[1]


def regularizer_draws(
    width: int,
    depth: int,
    stable: bool,
    num_weights: int,
    num_inputs: int,
    input_dim: int,
    seed: int,
) -> tuple[pd.DataFrame, float]:
    """g_l(W) for ``num_weights`` He-initialised Vanilla ResNets (one row per draw and layer),
    and the theoretical E_W[g_l]."""
    x, _ = toy_data(num_inputs, input_dim, seed)
    torch.manual_seed(seed)
    rows = []
    for draw in range(num_weights):
        model = toy_resnet((input_dim,), width, depth, stable)
        g = layer_regularizers(information_discrepancy(model, x))
        rows.append(pd.DataFrame({"draw": draw, "layer": np.arange(1, depth + 1), "g": g}))
    return pd.concat(rows, ignore_index=True), theoretical_regularizer(depth, stable, x)


def flatness(draws: pd.DataFrame) -> dict[str, float]:
    """How flat E_W[g_l] is in l: the layer means' spread, and the mean over the deeper half of
    the layers against the shallower half (1 when flat; weight draws shared by both halves)."""
    means = draws.groupby("layer").g.mean()
    half = len(means) // 2
    per_draw = draws.pivot(index="draw", columns="layer", values="g").to_numpy()
    ratio = per_draw[:, half:].mean(1) / per_draw[:, :half].mean(1)
    return {
        "mean": float(means.mean()),
        "max_over_min": float(means.max() / means.min()),
        "cv_across_layers": float(means.std() / means.mean()),
        "deep_over_shallow": float(means.iloc[half:].mean() / means.iloc[:half].mean()),
        "deep_over_shallow_se": float(ratio.std() / np.sqrt(len(ratio))),
    }


HIGH_BUDGET = 0.9  # "high budget" in the summaries and tests


def loss_gap(
    model: ResidualNetwork,
    x: Tensor,
    t: Tensor,
    p: Tensor,
    num_masks: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """E_delta[loss] - loss(average network) by Monte Carlo (``num_masks`` masks per input), its
    standard error, its curvature part and the penalty with g_l at p.

    With the quadratic loss, gap = Var_delta[y_out] + (E y - y_p)(E y + y_p - 2t) (y_p: the
    average network's output): eq. 6's penalty models the first part; the second, the curvature
    in delta times the residual, is the Gamma term dropped after eq. 5. The control variate
    a . (delta - p), a = d y_out / d delta at p (zero mean), removes the first-order noise.
    """
    n, num_blocks, scale = len(x), len(p), model.gate.scale
    p = p.to(x.dtype)
    zeta_p = information_discrepancy(model, x, delta=p)  # (n, L, o)
    slope = zeta_p * scale  # d y_out / d delta at p
    delta = sample_masks(p, num_masks * n, generator).to(x.dtype).view(num_masks, n, num_blocks)
    with torch.no_grad():
        y_p = network_output(model, x, p.expand(n, -1) * scale)  # (n, o)
        y = network_output(model, x.repeat(num_masks, 1), delta.flatten(0, 1) * scale)
    y = y.view(num_masks, n, -1)
    linear = torch.einsum("mnl,nlo->mno", delta - p, slope)
    gap = (y - t).pow(2).sum(-1) - (y_p - t).pow(2).sum(-1) - 2 * ((y_p - t) * linear).sum(-1)
    mean_y = y_p + (y - y_p - linear).mean(0)
    curvature = ((mean_y - y_p) * (mean_y + y_p - 2 * t)).sum(-1).mean()
    variance = p * (1.0 - p)
    return {
        "average_network_loss": float((y_p - t).pow(2).sum(-1).mean()),
        "gap": float(gap.mean()),
        "gap_se": float(gap.double().var(0).sum().sqrt() / (n * num_masks**0.5)),
        "curvature_part": float(curvature),
        "penalty_at_p": float((variance * layer_regularizers(zeta_p)).sum() / (2 * num_blocks)),
    }


def eq6_check(
    width: int,
    depth: int,
    num_inputs: int,
    num_masks: int,
    budgets: Sequence[float],
    modes: Sequence[str],
    epochs: Sequence[int],
    train_mode: str,
    train_budget: float,
    dataset: ToyDataModule,
    optimizer: Callable,
    seed: int,
) -> pd.DataFrame:
    """One row per (epoch, mode, budget): the Monte Carlo gap and eq. 6's penalty, for a Stable
    Vanilla ResNet at initialisation and after training on the toy task (``epochs``)."""
    dataset.setup()
    train = dataset.splits["train"]
    x, t = train.inputs[:num_inputs], train.targets[:num_inputs]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = toy_resnet(dataset.input_shape, width, depth, stable=True)
    rows = []

    def probe(epoch: int, model: ResidualNetwork) -> None:
        if epoch not in epochs:
            return
        g_one = layer_regularizers(information_discrepancy(model, x))
        for mode in modes:
            for budget in budgets:
                p = survival(mode, budget, depth)
                penalty = float((p * (1.0 - p) * g_one).sum()) / (2 * depth)
                parts = loss_gap(model, x, t, p, num_masks, generator)
                rows.append(dict(epoch=epoch, mode=mode, budget=budget, penalty=penalty, **parts))

    train_with_probe(model, train_mode, train_budget, dataset, max(epochs), optimizer, probe)
    frame = pd.DataFrame(rows)
    frame["variance_part"] = frame.gap - frame.curvature_part
    frame["relative_error"] = frame.penalty / frame.gap - 1.0
    frame["relative_error_at_p"] = frame.penalty_at_p / frame.variance_part - 1.0
    return frame


def run(theorem1: dict, eq6: dict, seed: int = 0) -> Outcome:
    """``theorem1``: the arguments of ``regularizer_draws``; ``eq6``: those of ``eq6_check``
    (see ``conf/experiment/regularizer.yaml``)."""
    draws, theory = regularizer_draws(**theorem1, seed=seed)
    gaps = eq6_check(**eq6, seed=seed)
    flat = flatness(draws)
    return Outcome(
        name="regularizer",
        title="Theorem 1, Fig. 3 and eq. 6: the explicit regularization of stochastic depth",
        tables={"regularizer_layers": draws, "regularizer_eq6": gaps},
        figure=figure(draws, theory, gaps, theorem1),
        summary=summary(draws, theory, flat, gaps, theorem1, eq6),
        metrics=metrics(flat, theory, gaps),
    )


def metrics(flat: dict, theory: float, gaps: pd.DataFrame) -> dict:
    out = {f"regularizer/theorem1/{key}": value for key, value in flat.items()}
    out["regularizer/theorem1/theory"] = theory
    for row in gaps.itertuples():
        key = f"regularizer/eq6/epoch{row.epoch}/{row.mode}/b{row.budget:g}"
        for name in ("gap", "penalty", "relative_error"):
            out[f"{key}/{name}"] = getattr(row, name)
    return out


def eq6_table(gaps: pd.DataFrame) -> str:
    rows = [
        f"{r.mode} | {r.budget:g} | {r.average_network_loss:.4f} | {r.gap:.4g} ± {r.gap_se:.2g} | "
        f"{r.penalty:.4g} | {100 * r.relative_error:+.1f}% | {r.variance_part:.4g} | "
        f"{r.curvature_part:+.3g} | {r.penalty_at_p:.4g} | {100 * r.relative_error_at_p:+.1f}%"
        for r in gaps.itertuples()
    ]
    return markdown_table(
        "mode | b | loss(avg net) | gap (MC) | eq. 6 penalty | error | Var_delta y | "
        "curvature part | penalty at p | error vs Var",
        rows,
    )


def summary(draws, theory, flat, gaps, theorem1_sizes, eq6_sizes) -> str:
    t1, e6 = theorem1_sizes, eq6_sizes
    kind = "Stable" if t1["stable"] else "plain"
    means = draws.groupby("layer").g.mean()
    states = "\n\n".join(
        f"*{state(epoch).capitalize()}*\n\n" + eq6_table(rows)
        for epoch, rows in gaps.groupby("epoch")
    )
    deviation = 100 * (flat["mean"] / theory - 1)
    at_layers = ", ".join(f"{means.iloc[i]:.4g}" for i in (0, len(means) // 2 - 1, -1))
    flat_table = markdown_table(
        ["", "ours"],
        [
            f"mean over layers of E_W[g_l] | {flat['mean']:.4g} ({deviation:+.1f}% vs theory)",
            f"E_W[g_l] at l = 1, L/2, L | {at_layers}",
            f"largest / smallest layer mean | {flat['max_over_min']:.3f}",
            f"spread of the layer means (CV) | {flat['cv_across_layers']:.3f}",
            "deeper half / shallower half | "
            f"{flat['deep_over_shallow']:.3f} ± {flat['deep_over_shallow_se']:.3f}",
        ],
    )
    return f"""
**Theorem 1 (Fig. 3)**: g_l(W) at He initialisation, {kind} Vanilla ResNet{t1["depth"]},
width {t1["width"]}, {t1["num_weights"]} weight draws, {t1["num_inputs"]} toy inputs each.
Paper: E_W[g_l] is the same for all l (Fig. 3 shows the spread; no numbers).
Theory: E_W[g_l] = 8 (1 + s^2)^(L-1) ||x||^2/d = {theory:.4g}.

{flat_table}

**Eq. 6** on the toy task: Stable Vanilla ResNet{e6["depth"]}, width {e6["width"]},
{e6["num_inputs"]} training inputs, {e6["num_masks"]} masks per input; trained with
{e6["train_mode"]} b = {e6["train_budget"]} between the weight states.
gap = E_delta[loss] - loss(average network) (Monte Carlo ± standard error). eq. 6 penalty =
1/(2L) sum p_l(1-p_l) g_l with g_l at delta = 1, as in the paper; error = penalty / gap - 1.
The gap splits exactly into Var_delta[y_out], which the penalty models, and a curvature part
(E y - y_p)(E y + y_p - 2t): the network's curvature in delta times the residual, the Gamma term
dropped after eq. 5. "penalty at p": g_l at the average network (footnote 2), against Var_delta.

{states}

{reading(gaps)}
"""


def reading(gaps: pd.DataFrame) -> str:
    """The eq. 6 table in words: which part of the gap the penalty misses, and where."""
    high = gaps.budget >= HIGH_BUDGET
    at_p = gaps.relative_error_at_p.abs()
    curvature = (gaps.curvature_part / gaps.gap).abs().groupby(gaps.epoch).median()
    largest = gaps.loc[gaps.budget == gaps.budget.max(), "relative_error"].abs().max()
    return (
        f"Reading: the second-order term with g_l at p matches Var_delta[y_out] within "
        f"{100 * at_p[high].max():.0f}% at b >= {HIGH_BUDGET} ({100 * at_p.max():.0f}% at any "
        f"budget). Eq. 6 as written takes g_l at delta = 1, which overestimates it by a factor "
        f"that tends to 1 as b -> 1, and it leaves out the curvature part, a median "
        + ", ".join(f"{100 * v:.0f}% ({state(e)})" for e, v in curvature.items())
        + f" of the gap. At b = {gaps.budget.max():g} eq. 6 is within "
        f"{100 * largest:.0f}% of the Monte Carlo gap."
    )


def state(epoch: int) -> str:
    return "at init" if epoch == 0 else f"after {epoch} epoch{'s' if epoch > 1 else ''}"


def figure(draws, theory, gaps, theorem1_sizes):
    states = sorted(gaps.epoch.unique())
    fig = Figure(figsize=(6 + 4 * len(states), 3.8))
    axes = fig.subplots(1, 1 + len(states), gridspec_kw={"width_ratios": [3] + [2] * len(states)})
    ax = axes[0]
    per_layer = [group.g.to_numpy() for _, group in draws.groupby("layer")]
    layers = np.arange(1, len(per_layer) + 1)
    ax.boxplot(
        per_layer, positions=layers, widths=0.6, showfliers=False, medianprops={"color": "C0"}
    )
    means, label = [values.mean() for values in per_layer], r"mean over weights, $E_W[g_l]$"
    ax.plot(layers, means, "o", color="C1", ms=3, label=label)
    ax.axhline(theory, color="k", ls="--", lw=1, label="theory (Theorem 1)")
    step = max(1, len(layers) // 10)
    ax.set_xticks(layers[::step], labels=layers[::step])
    ax.set(xlabel="layer l", ylabel=r"$g_l(W)$")
    depth, width = theorem1_sizes["depth"], theorem1_sizes["width"]
    ax.set_title(f"(Fig. 3) $g_l(W)$ at init, Vanilla ResNet{depth}, width {width}")
    ax.legend(fontsize=8)
    for bx, epoch in zip(axes[1:], states, strict=True):
        for i, (mode, rows) in enumerate(gaps[gaps.epoch == epoch].groupby("mode", sort=False)):
            b, color = rows.budget, f"C{i}"
            yerr, label = 2 * rows.gap_se, f"{mode}: MC gap"
            bx.errorbar(b, rows.gap, yerr=yerr, fmt="o", ms=4, color=color, capsize=2, label=label)
            bx.plot(b, rows.penalty, "-", color=color, label=f"{mode}: eq. 6")
            bx.plot(b, rows.penalty_at_p, ":", color=color, label=f"{mode}: eq. 6, $g_l$ at p")
        bx.set(xlabel=r"budget $\bar L / L$", ylabel=r"$E_\delta$[loss] - loss(average net)")
        bx.set_title(f"Eq. 6, {state(epoch)}")
        bx.legend(fontsize=7)
    fig.tight_layout()
    return fig
