"""A run's identity (``sdexp.results``, derived by ``sdexp.run.identity``): what names it, its
directory in a sweep, and the committed runs it still names."""

from __future__ import annotations

import pandas as pd
import pytest

from sdexp.run.identity import run_key
from tests.helpers import FAST_TOY, ROOT, compose_config


@pytest.mark.parametrize(("mode", "budget", "seed"), [("sensemode", 0.2, 0), ("uniform", 0.8, 19)])
def test_a_committed_runs_identity_is_unchanged(mode, budget, seed):
    """The hypothesis_cpu sweep's runs, committed in docs/ (runs.csv), have the identity and
    setup this code gives their cell: moving modules (a ``_target_`` in the identity) or
    changing what the identity hashes would make every finished run of a grid run again."""
    runs = pd.read_csv(ROOT / "docs/hypothesis_cpu/runs.csv", dtype=str)
    row = runs[
        (runs["mode"] == mode) & (runs["budget"] == str(budget)) & (runs["seed"] == str(seed))
    ]
    cell = ["+sweep=hypothesis_cpu", f"mode={mode}", f"budget={budget}", f"seed={seed}"]
    key = run_key(compose_config(cell))[0]
    assert (key.identity, key.setup) == (row["identity"].item(), row["setup"].item())


def test_run_identity_names_the_run(make_config):
    cfg = make_config(*FAST_TOY, "mode=none", "budget=0.3")
    key, config = run_key(cfg)
    readable = {k: getattr(key, k) for k in ("dataset", "model", "mode", "budget", "seed")}
    assert readable == {
        "dataset": "toy",
        "model": "vanilla",
        "mode": "none",
        "budget": 1.0,
        "seed": 0,
    }
    assert (key.recipe, key.epochs, key.stable, key.num_blocks) == ("toy", 2, True, 8)
    assert config["budget"] == 1.0 and config["model"]["width"] == 32
    # What changes the computation changes the identity; where it writes and logs does not.
    same = ["logger=none", "trainer.enable_progress_bar=true", "dataset.on_device=false"]
    assert run_key(make_config(*FAST_TOY, "mode=none", "budget=0.7", *same))[0] == key
    for other in ("model.width=64", "optimizer.lr=0.01", "dataset.beta_scale=0.5", "seed=1"):
        changed = run_key(make_config(*FAST_TOY, "mode=none", other))[0]
        assert changed.identity != key.identity, other
        assert (changed.setup == key.setup) == (other == "seed=1"), other


def test_a_cells_directory_is_named_by_its_identity():
    """However the command line spells a run, its directory is the same; runs of another setup,
    or of the same cell with other mode options, get their own."""
    cell = ["+scale=tiny", "mode=sensemode", "budget=0.7", "seed=1"]
    key = run_key(compose_config(cell))[0]
    assert key.cell_dir == f"{key.setup[:6]}/sensemode-b0.7-s1-{key.identity[:6]}"
    lr = compose_config(cell).optimizer.lr  # the toy recipe's, spelled out below
    for spelled in (
        ["speed.cuda_graphs=true", "speed.fused_optimizer=true", "speed.channels_last=true"],
        [f"optimizer.lr={lr}", "budget=0.70", "dataset.on_device=false"],
        ["logger=csv", "run.name=x", "trainer.enable_progress_bar=true", "overwrite=true"],
        ["rerun_other_code=true"],  # the code is not part of the identity (sdexp.provenance)
        ["trainer.enable_model_summary=true", "trainer.log_every_n_steps=1"],
    ):
        assert run_key(compose_config([*cell, *spelled]))[0].cell_dir == key.cell_dir, spelled
    # bf16 changes the numbers: trainer.precision is part of the identity (README, Performance)
    for other in (
        "optimizer.lr=0.01",
        "model.width=64",
        "trainer.max_epochs=3",
        "trainer.precision=bf16-mixed",
    ):
        changed = run_key(compose_config([*cell, other]))[0]
        assert changed.cell_dir.split("/")[0] != key.cell_dir.split("/")[0], other  # setups
    variant = run_key(compose_config([*cell, "mode.p_min=0.1"]))[0]
    assert variant.setup == key.setup and variant.cell_dir != key.cell_dir
