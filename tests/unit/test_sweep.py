"""Planning a sweep (``sdexp.sweep.plan``): cells left out and merged, the fast composer against
Hydra's composition and the directories it names, a cell's status from what its directory holds
(sweeps as a user runs them: tests/e2e/test_sweeps.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig

from sdexp.errors import ConfigError
from sdexp.run.identity import run_key
from sdexp.sweep.plan import CellPlanner, cell_status, with_override
from tests.helpers import FAST_TOY, compose_config, hydra_configs


@pytest.mark.parametrize(("model", "blocks"), [("resnet110", 54), ("resnet56", 27)])
def test_planner_leaves_out_linear_below_its_smallest_budget(model, blocks):
    planner = CellPlanner()
    for budget in (0.1, 0.2, 0.3, 0.4, 0.5, 0.9):
        cfg = compose_config([f"model={model}", "mode=linear", f"budget={budget}"])
        planned, left_out = planner.check(cfg)
        if budget < (blocks - 1) / (2 * blocks):  # 0.4907 and 0.4815: 0.1..0.4 are left out
            assert "mode=linear needs budget >= 0.4" in left_out
        else:
            assert planned.budget == budget and left_out is None
    none, _ = planner.check(compose_config(["mode=none", "budget=0.3"]))
    assert none.budget == 1.0  # the baseline runs once, at budget 1
    with pytest.raises(ConfigError, match="budget"):
        planner.check(compose_config(["mode=uniform", "budget=1.5"]))
    with pytest.raises(ConfigError, match="seed"):  # checked per cell, not once per config
        planner.check(compose_config(["mode=uniform", "budget=0.5", "seed=-1"]))
    assert with_override(["mode=none", "budget=0.3", "seed=1"], "budget", 1.0) == [
        "mode=none",
        "seed=1",
        "budget=1.0",
    ]


@pytest.mark.parametrize("preset", ["table2_cifar10", "smoke", "table2_cifar100_resnet56"])
def test_the_fast_composer_is_hydras_composition(preset):
    """A cell's config set from a composed one (``CellComposer``) is what Hydra composes for its
    job, for cells of every mode, the merged baseline and values given on the command line; and
    the job's overrides (``job_overrides``) put it, as Hydra's launchers compose them
    (``load_sweep_config``), into the directory the planner names: its identity's."""
    from hydra.core.global_hydra import GlobalHydra

    from sdexp.sweep.plan import Cell, CellComposer, job_overrides

    sweep_dir = Path("outputs/x").absolute()
    with hydra_configs():
        sweep = compose(
            "train", [f"+sweep={preset}", "hydra.sweep.dir=outputs/x"], return_hydra_config=True
        )
        loader = GlobalHydra.instance().config_loader()
        composer = CellComposer(loader, sweep)
        cells = [
            [f"mode={m}", f"budget={b}", f"seed={s}", f"+sweep={preset}"]
            for m, b, s in [("sensemode", 0.3, 0), ("uniform", 0.7, 1), ("linear", 0.9, 2)]
        ]
        cells += [["mode=none", "seed=3", "budget=1.0", f"+sweep={preset}", "optimizer.lr=0.05"]]
        for overrides in cells:
            fast = composer(overrides)
            key = run_key(fast)[0]
            assert key == run_key(loader.load_sweep_config(sweep, overrides))[0], overrides
            job = loader.load_sweep_config(sweep, job_overrides(Cell(overrides, key)))
            HydraConfig.instance().set_config(job)
            try:
                where = Path(str(job.hydra.sweep.dir), str(job.hydra.sweep.subdir))
            finally:
                HydraConfig.instance().cfg = None
            assert where.absolute() == sweep_dir / key.cell_dir, overrides
            assert list(job.hydra.overrides.task) == overrides  # overrides.yaml: the cell's


def test_a_sweep_plans_a_cell_with_an_unreadable_checkpoint_to_run(tmp_path):
    """The plan says so and moves nothing (the run moves the file aside when it runs)."""
    cfg = compose_config([*FAST_TOY, "logger=none", f"output_dir={tmp_path}"])
    key, config = run_key(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    torch.save({"epoch": 3, "weights": torch.zeros(1000)}, last)
    last.write_bytes(last.read_bytes()[:100])
    status, note = cell_status(tmp_path, key, config)
    assert status == "to run"
    assert note.startswith("checkpoints/last.ckpt is unreadable (") and "moved aside" in note
    assert last.stat().st_size == 100 and not last.with_name("last.ckpt.unreadable").exists()
