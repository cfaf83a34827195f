"""Theorem 2, Figs. 4 and 5: stochastic depth mimics Gaussian noise injection at large depth.

For a fixed input x, a neuron of the Stable ResNet (eq. 3) is, to first order, the average
network's value plus gamma = (1/sqrt(L)) sum_l eta_l mu_l(x), eta_l = delta_l - p_l,
mu_l = <z_l, grad_{y_l} G> (eq. 7). Theorem 2 (Lindeberg's CLT) makes gamma Gaussian as L grows,
provided the Lindeberg ratio max_k mu_k^2 / sum_l mu_l^2 goes to 0 (its second condition, Fig. 4).

Fig. 5: for each input, masks give values of a neuron and the Shapiro-Wilk test one p-value: the
output neuron after every epoch (left), one neuron of every layer y_l (right). Networks of several
depths are trained the same way for the output neuron's Lindeberg ratio (mu_l = zeta_l, eq. 5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from scipy.stats import shapiro
from torch import Tensor

from sdexp.data import ToyDataModule
from sdexp.models import ResidualNetwork
from sdexp.run.console import counted
from sdexp.theory.outcome import Outcome, check_mark, markdown_table
from sdexp.theory.probes import (
    hidden_layers,
    information_discrepancy,
    network_output,
    sample_masks,
    survival,
)
from sdexp.theory.toy import toy_resnet, train_with_probe

LEVEL = 0.05  # the Shapiro-Wilk test's level in the summaries


def neuron_samples(
    model: ResidualNetwork,
    x: Tensor,
    p: Tensor,
    num_masks: int,
    neuron: int,
    generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Values of neuron ``neuron`` of y_1..y_L, shape (L, masks, inputs), and of the output,
    shape (masks, inputs), with ``num_masks`` masks per input, all in one batch."""
    n = len(x)
    delta = sample_masks(p, num_masks * n, generator).to(x.dtype)
    layers = []
    with torch.no_grad():
        hidden = hidden_layers(model, x.repeat(num_masks, 1), delta * model.gate.scale)
        next(hidden)  # y_0 does not depend on the mask
        for y in hidden:
            layers.append(y[:, neuron].view(num_masks, n))
        out = model.head(y)[:, 0].view(num_masks, n)
    return torch.stack(layers).double().numpy(), out.double().numpy()


def shapiro_pvalues(samples: np.ndarray) -> np.ndarray:
    """Shapiro-Wilk p-value along the masks axis (the second to last): one per input."""
    return shapiro(samples, axis=-2).pvalue


def lindeberg_ratio(model: ResidualNetwork, x: Tensor) -> np.ndarray:
    """max_k mu_k^2 / sum_l mu_l^2 for the output neuron, one per input (Theorem 2, cond. 2);
    mu_l = zeta_l = J_l z_l at delta = 1 (eq. 5 and eq. 7)."""
    mu2 = information_discrepancy(model, x)[:, :, 0].double().pow(2)
    return (mu2.max(1).values / mu2.sum(1)).numpy()


def run(
    dataset: ToyDataModule,
    optimizer: Callable,
    width: int = 128,
    depth: int = 100,
    budget: float = 0.7,
    mode: str = "uniform",
    epochs: int = 20,
    num_inputs: int = 64,
    num_masks: int = 200,
    neuron: int = 0,
    lindeberg_depths: Sequence[int] = (10, 25, 50, 100, 200),
    seed: int = 0,
) -> Outcome:
    dataset.setup()
    test = dataset.splits["test"]
    x, t = test.inputs[:num_inputs], test.targets[:num_inputs]
    generator = torch.Generator().manual_seed(seed)
    outputs, layers, ratios, losses = [], [], [], []
    for num_blocks in sorted(set(lindeberg_depths) | {depth}):
        p = survival(mode, budget, num_blocks)

        def probe(epoch: int, model: ResidualNetwork, num_blocks=num_blocks, p=p):
            for i, ratio in enumerate(lindeberg_ratio(model, x)):
                ratios.append({"depth": num_blocks, "epoch": epoch, "input": i, "ratio": ratio})
            if num_blocks != depth:
                return
            with torch.no_grad():
                average = network_output(model, x, p.to(x.dtype) * model.gate.scale)
            losses.append({"epoch": epoch, "test_loss": float((average - t).pow(2).mean())})
            per_layer, out = neuron_samples(model, x, p, num_masks, neuron, generator)
            outputs.extend(
                {"epoch": epoch, "input": i, "pvalue": value}
                for i, value in enumerate(shapiro_pvalues(out))
            )
            if epoch in (0, epochs):
                for layer, values in enumerate(shapiro_pvalues(per_layer), start=1):
                    layers.extend(
                        {"epoch": epoch, "layer": layer, "input": i, "pvalue": value}
                        for i, value in enumerate(values)
                    )

        torch.manual_seed(seed)
        model = toy_resnet(dataset.input_shape, width, num_blocks, stable=True)
        train_with_probe(model, mode, budget, dataset, epochs, optimizer, probe)

    output = pd.DataFrame(outputs).merge(pd.DataFrame(losses), on="epoch")
    tables = {
        "normality_output": output,
        "normality_layers": pd.DataFrame(layers),
        "normality_lindeberg": pd.DataFrame(ratios),
    }
    sizes = (
        f"Stable Vanilla ResNet{depth}, width {width}, {mode} b = {budget}, trained "
        f"{counted(epochs, 'epoch')} on the toy task; {num_inputs} test inputs, "
        f"{num_masks} masks each"
    )
    return Outcome(
        name="normality",
        title="Theorem 2, Figs. 4 and 5: Gaussian behaviour of the neurons under stochastic depth",
        tables=tables,
        figure=figure(tables, depth, epochs, width, budget),
        summary=summary(tables, depth, epochs, sizes),
        metrics=metrics(tables, depth, epochs),
    )


def normal_from(layers: pd.DataFrame) -> int | None:
    """The first layer from which the median p-value stays above LEVEL, or None."""
    medians = layers.groupby("layer").pvalue.median()
    below = medians.index[medians <= LEVEL]
    if len(below) == 0:
        return int(medians.index.min())
    last = int(below.max())
    return None if last == int(medians.index.max()) else last + 1


def lindeberg_medians(lindeberg: pd.DataFrame) -> pd.DataFrame:
    """Median Lindeberg ratio over inputs, one row per depth, one column per epoch."""
    return lindeberg.pivot_table(index="depth", columns="epoch", values="ratio", aggfunc="median")


def metrics(tables: dict, depth: int, epochs: int) -> dict:
    output, layers = tables["normality_output"], tables["normality_layers"]
    normal = (output.pvalue > LEVEL).groupby(output.epoch).mean()
    out = {
        "normality/output/min_median_pvalue": float(output.groupby("epoch").pvalue.median().min()),
        "normality/output/min_fraction_normal": float(normal.min()),
    }
    for epoch in (0, epochs):
        found = normal_from(layers[layers.epoch == epoch])
        out[f"normality/layers/epoch{epoch}/normal_from"] = np.nan if found is None else found
    for num_blocks, row in lindeberg_medians(tables["normality_lindeberg"]).iterrows():
        out[f"normality/lindeberg/L{num_blocks}/init"] = float(row[0])
        out[f"normality/lindeberg/L{num_blocks}/final"] = float(row[epochs])
    return out


def summary(tables: dict, depth: int, epochs: int, sizes: str) -> str:
    output, layers = tables["normality_output"], tables["normality_layers"]
    per_epoch = output.groupby("epoch").agg(
        median=("pvalue", "median"),
        normal=("pvalue", lambda v: (v > LEVEL).mean()),
        loss=("test_loss", "first"),
    )
    shown = sorted({0, 1, epochs // 2, epochs} & set(per_epoch.index))
    output_table = markdown_table(
        ["epoch", "loss (average net)", "median p-value", f"inputs with p > {LEVEL}"],
        [
            f"{e} | {per_epoch.loss[e]:.4f} | {per_epoch['median'][e]:.3f} | "
            f"{100 * per_epoch.normal[e]:.0f}%"
            for e in shown
        ],
    )
    layer_medians = layers.pivot_table(
        index="layer", columns="epoch", values="pvalue", aggfunc="median"
    )
    fractions = layers.pivot_table(
        index="layer", columns="epoch", values="pvalue", aggfunc=lambda v: (v > LEVEL).mean()
    )
    picks = [layer for layer in (1, 2, 5, 10, 20, 30, 50, depth) if layer in layer_medians.index]
    cells = layer_medians.map("{:.3g}".format) + ", " + (100 * fractions).map("{:.0f}%".format)
    layer_table = markdown_table(
        ["layer", *(f"epoch {e}: median p, inputs with p > {LEVEL}" for e in cells.columns)],
        [(layer, *cells.loc[layer]) for layer in picks],
    )
    starts = {e: normal_from(layers[layers.epoch == e]) for e in layer_medians.columns}
    lindeberg = lindeberg_medians(tables["normality_lindeberg"])
    lindeberg_table = markdown_table(
        ["depth L", "1/L", "median ratio, init", f"after {counted(epochs, 'epoch')}"],
        [
            f"{num_blocks} | {1 / num_blocks:.4f} | {row[0]:.4f} | {row[epochs]:.4f}"
            for num_blocks, row in lindeberg.iterrows()
        ],
    )
    decreasing = bool((lindeberg.diff().dropna() < 0).all().all())
    every = counted(epochs + 1, "epoch")
    return f"""
{sizes}; loss: the average network's on these inputs.
Paper (Fig. 5): the output neuron is Gaussian throughout training, and a neuron of layer l
becomes Gaussian after about 20 layers; Fig. 4: the Lindeberg ratio falls with depth at
every epoch (no numbers in the text). Theory: under normality the p-values are uniform on
[0, 1] (median 0.5, {100 * (1 - LEVEL):.0f}% above {LEVEL}).

**Output neuron, across training (Fig. 5 left)**

{output_table}

**One neuron per layer (Fig. 5 right)**: the median p-value stays above {LEVEL} from layer
{", ".join(f"{starts[e]} (epoch {e})" for e in starts)}.

{layer_table}

**Lindeberg ratio max_k mu_k^2 / sum_l mu_l^2 (Fig. 4)**, median over inputs; 1/L is its value
when all layers contribute equally. Decreasing in L at each of the {every} 0..{epochs}:
{check_mark(decreasing)}.

{lindeberg_table}
"""


def figure(tables: dict, depth: int, epochs: int, width: int, budget: float):
    output, layers = tables["normality_output"], tables["normality_layers"]
    lindeberg = lindeberg_medians(tables["normality_lindeberg"])
    fig = Figure(figsize=(16, 3.8))
    (ax, bx, cx) = fig.subplots(1, 3)
    colors = colormaps["viridis"](np.linspace(0, 1, len(lindeberg.columns)))
    for color, epoch in zip(colors, lindeberg.columns, strict=True):
        label = f"epoch {epoch}" if epoch in (0, epochs) else None
        ax.plot(lindeberg.index, lindeberg[epoch], "o-", ms=3, color=color, lw=1, label=label)
    ax.plot(lindeberg.index, 1.0 / lindeberg.index, "k--", lw=1, label="1/L")
    ax.set_xscale("log")
    ax.set_xticks(lindeberg.index, labels=lindeberg.index, minor=False)
    ax.minorticks_off()
    ax.set(yscale="log", xlabel="depth L", ylabel=r"$\max_k \mu_k^2 / \sum_l \mu_l^2$")
    ax.set_title("(Fig. 4) Lindeberg ratio")
    ax.legend(fontsize=8)
    by_epoch = [group.pvalue.to_numpy() for _, group in output.groupby("epoch")]
    bx.boxplot(by_epoch, positions=sorted(output.epoch.unique()), widths=0.6, showfliers=False)
    bx.axhline(LEVEL, color="r", ls=":", lw=1)
    pvalue_axis = {"ylabel": "Shapiro-Wilk p-value", "ylim": (0, 1)}
    bx.set(xlabel="epoch", title=f"(Fig. 5 left) output neuron, ResNet{depth}", **pvalue_axis)
    step = max(1, epochs // 10)
    bx.set_xticks(range(0, epochs + 1, step), labels=range(0, epochs + 1, step))
    for epoch, color in ((0, "C1"), (epochs, "C0")):
        quantiles = layers[layers.epoch == epoch].groupby("layer").pvalue.quantile([0.1, 0.5, 0.9])
        band, label = quantiles.unstack(), f"epoch {epoch}: median, 10-90% of inputs"
        cx.fill_between(band.index, band[0.1], band[0.9], color=color, alpha=0.2, lw=0)
        cx.plot(band.index, band[0.5], color=color, lw=1.2, label=label)
    cx.legend(fontsize=8, loc="upper left")
    cx.axhline(LEVEL, color="r", ls=":", lw=1)
    step = max(1, depth // 10)
    cx.set_xticks(range(step, depth + 1, step), labels=range(step, depth + 1, step))
    cx.set(xlabel="layer l", title="(Fig. 5 right) one neuron per layer", **pvalue_axis)
    fig.suptitle(f"Stable Vanilla ResNet, width {width}, uniform b = {budget}", fontsize=10)
    fig.tight_layout()
    return fig
