"""Budget grids: which cells of a sweep such as Table 2 run, and which are already done.

A sweep preset (``conf/sweep/``) spans modes x budgets x seeds with Hydra's sweep syntax. Its
cartesian product holds cells that are not experiments, and the grid sweeper
(``hydra_plugins/sdexp_sweeper``) plans it with the functions here before anything is launched:

- a cell the mode cannot run is left out: linear below its smallest budget (L-1)/(2L), the "-"
  cells of the paper's Table 2 (``Mode.smallest_budget``). It is never launched to fail;
- a mode that ignores the budget (``none``: p = 1) runs once per seed, at the budget it actually
  runs at (``Mode.effective_budget``, 1.0): the no-SD baseline;
- a cell whose ``results.json`` says "ok" for the same run is done and not launched again, so
  re-running a sweep after a crash runs only the missing cells.

Any other bad value (a budget outside (0, 1], bad mode options) is an error, as in a single run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sdexp.config import mode_and_blocks
from sdexp.results import read_results
from sdexp.survival import check_budget

#: The cells a sweep planned, written by the grid sweeper and read by ``sdexp.table``.
GRID_FILE = "sweep.json"

#: What names a run in results.json: a finished run with the same values is the same run.
IDENTITY_KEYS = ("dataset", "model", "mode", "budget", "seed", "stable", "num_blocks", "epochs")


def run_identity(cfg: DictConfig, datamodule: Any, model: Any, mode: Any) -> dict:
    """The fields of results.json that name a run (``IDENTITY_KEYS``), before it trains."""
    return {
        "dataset": datamodule.name,
        "model": model.name,
        "mode": mode.name,
        "budget": mode.effective_budget(cfg.budget),
        "seed": cfg.seed,
        "stable": model.stable,
        "num_blocks": model.num_blocks,
        "epochs": cfg.trainer.max_epochs,
    }


def completed(run_dir: str | Path, identity: dict) -> dict | None:
    """The results.json in ``run_dir`` if it says "ok" for the run named by ``identity``."""
    results = read_results(run_dir)
    if results is None or results.get("status") != "ok":
        return None
    return results if all(results.get(k) == identity[k] for k in IDENTITY_KEYS) else None


@dataclass
class Cell:
    """One cell of a budget grid: the overrides that run it, the run it is, where it writes."""

    overrides: list[str]
    identity: dict = field(default_factory=dict)
    run_dir: Path | None = None
    left_out: str | None = None  # why the grid does not run it
    done: bool = False  # its results.json says "ok" for this run
    config: DictConfig | None = field(default=None, repr=False)


class CellPlanner:
    """Plans cells from their composed configs (the model of a config is built once, on CPU)."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}

    def _model(self, cfg: DictConfig, datamodule: Any) -> Any:
        key = OmegaConf.to_yaml(cfg.model) + repr((datamodule.input_shape, datamodule.num_outputs))
        if key not in self._models:
            self._models[key] = instantiate(
                cfg.model, input_shape=datamodule.input_shape, num_outputs=datamodule.num_outputs
            )
        return self._models[key]

    def effective_budget(self, cfg: DictConfig) -> float | str:
        """The budget the cell runs at, or why it cannot run (raises ConfigError for bad input)."""
        mode, num_blocks = mode_and_blocks(cfg)
        budget = check_budget(cfg.budget)
        smallest = mode.smallest_budget(num_blocks)
        if budget < smallest:
            return f"mode={mode.name} needs budget >= {smallest:.4g} with L={num_blocks} blocks"
        mode.check(budget, num_blocks)
        return mode.effective_budget(budget)

    def identity(self, cfg: DictConfig) -> dict:
        datamodule = instantiate(cfg.dataset)  # no data is read here
        return run_identity(cfg, datamodule, self._model(cfg, datamodule), instantiate(cfg.mode))


def with_override(overrides: list[str], key: str, value: Any) -> list[str]:
    """``overrides`` with ``key=value`` in place of any override of ``key``."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    return [*kept, f"{key}={value}"]


def write_grid(sweep_dir: Path, cells: list[Cell]) -> None:
    """Record the planned cells in sweep.json, keeping those of earlier, wider runs."""
    path = sweep_dir / GRID_FILE
    grid = json.loads(path.read_text()) if path.exists() else {"cells": [], "left_out": []}
    known = {c["dir"] for c in grid["cells"]}
    for cell in cells:
        if cell.left_out:
            entry = {"overrides": list(cell.overrides), "reason": cell.left_out}
            if entry not in grid["left_out"]:
                grid["left_out"].append(entry)
            continue
        run_dir = str(cell.run_dir.relative_to(sweep_dir.absolute()))
        if run_dir not in known:
            grid["cells"].append(
                {"dir": run_dir, "overrides": list(cell.overrides), **cell.identity}
            )
    path.write_text(json.dumps(grid, indent=2))
