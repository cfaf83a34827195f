"""The paired contrasts with the test set's sampling noise, from per-image predictions.

A run's test metric is the mean over its test images of a per-image value (100 x [wrong] for
an error in %, the squared error for an MSE). The seed-only interval of ``sdexp.analysis.paired``
treats the test set as fixed; with 1,297 test images and an error near 1.2% one run's binomial SD
is about 0.3 pp, so the test set's noise belongs in the interval when the question is about the
modes on the task. ``ImageTests.interval``: a two-way ("pigeonhole") bootstrap (Owen 2007, Ann.
Appl. Stat. 1(2)): each replicate draws the seeds and, independently, the test images (the same
for every seed, mode and budget; per split when pooled) with replacement; mildly conservative
(it counts the seed-by-image interaction twice). ``ImageTests.mcnemar``: McNemar's exact test.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

BOOTSTRAP_REPLICATES = 10_000
BOOTSTRAP_SEED = 0
MCNEMAR_COLUMNS = ["budget", "seed", "n_images", "only_a_wrong", "only_b_wrong", "p_value"]

#: A run's per-image values: (the split its test images come from, the values by image index).
Key = tuple[str, float, Hashable]  # (mode, budget, seed)


def per_image_values(frame: pd.DataFrame, metric: str) -> np.ndarray:
    """Per-image values whose mean is the run's metric, from one model's predictions.csv rows."""
    if metric == "error":
        return 100.0 * (frame["predicted"] != frame["target"]).to_numpy()
    return frame["squared_error"].to_numpy(dtype=float)


@dataclass(frozen=True)
class ImageTests:
    """The per-image values of the runs one paired analysis compares, by mode, budget (keyed as
    ``sdexp.analysis.paired`` keys them) and seed, and the tests on them."""

    values: dict[Key, tuple[str, np.ndarray]]
    metric: str = "error"
    a: str = "sensemode"
    b: str = "uniform"
    replicates: int = BOOTSTRAP_REPLICATES
    seed: int = BOOTSTRAP_SEED

    def image(self, mode: str, budget: float, seed: Hashable) -> np.ndarray:
        return self.values[(mode, budget, seed)][1]

    def differences(self, seeds: Sequence[Hashable], budgets: Sequence[float]) -> list:
        """Per split, the (images, seeds) matrix of per-image a - b averaged over ``budgets``."""
        found: dict[str, list] = {}
        for s in seeds:
            per_budget = [self.image(self.a, b, s) - self.image(self.b, b, s) for b in budgets]
            split = self.values[(self.a, budgets[0], s)][0]
            found.setdefault(split, []).append(np.mean(per_budget, axis=0))
        return [np.column_stack(d) for d in found.values()]

    def replicate_effects(self, seeds: Sequence[Hashable], budgets: Sequence[float]) -> np.ndarray:
        """The bootstrap's ``replicates`` effects (the module docstring)."""
        rng = np.random.default_rng(self.seed)
        total, count = np.zeros(self.replicates), 0
        for d in self.differences(seeds, budgets):
            images, n = d.shape
            per_seed = np.empty((self.replicates, n))
            for start in range(0, self.replicates, 1000):
                rows = min(1000, self.replicates - start)
                weights = rng.multinomial(images, np.full(images, 1 / images), size=rows)
                per_seed[start : start + rows] = weights @ d / images
            chosen = rng.integers(0, n, size=(self.replicates, n))
            total += np.take_along_axis(per_seed, chosen, axis=1).sum(axis=1)
            count += n
        return total / count

    def interval(
        self, seeds: Sequence[Hashable], budgets: Sequence[float], level: float = 0.95
    ) -> tuple[float, float]:
        """The percentile interval at ``level`` of the effect with the test set's noise."""
        effects = self.replicate_effects(seeds, budgets)
        low, high = np.quantile(effects, [(1 - level) / 2, (1 + level) / 2])
        return float(low), float(high)

    def mcnemar(self) -> pd.DataFrame:
        """Per budget and seed with both modes (``MCNEMAR_COLUMNS``); empty for an MSE."""
        if self.metric != "error":
            return pd.DataFrame(columns=MCNEMAR_COLUMNS)
        rows = []
        for mode, budget, seed in sorted(self.values, key=str):
            if mode != self.a or (self.b, budget, seed) not in self.values:
                continue
            wrong_a = self.image(self.a, budget, seed) > 0
            wrong_b = self.image(self.b, budget, seed) > 0
            only_a, only_b = int(np.sum(wrong_a & ~wrong_b)), int(np.sum(wrong_b & ~wrong_a))
            p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
            rows.append((budget, seed, len(wrong_a), only_a, only_b, p))
        frame = pd.DataFrame(rows, columns=MCNEMAR_COLUMNS)
        return frame.sort_values(["budget", "seed"], kind="stable").reset_index(drop=True)
