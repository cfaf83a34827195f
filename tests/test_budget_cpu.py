"""The CPU-sized Budget Hypothesis (issue 13): scikit-learn's digits through the CIFAR ResNet,
their recipe, the ``budget_cpu`` preset's grid and a run of the digits from the command line."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from sdexp.data import DigitsDataModule
from sdexp.errors import ConfigError
from sdexp.models import CifarResNet
from sdexp.results import read_result, run_key
from tests.conftest import run_train
from tests.test_sweeps import grid_lines


def digits(**options) -> DigitsDataModule:
    dm = DigitsDataModule(**options)
    dm.setup()
    return dm


def as_rows(dm: DigitsDataModule, splits=("train", "val", "test")) -> list[tuple]:
    """Each image of ``splits`` as (label, its 64 pixel values 0..16), sorted."""
    rows = []
    for split in splits:
        data = dm.splits[split]
        pixels = (data.inputs.flatten(1) * 16).round().long()
        rows += [(y, *x) for y, x in zip(data.targets.tolist(), pixels.tolist(), strict=True)]
    return sorted(rows)


# --- the data ------------------------------------------------------------------------------------


def test_digits_are_sklearns_images_split_once():
    dm = digits(n_train=None, normalize=False)
    sizes = {split: len(data) for split, data in dm.splits.items()}
    assert sizes == {"train": 997, "val": 300, "test": 500}
    assert dm.num_outputs == 10 and dm.input_shape == (1, 8, 8) and dm.has_validation
    for data in dm.splits.values():
        assert data.inputs.shape[1:] == (1, 8, 8) and data.inputs.dtype == torch.float32
        assert data.targets.dtype == torch.int64 and set(data.targets.tolist()) == set(range(10))
    # Every image of the set exactly once over the splits, pixels scaled by 1/16.
    sk = load_digits()
    reference = sorted(
        (int(y), *x) for y, x in zip(sk.target, sk.data.astype(int).tolist(), strict=True)
    )
    assert as_rows(dm) == reference


def test_digits_split_comes_from_data_seed_only():
    dm = digits(n_train=None, normalize=False)
    other_run = digits(n_train=None, normalize=False, seed=7)
    for split in ("train", "val", "test"):
        assert torch.equal(other_run.splits[split].inputs, dm.splits[split].inputs)
    other_data = digits(n_train=None, normalize=False, data_seed=1)
    assert as_rows(other_data, ["test"]) != as_rows(dm, ["test"])
    # A smaller training split: the first n_train of the same training images; the same
    # validation and test images.
    small = digits(n_train=100, normalize=False)
    assert len(small.splits["train"]) == 100
    assert torch.equal(small.splits["train"].inputs, dm.splits["train"].inputs[:100])
    assert as_rows(small, ["val", "test"]) == as_rows(dm, ["val", "test"])


def test_digits_standardised_with_training_statistics():
    raw, dm = digits(n_train=500, normalize=False), digits(n_train=500)
    train = raw.splits["train"].inputs
    mean, std = train.mean(), train.std()
    torch.testing.assert_close(dm.splits["train"].inputs.mean(), torch.tensor(0.0))
    torch.testing.assert_close(dm.splits["train"].inputs.std(), torch.tensor(1.0))
    for split in ("val", "test"):  # the training split's statistics, not their own
        torch.testing.assert_close(dm.splits[split].inputs, (raw.splits[split].inputs - mean) / std)
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (64, 1, 8, 8) and y.shape == (64,)  # batch 64, no augmentation


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_train": 0}, "dataset.n_train"),
        ({"n_train": 998}, "dataset.n_train: between 1 and the 997 images"),
        ({"n_val": 1000, "n_test": 797}, "dataset.n_train: between 1 and the 0 images"),
        ({"n_test": 0}, "dataset: n_test >= 1"),
        ({"n_val": -1}, "dataset: n_test >= 1 and n_val >= 0"),
    ],
)
def test_digits_bad_sizes(options, message):
    with pytest.raises(ConfigError, match=message):
        DigitsDataModule(**options)


def test_cifar_resnet_takes_one_channel_8x8():
    model = CifarResNet(20, 10, input_shape=(1, 8, 8))
    assert model.num_blocks == 9 and model.name == "resnet20"
    model.gate.set_survival([0.5] * 9)
    x = torch.randn(4, 1, 8, 8)
    assert model(x).shape == (4, 10)  # 8x8 -> 4x4 -> 2x2 -> pooled
    model.eval()
    assert model(x).shape == (4, 10)


# --- the configs ---------------------------------------------------------------------------------


def test_digits_recipe(make_config):
    cfg = make_config("dataset=digits", "model=resnet56", "model.depth=20")
    key, _ = run_key(cfg)
    assert (key.dataset, key.model, key.recipe, key.num_blocks) == (
        "digits",
        "resnet20",
        "short",
        9,
    )
    assert cfg.dataset.batch_size == 64 and cfg.dataset.normalize is True
    assert cfg.trainer.max_epochs == 50 and cfg.recipe.report == "final"
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (0.1, 1e-4)


# --- end to end ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_budget_cpu_dry_listing(tmp_path):
    """Per seed: SenseMode and Uniform at 0.1..0.9, Linear at 0.5..0.9 (L = 9: from 4/9),
    the baseline once; 24 runs x 4 seeds."""
    done = run_train(
        "+sweep=budget_cpu", "hydra.sweeper.dry_run=true", f"hydra.sweep.dir={tmp_path}"
    )
    assert done.returncode == 0, done.stderr
    runs, left_out = grid_lines(done.stdout)
    assert len(runs) == 24 * 4 and len(left_out) == 4 * 4
    budgets = [f"{b / 10:g}" for b in range(1, 10)]
    for mode, expected in (("sensemode", budgets), ("uniform", budgets), ("linear", budgets[4:])):
        for seed in range(4):
            found = [b for b in budgets if f"mode={mode} budget={b} seed={seed} " in "".join(runs)]
            assert found == expected, (mode, seed)
    assert all("mode=linear budget=0." in line for line in left_out)
    baseline = [line for line in runs if "mode=none" in line]
    assert len(baseline) == 4 and all("budget=1.0" in line for line in baseline)
    assert "144 cells, 16 left out (infeasible for their mode), 32 merged" in done.stdout
    assert "= 96 runs: 0 already done (skipped), 96 to launch" in done.stdout
    (setup,) = [line for line in done.stdout.splitlines() if line.startswith("Setup ")]
    assert "digits, resnet20 (L = 9), recipe short: 50 epochs, batch 64" in setup
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_digits_run(tmp_path):
    run_dir = tmp_path / "run"
    done = run_train(
        "dataset=digits",
        "model=resnet56",
        "model.depth=8",
        "mode=sensemode",
        "budget=0.4",
        "dataset.n_train=128",
        "trainer=cpu",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    )
    assert done.returncode == 0, done.stderr
    result = read_result(run_dir)
    key = result.key
    assert result.status == "ok" and result.metric == "error"
    assert (key.dataset, key.model, key.num_blocks, key.recipe) == ("digits", "resnet8", 3, "short")
    assert abs(sum(result.survival) / 3 - 0.4) < 1e-6 and len(result.sensitivity) == 3
    assert result.report == "final" and result.test == result.test_final
    assert 0 <= result.test_best <= 100 and result.best_val is not None
    assert len(result.epoch_times_s) == 2
