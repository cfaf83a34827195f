"""Budget grids: which cells of a sweep such as Table 2 run, and which are already done.

The grid sweeper plans a preset's cartesian product here before anything is launched. A cell the
mode cannot run is left out (linear below (L-1)/(2L): the "-" cells of Table 2); cells that are
the same run are merged (the no-SD baseline runs once per seed); a cell whose ``results.json``
says "ok" for its identity is done (``rerun_other_code=true`` runs again those other code made);
a directory holding another run's files is a conflict. A run's directory is named by its identity.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from sdexp.errors import ConfigError
from sdexp.provenance import other_code, this_code
from sdexp.results import (
    METRIC,
    RESULTS_FILE,
    LeftOutCell,
    Plan,
    PlannedCell,
    RunKey,
    UnreadableResult,
    read_result,
)
from sdexp.run.config import Built, Checked, TopLevel, check_options, check_seed
from sdexp.run.console import counted
from sdexp.run.directory import CHECKPOINTS, LAST, LOCK_FILE, examine
from sdexp.run.identity import run_key
from sdexp.run.typecheck import check_values
from sdexp.survival import check_budget


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
    other_code: str | None = None  # the code that made its finished run, if not this one


class CellComposer:
    """The configs of a grid's cells, as Hydra composes them for the jobs, fast: Hydra takes a
    third of a second per config (a Table 2 preset has 144 cells), so only group choices,
    additions, deletions and Hydra settings are composed, once per combination, and a cell's
    plain values are set on a copy as Hydra sets them. Hydra's own node is left out."""

    def __init__(self, config_loader: Any, sweep_config: DictConfig) -> None:
        self.loader, self.sweep_config = config_loader, sweep_config
        self.parser = OverridesParser.create(config_loader=config_loader)
        self.groups = set(sweep_config.hydra.runtime.choices)  # every config group chosen
        self.composed: dict[tuple[str, ...], dict] = {}

    def is_value(self, override: Any) -> bool:
        """A plain value: not a group choice, an addition, a deletion or a Hydra setting."""
        key, added = override.key_or_group, override.is_add() or override.is_force_add()
        hydra = key in self.groups or key.startswith("hydra") or override.package is not None
        return not (added or override.is_delete() or hydra)

    def compose(self, structure: tuple[str, ...]) -> dict:
        """The job config less Hydra's node, as plain values."""
        if structure not in self.composed:
            cfg = self.loader.load_sweep_config(self.sweep_config, list(structure))
            plain = OmegaConf.to_container(cfg, resolve=False)
            plain.pop("hydra")
            self.composed[structure] = plain
        return self.composed[structure]

    def __call__(self, overrides: list[str]) -> DictConfig:
        """The cell's job config (without Hydra's node)."""
        parsed = self.parser.parse_overrides(list(overrides))
        plain = self.compose(tuple(o.input_line for o in parsed if not self.is_value(o)))
        cfg = OmegaConf.create(copy.deepcopy(plain))
        OmegaConf.set_struct(cfg, True)
        for override in parsed:
            if self.is_value(override):
                OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        return cfg


def job_overrides(cell: Cell) -> list[str]:
    """The overrides that launch the cell: its own, and its directory below the sweep directory
    (Hydra applies a job's overrides after the sweep's: the job's ``hydra.sweep.subdir`` wins)."""
    return [*cell.overrides, f"hydra.sweep.subdir={cell.key.cell_dir}"]


class CellPlanner:
    """Checks each distinct config once; the checks of seconds only for the cells that launch,
    never in a dry run (``complete=False``): a re-run that skips every cell imports no Lightning."""

    def __init__(self, complete: bool = True) -> None:
        self.complete = complete
        self.checked: dict[str, Built] = {}

    def built(self, cfg: DictConfig, complete: bool = False) -> Built:
        """What the check of ``cfg`` built, once per distinct config less budget and seed."""
        values = OmegaConf.to_container(cfg, resolve=False)
        for key in ("budget", "seed"):
            values.pop(key, None)
        settled = json.dumps([values, complete], sort_keys=True, default=str)
        if settled not in self.checked:
            self.checked[settled] = check_options(cfg, complete)
        return self.checked[settled]

    def check(self, cfg: DictConfig) -> tuple[Checked, str | None]:
        """What the check built, at the budget the cell runs at, and why the grid leaves it out."""
        check_values({"budget": cfg.budget, "seed": cfg.seed}, TopLevel, "", "the run config")
        check_budget(cfg.budget)
        check_seed(cfg.seed)
        built = self.built(cfg)
        mode, blocks = built.mode, built.num_blocks
        smallest = mode.smallest_budget(blocks)
        why = f"mode={mode.name} needs budget >= {smallest:.4g} with L={blocks} blocks"
        budget = mode.effective_budget(cfg.budget)  # p = 1 for mode none, whatever is asked
        checked = Checked(mode, built.datamodule, built.model, blocks, budget)
        return checked, why if cfg.budget < smallest else None


def plan_grid(
    product: list[list[str]], compose: CellComposer, planner: CellPlanner, sweep_dir: Path
) -> tuple[list[Cell], dict[str, int]]:
    """The grid's cells, one per run, and how many were merged into an earlier one, by kind."""
    cells, planned, merged = [], set(), {"baseline": 0, "repeated": 0}
    for overrides in product:
        cfg = compose(overrides)
        try:
            checked, left_out = planner.check(cfg)
        except ConfigError as error:
            raise ConfigError(" ".join(overrides), str(error)) from error
        rewritten = checked.budget != cfg.budget
        if rewritten:  # mode=none runs at budget 1.0, whatever is asked
            overrides = with_override(overrides, "budget", checked.budget)
            cfg = compose(overrides)
        key, config = run_key(cfg, checked)
        if key.identity in planned:
            merged["baseline" if rewritten else "repeated"] += 1  # repeated: 0.7 and 0.70
            continue
        planned.add(key.identity)
        run_dir = sweep_dir / key.cell_dir if left_out is None else None
        cell = Cell(overrides, key, run_dir, left_out, config=cfg)
        if left_out is None:  # its status and note from what its directory holds
            cell.status, cell.note = cell_status(run_dir, key, config)
        if cell.status == "done" and (made := other_code(read_result(cell.run_dir).code)):
            cell.other_code, cell.note = made, f"made by other code: {made}"
            if cfg.rerun_other_code:
                cell.status = "to run"
                cell.note += "; runs again from scratch (rerun_other_code=true)"
        cells.append(cell)
    for cell in [c for c in cells if c.left_out is None and c.status != "done"]:
        try:  # the checks of seconds (they import Lightning), for the cells that launch
            planner.built(cell.config, complete=planner.complete)
        except ConfigError as error:
            raise ConfigError(" ".join(cell.overrides), str(error)) from error
    return cells, merged


def cell_status(run_dir: Path, key: RunKey, config: dict) -> tuple[str, str]:
    """("done" | "to run" | "conflict", a note) for the cell writing into ``run_dir``."""
    try:
        result = read_result(run_dir)
    except UnreadableResult as error:
        return "to run", f"{error}; treated as not finished"
    if result is not None and result.status == "ok" and result.key.identity == key.identity:
        return "done", ""
    found, _ = examine(run_dir, key, config)
    if clashes := [c for c in found if not c.unreadable]:
        return "conflict", f"{clashes[0].file} is {clashes[0].why}"
    if found:  # an unreadable checkpoint: the run moves it aside (the plan moves nothing)
        return "to run", f"{found[0].file} is {found[0].why}: moved aside, the run starts over"
    if (run_dir / CHECKPOINTS / LAST).exists():
        return "to run", "resumes from its last checkpoint"
    return "to run", "failed before; runs again" if result is not None else ""


def describe_other_code(cells: list[Cell]) -> list[str]:
    """A line on the finished runs other code made, if any: how many, by which, what happens."""
    made = [c for c in cells if c.other_code is not None]
    if not made:
        return []
    codes = ", ".join(f"{n} by {label}" for label, n in Counter(c.other_code for c in made).items())
    runs = counted(len(made), "finished run")
    what = (
        "run again from scratch (rerun_other_code=true)"
        if all(c.config.rerun_other_code for c in made)
        else "count as done (a run's identity is its config, not its code): rerun_other_code=true "
        "runs them again from scratch"
    )
    return [f"{runs} came from other code than this, {this_code()} ({codes}): {what}"]


def older_layout(sweep_dir: Path) -> str | None:
    """Why ``sweep_dir`` cannot take this sweep, if an older sdexp wrote runs right under it."""
    for child in sorted(sweep_dir.iterdir()) if sweep_dir.is_dir() else []:
        if (child / RESULTS_FILE).exists() or (child / CHECKPOINTS / LAST).exists():
            return (
                f"hydra.sweep.dir: {sweep_dir} was written by an older sdexp (a run right under "
                f"it: {child.name}): start a new sweep directory"
            )
    return None


def traces(run_dir: Path) -> tuple | None:
    """The modification times of what a job writes into its directory as it runs: compared
    before and after a launch, they tell a job that started from one that never did."""
    if not run_dir.is_dir():
        return None
    names = (".hydra/config.yaml", "train.log", LOCK_FILE, f"{CHECKPOINTS}/{LAST}", RESULTS_FILE)
    paths = [run_dir / name for name in names]
    return tuple(p.stat().st_mtime_ns if p.exists() else None for p in paths)


def describe_setups(cells: list[Cell]) -> list[str]:
    """One line per distinct setup of the planned cells: the recipe that trains them."""
    lines = {}
    for cell in cells:
        cfg, key = cell.config, cell.key
        recipe, optimizer = cfg.recipe, cfg.optimizer
        lines.setdefault(
            key.setup,
            f"Setup {key.setup[:6]}: {key.dataset}, {key.model} (L = {key.num_blocks}), recipe "
            f"{recipe.name}: {counted(key.epochs, 'epoch')}, batch {cfg.dataset.batch_size}, "
            f"SGD lr {optimizer.lr} (x{cfg.scheduler.gamma} at {list(cfg.scheduler.fractions)} "
            f"of training, epochs counted from {cfg.scheduler.count_from}), momentum "
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


def plan_of(sweep_dir: Path, cells: list[Cell]) -> Plan:
    """The plan for sweep.json: each cell to run with its directory, each left out with why."""
    plan = Plan()
    for cell in cells:
        key, overrides, cfg = cell.key, list(cell.overrides), cell.config
        if cell.left_out:
            where = {"setup": key.setup, "mode": key.mode, "budget": key.budget}
            plan.left_out.append(LeftOutCell(overrides, cell.left_out, **where))
            continue
        metric = METRIC[get_class(cfg.dataset._target_).task]
        run_dir = str(cell.run_dir.relative_to(sweep_dir.absolute()))
        mode = OmegaConf.to_container(cfg.mode, resolve=True)
        plan.cells.append(PlannedCell(key, run_dir, overrides, mode, metric, cfg.recipe.report))
    return plan
