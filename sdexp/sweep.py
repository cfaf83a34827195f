"""Budget grids: which cells of a sweep such as Table 2 run, and which are already done.

A sweep preset (``sdexp/conf/sweep/``) spans modes x budgets x seeds with Hydra's sweep syntax. Its
cartesian product holds cells that are not experiments, and the grid sweeper
(``hydra_plugins/sdexp_sweeper``) plans it with the functions here before anything is launched:

- a cell the mode cannot run is left out: linear below its smallest budget (L-1)/(2L), the "-"
  cells of the paper's Table 2 (``Mode.smallest_budget``). It is never launched to fail;
- a mode that ignores the budget (``none``: p = 1) runs once per seed, at the budget it actually
  runs at (``Mode.effective_budget``, 1.0): the no-SD baseline;
- a cell whose ``results.json`` says "ok" for the same identity (``sdexp.results``) is done and
  not launched again, so re-running a sweep after a crash runs only the missing cells;
- a cell whose directory holds a run of another identity (the preset was edited, say) is a
  conflict: nothing is launched until the user chooses another sweep directory or
  ``overwrite=true`` (``sdexp.rundir``).

Any other bad value (a budget outside (0, 1], bad mode options) is an error, as in a single run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

from sdexp.config import TOP_LEVEL, check_seed, check_values, checked_mode
from sdexp.console import counted
from sdexp.results import METRIC, RunKey, UnreadableResult, read_result
from sdexp.rundir import CHECKPOINTS, LAST, conflicts
from sdexp.survival import check_budget

#: The cells a sweep planned, written by the grid sweeper and read by ``sdexp.table``.
GRID_FILE = "sweep.json"

#: Set by the grid sweeper for its jobs: how many it launched ("job 3/12" on a job's first line).
SWEEP_JOBS = "SDEXP_SWEEP_JOBS"


@dataclass
class Cell:
    """One cell of a budget grid: the overrides that run it, the run it is, where it writes."""

    overrides: list[str]
    key: RunKey | None = None
    run_dir: Path | None = None
    left_out: str | None = None  # why the grid does not run it
    status: str = "to run"  # "to run", "done" (its results.json says ok) or "conflict"
    note: str = ""  # what the planner found in its directory
    config: DictConfig | None = field(default=None, repr=False)


class CellComposer:
    """The configs of a grid's cells, as Hydra composes them for the jobs, fast, and where
    each job writes.

    Composing a config takes Hydra about a third of a second, and a Table 2 preset has 144
    cells. Only overrides that choose a config group (``mode=sensemode``) or add, delete or
    touch Hydra's own settings change what is composed: those are composed once per distinct
    combination; a cell's plain values (``budget=0.3``, ``seed=1``) are then set on a copy as
    Hydra sets them (``OmegaConf.update`` with the parsed value, merged). The copy leaves out
    Hydra's own node (nothing here reads it but the job's directory, ``run_dir``, which follows
    Hydra's rule for ``hydra.job.override_dirname``: the sorted overrides less the excluded
    keys). ``tests/test_sweeps.py`` checks both against Hydra's composition of every cell.
    """

    def __init__(self, config_loader: Any, sweep_config: DictConfig) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.loader, self.sweep_config = config_loader, sweep_config
        self.parser = OverridesParser.create(config_loader=config_loader)
        self.groups = set(sweep_config.hydra.runtime.choices)  # every config group chosen
        self.composed: dict[tuple[str, ...], tuple[dict, DictConfig]] = {}

    def is_value(self, override: Any) -> bool:
        """A plain value: not a group choice, an addition, a deletion or a Hydra setting."""
        key = override.key_or_group
        return not (
            override.is_add()
            or override.is_delete()
            or override.is_force_add()
            or key in self.groups
            or key.startswith("hydra")
            or override.package is not None
        )

    def compose(self, structure: tuple[str, ...]) -> tuple[dict, DictConfig]:
        """The job config less Hydra's node, as plain values, and the whole config."""
        if structure not in self.composed:
            cfg = self.loader.load_sweep_config(self.sweep_config, list(structure))
            plain = OmegaConf.to_container(cfg, resolve=False)
            plain.pop("hydra")
            self.composed[structure] = plain, cfg
        return self.composed[structure]

    def __call__(self, overrides: list[str]) -> tuple[DictConfig, Path]:
        """The cell's job config (without Hydra's node) and the job's directory."""
        parsed = self.parser.parse_overrides(list(overrides))
        plain, composed = self.compose(tuple(o.input_line for o in parsed if not self.is_value(o)))
        cfg = OmegaConf.create(copy.deepcopy(plain))
        OmegaConf.set_struct(cfg, True)
        for override in parsed:
            if self.is_value(override):
                OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        return cfg, self.run_dir(parsed, composed)

    @staticmethod
    def run_dir(parsed: list, composed: DictConfig) -> Path:
        """hydra.sweep.dir / hydra.sweep.subdir of the job, as Hydra's run_job names it."""
        from hydra.core.hydra_config import HydraConfig

        naming = composed.hydra.job.config.override_dirname
        lines = sorted(o.input_line for o in parsed if o.key_or_group not in naming.exclude_keys)
        dirname = naming.item_sep.join(lines).replace("=", naming.kv_sep)
        subdir = OmegaConf.to_container(composed.hydra.sweep, resolve=False)["subdir"]
        if subdir == "${hydra.job.override_dirname}":  # the presets' naming: no copy needed
            return Path(str(composed.hydra.sweep.dir), dirname).absolute()
        job = copy.deepcopy(composed)
        with open_dict(job):
            job.hydra.job.override_dirname = dirname
        sweep_config = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(job)  # for ${hydra:...} in the directory names
        try:
            return Path(str(job.hydra.sweep.dir), str(job.hydra.sweep.subdir)).absolute()
        finally:
            HydraConfig.instance().cfg = sweep_config


class CellPlanner:
    """Plans cells: checks each distinct config once (``sdexp.config``) and each cell's budget
    and seed, and says which budget a cell runs at or why the grid leaves it out.
    ``complete=False`` (a dry run) leaves out the checks that take seconds."""

    def __init__(self, complete: bool = True) -> None:
        self.complete = complete
        self.checked: dict[str, Any] = {}

    def budget(self, cfg: DictConfig) -> float | str:
        """The budget the cell runs at, or why it cannot run (ConfigError for bad input)."""
        values = OmegaConf.to_container(cfg, resolve=False)
        for key in ("budget", "seed"):
            values.pop(key, None)
        settled = json.dumps(values, sort_keys=True, default=str)
        if settled not in self.checked:  # all but budget and seed: once per distinct config
            self.checked[settled] = checked_mode(cfg, self.complete)
        mode = self.checked[settled]
        check_values({"budget": cfg.budget, "seed": cfg.seed}, TOP_LEVEL, "", "the run config")
        check_budget(cfg.budget)
        check_seed(cfg.seed)
        num_blocks = get_class(cfg.model._target_).blocks_for(cfg.model.depth)
        smallest = mode.smallest_budget(num_blocks)
        if cfg.budget < smallest:
            return f"mode={mode.name} needs budget >= {smallest:.4g} with L={num_blocks} blocks"
        mode.check(cfg.budget, num_blocks)
        return mode.effective_budget(cfg.budget)


def cell_status(run_dir: Path, key: RunKey, config: dict) -> tuple[str, str]:
    """("done" | "to run" | "conflict", a note) for the cell writing into ``run_dir``."""
    try:
        result = read_result(run_dir)
    except UnreadableResult as error:
        return "to run", f"{error}; treated as not finished"
    if result is not None and result.status == "ok" and result.key.identity == key.identity:
        return "done", ""
    found = conflicts(run_dir, key, config)
    if found:
        return "conflict", f"{found[0].file} is {found[0].why}"
    if (run_dir / CHECKPOINTS / LAST).exists():
        return "to run", "resumes from its last checkpoint"
    return "to run", "failed before; runs again" if result is not None else ""


def describe_setups(cells: list[Cell]) -> list[str]:
    """One line per distinct setup of the planned cells: what trains them (the recipe)."""
    lines = {}
    for cell in cells:
        cfg, key = cell.config, cell.key
        recipe, optimizer = cfg.recipe, cfg.optimizer
        lines.setdefault(
            key.setup,
            f"Setup {key.setup[:6]}: {key.dataset}, {key.model} (L = {key.num_blocks}), recipe "
            f"{recipe.name}: {counted(key.epochs, 'epoch')}, batch {cfg.dataset.batch_size}, "
            f"SGD lr "
            f"{optimizer.lr} (x{cfg.scheduler.gamma} at {list(cfg.scheduler.fractions)} of "
            f"training, epochs counted from {cfg.scheduler.count_from}), momentum "
            f"{optimizer.momentum}, Nesterov {optimizer.nesterov}, weight decay "
            f"{optimizer.weight_decay}, dropped blocks {recipe.dropped_blocks}, shortcut "
            f"{recipe.shortcut}, normalize {recipe.normalize}, reports the "
            f"{'best-validation checkpoint' if recipe.report == 'best' else 'final model'}",
        )
    return list(lines.values())


def with_override(overrides: list[str], key: str, value: Any) -> list[str]:
    """``overrides`` with ``key=value`` in place of any override of ``key``."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    return [*kept, f"{key}={value}"]


def write_grid(sweep_dir: Path, cells: list[Cell]) -> None:
    """Record the planned cells in sweep.json, keeping those of earlier, wider runs (a cell
    re-planned with another identity replaces its entry)."""
    path = sweep_dir / GRID_FILE
    try:
        grid = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        grid = {}  # unreadable: rewritten from this plan
    entries = {c["dir"]: c for c in grid.get("cells", [])}
    left_out = grid.get("left_out", [])
    for cell in cells:
        if cell.left_out:
            where = {k: getattr(cell.key, k) for k in ("setup", "mode", "budget")}
            entry = {"overrides": list(cell.overrides), "reason": cell.left_out, **where}
            if entry not in left_out:
                left_out.append(entry)
            continue
        run_dir = str(cell.run_dir.relative_to(sweep_dir.absolute()))
        entries[run_dir] = {
            "dir": run_dir,
            "overrides": list(cell.overrides),
            **dataclasses.asdict(cell.key),
            "mode_options": OmegaConf.to_container(cell.config.mode, resolve=True),
            "metric": METRIC[get_class(cell.config.dataset._target_).task],
            "report": cell.config.recipe.report,
        }
    grid = {"cells": list(entries.values()), "left_out": left_out}
    tmp = path.with_name(f".{GRID_FILE}.tmp")
    tmp.write_text(json.dumps(grid, indent=2))
    tmp.replace(path)
