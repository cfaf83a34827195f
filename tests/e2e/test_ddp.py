"""DDP (trainer=ddp) on the toy task with 2 CPU processes (gloo), as a user runs it."""

from __future__ import annotations

import pytest
import torch

from sdexp.predictions import read_predictions
from sdexp.results import read_result
from tests.helpers import FAST_TOY, run_train


@pytest.mark.slow
def test_ranks_agree_and_give_the_single_device_numbers(tmp_path):
    """Both ranks draw the same masks and end with the same weights. Against 1 device x batch 32,
    2 ranks x batch 16 on the toy task (no BatchNorm: the same gradient up to rounding) give the
    same numbers. With 63 validation and test samples the ranks' shards are uneven: every sample
    must count once (wrapping around used to repeat one), and the losses are the means over all
    samples, not rank 0's."""
    record = tmp_path / "record"
    overrides = [*FAST_TOY, "dataset.n_val=63", "dataset.n_test=63", "trainer.accelerator=cpu"]
    overrides += ["mode=sensemode", "budget=0.5"]  # p from sensitivities: each rank its batches
    ddp = run_train(
        *overrides,
        "trainer=ddp",
        "trainer.devices=2",
        "dataset.batch_size=16",  # per process: the toy recipe's 32 over 2 ranks
        "logger=csv",
        f"hydra.run.dir={tmp_path / 'ddp'}",
        "+callbacks.record._target_=tests.callbacks.RecordMasks",
        f"+callbacks.record.out={record}",
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    progress = [line for line in ddp.stdout.splitlines() if line.startswith("epoch ")]
    assert len(progress) == 1 and progress[0].startswith("epoch 2/2: ")  # rank 0's, not both
    # two processes ran: each rank recorded its masks and weights
    ranks = [torch.load(record / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    masks = [r["masks"] for r in ranks]
    steps = 2 * (256 // 2 // 16)  # 2 epochs of the rank's 128 samples in batches of 16
    assert len(masks[0]) == len(masks[1]) == steps
    assert masks[0] == masks[1]  # the same blocks dropped on both ranks at every step
    drawn = [keep for step in masks[0] for keep in step]
    assert 0 < sum(drawn) < len(drawn)  # blocks were dropped, and kept
    assert ranks[0]["survival"] == ranks[1]["survival"]
    for name, value in ranks[0]["parameters"].items():
        assert torch.equal(value, ranks[1]["parameters"][name]), name
    a = read_result(tmp_path / "ddp")
    assert a.status == "ok" and a.survival == ranks[0]["survival"]

    one = ["logger=none", "dataset.batch_size=32", f"hydra.run.dir={tmp_path / 'one'}"]
    single = run_train(*overrides, *one)
    assert single.returncode == 0, single.stderr[-3000:]
    b = read_result(tmp_path / "one")
    assert a.survival == pytest.approx(b.survival, rel=1e-5)
    for name in ("test_final", "test_best", "best_val", "test_loss"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-4), name
    # predictions.csv: both ranks' shares gathered, every test sample once, as on one device
    ddp_predictions = read_predictions(tmp_path / "ddp", a.key.identity, "mse")
    one_predictions = read_predictions(tmp_path / "one", b.key.identity, "mse")
    for model, value in (("final", a.test_final), ("best", a.test_best)):
        rows = ddp_predictions[ddp_predictions.model == model]
        assert list(rows["index"]) == list(range(63)), model
        assert rows.squared_error.mean() == pytest.approx(value, rel=1e-5), model
        alone = one_predictions[one_predictions.model == model]
        assert rows.prediction.to_numpy() == pytest.approx(alone.prediction.to_numpy(), rel=1e-4)
