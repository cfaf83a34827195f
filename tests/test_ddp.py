"""DDP (trainer=ddp) on the toy task with 2 CPU processes (gloo), as a user runs it."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import FAST_TOY, run_train


@pytest.mark.slow
def test_ranks_draw_the_same_masks_and_end_with_the_same_weights(tmp_path):
    run_dir, record = tmp_path / "run", tmp_path / "record"
    overrides = [o for o in FAST_TOY if not o.startswith("trainer=")]
    done = run_train(
        *overrides,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "dataset.batch_size=16",  # per process: the toy recipe's 32 over 2 ranks
        "mode=sensemode",  # p from sensitivities: each rank measures its own batches
        "budget=0.5",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
        "+callbacks.record._target_=tests.helpers.RecordMasks",
        f"+callbacks.record.out={record}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed_backend=gloo" in done.stdout + done.stderr
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
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["survival"] == ranks[0]["survival"]
