"""``hydra/sweeper=budget_grid``: a budget grid, planned before anything is launched.

It expands ``hydra.sweeper.params`` and the command line as Hydra's basic sweeper does (the
command line narrows or replaces a preset's values; their cartesian product, in the same order),
then plans the cells with ``sdexp.sweep``: it leaves out the cells a mode cannot run, runs the
no-SD baseline once per seed, skips the cells already done, refuses directories that hold
another run's files, says how many of each, and writes the planned cells to
``<sweep dir>/sweep.json`` (what ``sdexp-table`` counts missing runs against). Then
Hydra's configured launcher runs the rest. ``hydra.sweeper.dry_run=true`` lists the grid and
launches nothing.

Hydra's basic sweeper only builds cartesian products and has no hook to drop or merge cells,
hence a sweeper of our own, on Hydra's public ``Sweeper`` interface. It must live in the
``hydra_plugins`` package for Hydra to find it, and imports sdexp only when it plans a grid:
Hydra imports every plugin module at every start.
"""

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class GridError(CompactHydraException):
    """A grid that cannot run, or jobs that failed: Hydra prints the message alone (exit 1)."""


@dataclass
class BudgetGridSweeperConf:
    _target_: str = "hydra_plugins.sdexp_sweeper.budget_grid_sweeper.BudgetGridSweeper"
    max_batch_size: int | None = None  # jobs handed to the launcher at once (None: all)
    params: dict[str, str] | None = None
    dry_run: bool = False  # list the planned grid and launch nothing


ConfigStore.instance().store(
    group="hydra/sweeper", name="budget_grid", node=BudgetGridSweeperConf, provider="sdexp"
)


def cartesian(parsed: list) -> list[list[str]]:
    """The cells of the overrides' cartesian product, as Hydra's basic sweeper orders them: a
    later override of a key replaces an earlier one (the command line narrows a preset)."""
    choices: dict[str, list[str]] = {}
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise GridError(f"{key}: the budget grid takes lists of values, not ranges")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(cell) for cell in itertools.product(*choices.values())]


class BudgetGridSweeper(Sweeper):
    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.max_batch_size, self.params, self.dry_run = max_batch_size, params or {}, dry_run

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def plan(self, arguments: list[str]) -> list:
        """The cells of the grid, in the basic sweeper's order, each planned by sdexp.sweep."""
        from sdexp.errors import ConfigError
        from sdexp.results import run_key
        from sdexp.sweep import Cell, CellComposer, CellPlanner, cell_status, with_override

        loader = self.hydra_context.config_loader
        params = [f"{k}={v}" for k, v in self.params.items()]
        product = cartesian(OverridesParser.create(loader).parse_overrides([*params, *arguments]))
        sweep_dir = shown(Path(str(self.config.hydra.sweep.dir)).absolute())
        print(f"Planning {len(product)} cells into {sweep_dir} ...", flush=True)
        compose, planner = CellComposer(loader, self.config), CellPlanner(complete=not self.dry_run)
        cells, planned, self.merged = [], set(), 0
        for overrides in product:
            cfg, run_dir = compose(overrides)
            try:
                budget = planner.budget(cfg)
            except ConfigError as error:
                raise GridError(f"{' '.join(overrides)}: {error}") from error
            if isinstance(budget, str):  # its key still says which table's "-" it is
                cells.append(Cell(overrides, run_key(cfg)[0], left_out=budget, config=cfg))
                continue
            if budget != cfg.budget:  # mode=none runs at budget 1.0, whatever is asked: once
                overrides = with_override(overrides, "budget", budget)
                if tuple(overrides) in planned:
                    self.merged += 1
                    continue
                cfg, run_dir = compose(overrides)
            planned.add(tuple(overrides))
            key, config = run_key(cfg)
            status, note = cell_status(run_dir, key, config)
            cells.append(Cell(overrides, key, run_dir, status=status, note=note, config=cfg))
        return cells

    def sweep(self, arguments: list[str]) -> Any:
        from sdexp.config import LIGHTNING_GROUPS
        from sdexp.errors import ConfigError
        from sdexp.rundir import WAYS_OUT
        from sdexp.sweep import SWEEP_JOBS, describe_setups, write_grid

        cells = self.plan(arguments)
        runs = [c for c in cells if c.left_out is None]
        done = [c for c in runs if c.status == "done"]
        clashes = [c for c in runs if c.status == "conflict"]
        todo = [c for c in runs if c.status != "done"]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        summary = (
            f"Grid {shown(sweep_dir.absolute())}: {len(cells) + self.merged} cells, "
            f"{len(cells) - len(runs)} left out (infeasible for their mode), {self.merged} merged "
            f"(the no-SD baseline runs once per seed) = {len(runs)} runs: "
            f"{len(done)} already done (skipped), {len(todo)} to launch"
            + (f" ({len(clashes)} of them where another run's files are)" if clashes else "")
        )
        if self.dry_run:
            print("\n".join([*describe_setups(cells), *describe(cells)]))
            print(
                "Checked every cell's options but the optimizer's values and the "
                f"{', '.join(LIGHTNING_GROUPS)} options: the sweep checks those when it launches "
                "(they import torch's compiler and Lightning, seconds)."
            )
            print(summary)
            return []
        shown_cells = [c for c in cells if c.left_out or c.note]
        print("\n".join([*describe_setups(cells), *describe(shown_cells), summary]), flush=True)
        if clashes and not all(c.config.overwrite for c in clashes):
            raise GridError(
                f"{len(clashes)} of the grid's run directories hold another run's files, e.g. "
                f"{shown(clashes[0].run_dir)}: {clashes[0].note}. Nothing was launched: "
                f"{WAYS_OUT}"
            )
        if not todo:
            return []
        try:
            prepare_data(todo)
        except ConfigError as error:
            raise GridError(str(error)) from error
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        write_grid(sweep_dir, cells)

        os.environ[SWEEP_JOBS] = str(len(todo))  # each job's first line: "job 3/12: ..."
        jobs = [c.overrides for c in todo]
        size = self.max_batch_size or len(jobs)
        for first in range(0, len(jobs), size):
            self.launcher.launch(jobs[first : first + size], initial_job_idx=first)
        failed = closing_summary(sweep_dir, todo, len(done), len(cells) - len(runs))
        if failed:  # each failed run wrote results.json with its reason; the others went on
            raise GridError(f"{failed} of {len(todo)} jobs failed (listed above)")
        return cells


def closing_summary(sweep_dir: Path, todo: list, skipped: int, left_out: int) -> int:
    """Print what the sweep did, from the launched runs' results.json; return the failures."""
    from sdexp.results import RunResult, UnreadableResult, read_result

    outcome: dict[str, list] = {"ok": [], "failed": [], "missing": []}
    for cell in todo:
        try:
            result: RunResult | None = read_result(cell.run_dir)
        except UnreadableResult:
            result = None
        status = result.status if result is not None else "missing"
        outcome.setdefault(status, []).append((cell, result))
    ok, failed, missing = outcome["ok"], outcome["failed"], outcome["missing"]
    lines = [
        f"Sweep {shown(sweep_dir.absolute())}: {len(todo)} launched: {len(ok)} ok, "
        f"{len(failed)} failed, {len(missing)} without results (killed or interrupted); "
        f"{skipped} already done, {left_out} left out"
    ]
    lines += [f"  failed: {shown(c.run_dir)} ({r.reason})" for c, r in failed]
    lines += [f"  no results.json: {shown(c.run_dir)}" for c, _ in missing]
    where = shown(sweep_dir.absolute())
    if any((c.run_dir / "wandb").is_dir() for c in todo):
        lines.append(f"W&B: offline runs upload with: wandb sync {where}/*/wandb/offline-run-*")
    lines.append(f"Table: sdexp-table {where}")
    print("\n".join(lines), flush=True)
    return len(failed) + len(missing)


def prepare_data(cells: list) -> None:
    """Check (or download) each dataset once, here, so that parallel jobs never race for it."""
    from hydra.utils import instantiate

    seen = set()
    for cell in cells:
        key = OmegaConf.to_yaml(cell.config.dataset)
        if key not in seen:
            seen.add(key)
            instantiate(cell.config.dataset, seed=cell.config.seed).prepare_data()


def describe(cells: list) -> list[str]:
    """One line per cell: the overrides that vary over the grid, its status, its directory,
    and what the planner found there."""
    shared = set.intersection(*(set(c.overrides) for c in cells)) if len(cells) > 1 else set()
    lines, runs = [], 0
    for cell in cells:
        varying = " ".join(o for o in cell.overrides if o not in shared)
        if cell.left_out:
            lines.append(f"   -  left out  {varying}  ({cell.left_out})")
            continue
        note = f"  ({cell.note})" if cell.note else ""
        lines.append(f"{runs:4d}  {cell.status:8s}  {varying}  -> {shown(cell.run_dir)}{note}")
        runs += 1
    return lines


def shown(path: Path) -> Path:
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
