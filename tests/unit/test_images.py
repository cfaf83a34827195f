"""The test set's sampling noise in the paired contrasts (``sdexp.analysis.images``) on fabricated
per-image values whose variance is known: the two-way bootstrap's spread against the formula,
McNemar's counts and p-value by hand, and ``sdexp-table`` reading predictions.csv."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sdexp.analysis.cli import main
from sdexp.analysis.images import ImageTests
from sdexp.analysis.paired_text import NO_IMAGES
from sdexp.predictions import write_predictions
from tests.helpers import fake_run


def additive(n_seeds: int, n_images: int, sd_seed: float, sd_image: float, rng) -> np.ndarray:
    """Per-image differences a_s + b_i (no seed-by-image interaction), shape (images, seeds)."""
    a = rng.normal(0.2, sd_seed, n_seeds)
    b = rng.normal(0.0, sd_image, n_images)
    return b[:, None] + a[None, :]


def image_values(d: np.ndarray, split: str = "s", seeds=None) -> dict:
    """ImageTests values whose SenseMode - Uniform per image is ``d`` (images x seeds)."""
    seeds = seeds if seeds is not None else range(d.shape[1])
    values = {}
    for j, s in enumerate(seeds):
        values[("uniform", 0.8, s)] = (split, np.zeros(d.shape[0]))
        values[("sensemode", 0.8, s)] = (split, d[:, j])
    return values


def test_the_two_way_bootstrap_spreads_as_seeds_and_images_add():
    """Without interaction the effect's variance is var(a)/n + var(b)/N (times (1 - 1/n) and
    (1 - 1/N), what resampling with replacement gives): the replicates' spread matches it, and
    the interval is seeded (the same twice) and holds the effect."""
    rng = np.random.default_rng(1)
    d = additive(20, 300, 0.15, 3.0, rng)
    images = ImageTests(image_values(d))
    seeds = list(range(20))
    effects = images.replicate_effects(seeds, [0.8])
    a, b = d.mean(axis=0), d.mean(axis=1)
    expected = a.var() / 20 + b.var() / 300  # np.var: ddof 0, the bootstrap's own
    assert effects.std() == pytest.approx(np.sqrt(expected), rel=0.05)
    assert effects.mean() == pytest.approx(d.mean(), abs=3 * np.sqrt(expected / 10_000))
    low, high = images.interval(seeds, [0.8])
    assert (low, high) == images.interval(seeds, [0.8]) and low < d.mean() < high
    seed_only = stats.ttest_1samp(a, 0).confidence_interval()
    assert high - low > seed_only.high - seed_only.low  # the test set's noise widens it


def test_each_split_resamples_its_own_images_and_seeds():
    """Two splits pooled: a split whose differences do not vary adds nothing to the spread, so
    the spread is the other split's scaled by its share of the seeds."""
    rng = np.random.default_rng(2)
    noisy, flat = additive(10, 200, 0.2, 2.0, rng), np.full((500, 10), 0.1)
    values = image_values(noisy, "one", range(10)) | image_values(flat, "two", range(10, 20))
    effects = ImageTests(values).replicate_effects(list(range(20)), [0.8])
    a, b = noisy.mean(axis=0), noisy.mean(axis=1)
    expected = (10 / 20) ** 2 * (a.var() / 10 + b.var() / 200)
    assert effects.std() == pytest.approx(np.sqrt(expected), rel=0.05)


def test_mcnemar_counts_the_discordant_images():
    """SenseMode wrong on images 0-3, Uniform on 3 and 4: 3 against 1 discordant, exact
    two-sided binomial p = 0.625; a seed pair with no discordant image has p = 1."""
    wrong_a, wrong_b = np.zeros(10), np.zeros(10)
    wrong_a[[0, 1, 2, 3]], wrong_b[[3, 4]] = 100.0, 100.0
    values = {
        ("sensemode", 0.2, 0): ("s", wrong_a),
        ("uniform", 0.2, 0): ("s", wrong_b),
        ("sensemode", 0.2, 1): ("s", wrong_b),
        ("uniform", 0.2, 1): ("s", wrong_b),
    }
    rows = ImageTests(values).mcnemar()
    assert rows[["seed", "n_images", "only_a_wrong", "only_b_wrong"]].values.tolist() == [
        [0, 10, 3, 1],
        [1, 10, 0, 0],
    ]
    assert list(rows.p_value) == [pytest.approx(0.625), 1.0]
    assert ImageTests(values, metric="mse").mcnemar().empty


def fake_predicted_sweep(root, n_images: int = 400, seeds: int = 8, lr: float = 0.1) -> None:
    """SenseMode and Uniform at b = 0.2 and 0.8, each run's predictions.csv (10 classes) and a
    results.json whose test error is its share of wrong images, as a run writes them."""
    rng = np.random.default_rng(int(lr * 100))
    target = rng.integers(0, 10, n_images)
    for mode, budget, rate in [("sensemode", 0.2, 0.02), ("uniform", 0.2, 0.05)] + [
        ("sensemode", 0.8, 0.03),
        ("uniform", 0.8, 0.02),
    ]:
        for seed in range(seeds):
            wrong = rng.random(n_images) < rate
            predicted = np.where(wrong, (target + 1) % 10, target)
            cell = fake_run(root, mode, budget, seed, 100 * wrong.mean(), lr=lr)
            arrays = {"index": np.arange(n_images), "target": target, "output": predicted}
            arrays["loss"] = np.where(wrong, 2.0, 0.1).astype(np.float32)
            write_predictions(root / cell.dir, cell.key.identity, "error", {"final": arrays})


def test_the_table_reads_predictions_and_reports_the_test_sets_noise(tmp_path):
    """With every run's predictions.csv: the interval over seeds and images beside the seed-only
    one, and McNemar per seed pair in verdict.md and verdict.csv; one run without it: the
    verdict says so in one line and gives the seed-only interval."""
    sweep, out = tmp_path / "sweep", tmp_path / "out"
    fake_predicted_sweep(sweep)
    assert main([str(sweep), "--out", str(out)]) == 0
    verdict = (out / "verdict.md").read_text()
    rows = pd.read_csv(out / "verdict.csv")
    paired = rows[rows.test == "paired"].set_index("regime")
    assert paired.image_ci_low.notna().all()
    for regime in ("small", "large"):
        low, high = paired.loc[regime, ["image_ci_low", "image_ci_high"]]
        assert low < paired.loc[regime, "effect"] < high
    mcnemar = rows[rows.test == "mcnemar"]
    assert len(mcnemar) == 2 * 8 and set(mcnemar.n_images) == {400}
    assert "with the test set's noise, bootstrap over seeds and images:" in verdict
    assert "McNemar's exact test per seed pair" in verdict and NO_IMAGES not in verdict
    (sweep / "budget=0.8,mode=uniform,seed=5" / "predictions.csv").unlink()
    assert main([str(sweep), "--out", str(out)]) == 0
    verdict = (out / "verdict.md").read_text()
    assert NO_IMAGES in verdict and "with the test set's noise" not in verdict
    rows = pd.read_csv(out / "verdict.csv")
    assert rows.loc[rows.test == "paired", "image_ci_low"].isna().all()
    assert not (rows.test == "mcnemar").any()


def test_pool_pairs_by_setup_and_seed(tmp_path, capsys):
    """``--pool``: two setups (here: two learning rates, standing for two data splits) give one
    more verdict over 2 x 8 pairs, labelled setup/seed, each setup's images resampled apart;
    tables of different datasets are refused in one line."""
    sweep, out = tmp_path / "sweep", tmp_path / "out"
    fake_predicted_sweep(sweep / "a", lr=0.1)
    fake_predicted_sweep(sweep / "b", n_images=300, lr=0.05)
    assert main([str(sweep), "--out", str(out), "--pool"]) == 0
    rows = pd.read_csv(out / "verdict.csv")
    pooled = rows[(rows.setup == "pooled") & (rows.test == "paired")].set_index("regime")
    assert list(pooled.n) == [16, 16] and pooled.image_ci_low.notna().all()
    each = rows[(rows.setup != "pooled") & (rows.test == "paired")]
    assert list(each.n) == [8, 8, 8, 8]
    mcnemar = rows[(rows.setup == "pooled") & (rows.test == "mcnemar")]
    assert set(mcnemar.n_images) == {300, 400} and mcnemar.seed.str.contains("/").all()
    verdict = (out / "verdict.md").read_text()
    assert (
        "pooled over setups" in verdict
        and (out / "paired_cifar10_resnet110_164ep_pooled.png").exists()
    )
    fake_run(sweep / "c", "uniform", 0.8, 0, 3.0, dataset="cifar100")
    capsys.readouterr()
    assert main([str(sweep), "--out", str(tmp_path / "refused"), "--pool"]) == 2
    assert not (tmp_path / "refused").exists()  # refused before anything is written
    assert capsys.readouterr().err.startswith(
        "error: --pool: the tables differ in dataset, model, epochs, recipe, metric or report: "
    )
