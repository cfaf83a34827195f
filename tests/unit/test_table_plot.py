"""Table 2's plot (``sdexp.analysis.plots``) shows every series: error bars within the metric's
range, modes side by side, a setup without finished runs says so."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.container import ErrorbarContainer

from sdexp.analysis.plots import Plot, error_bars, save_plot, table_figure
from sdexp.analysis.tables import Table


def table(metric: str, rows: list[tuple]) -> Plot:
    """The plot of the Table of one setup from (mode, budget, n, mean, std) rows."""
    frame = pd.DataFrame(
        [
            {"mode": m, "variant": "", "budget": b, "n": n, "mean": mean, "std": std}
            | {"ok": n, "failed": 0, "missing": 0 if n else 1}
            for m, b, n, mean, std in rows
        ]
    )
    setup = {"setup": "abc123", "dataset": "toy", "model": "vanilla", "stable": True}
    setup |= {"epochs": 1, "recipe": "toy", "metric": metric, "report": "final"}
    return Table(frame.assign(**setup, num_blocks=8)).plot()


def test_error_bars_stay_within_the_metric_range():
    below, above = error_bars("error", [1.0, 99.0], [3.0, 3.0])
    assert below == [1.0, 3.0] and above == [3.0, 1.0]  # never below 0 % or above 100 %
    assert error_bars("mse", [0.1], [0.5]) == [[0.1], [0.5]]  # an MSE is not negative
    assert error_bars("mse", [0.1], [math.nan]) == [[0.0], [0.0]]  # one seed: no bar
    t = table("error", [("uniform", 0.5, 4, 1.0, 3.0), ("uniform", 0.7, 4, 99.0, 3.0)])
    (bars,) = [c for c in table_figure(t).axes[0].containers if isinstance(c, ErrorbarContainer)]
    (segments,) = bars.lines[2]
    low, high = zip(*[(s[0][1], s[1][1]) for s in segments.get_segments()], strict=True)
    assert low == (0.0, 96.0) and high == (4.0, 100.0)  # as drawn


def test_a_plot_without_finished_runs_says_so(tmp_path):
    empty = table("mse", [("uniform", 0.5, 0, math.nan, math.nan)])
    assert save_plot(empty, tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"
    texts = [t.get_text() for t in table_figure(empty).axes[0].texts]
    assert "no finished run in this setup" in texts
    full = table("mse", [("uniform", 0.5, 2, 0.3, 0.1), ("sensemode", 0.5, 2, 0.4, 0.1)])
    axes = table_figure(full).axes[0]
    assert "no finished run in this setup" not in [t.get_text() for t in axes.texts]
    xs = {round(line.get_xdata()[0], 6) for line in axes.lines if len(line.get_xdata())}
    assert len(xs) == 2  # the two modes' points at b = 0.5 side by side, not on top
