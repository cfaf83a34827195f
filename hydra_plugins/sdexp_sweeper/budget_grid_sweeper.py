"""``hydra/sweeper=budget_grid``: a budget grid, planned before anything is launched.

The class Hydra discovers, and its config: as Hydra's Optuna sweeper does, it is thin and hands
its work to ``sdexp.sweep.grid.BudgetGrid`` (what it plans, launches and says), imported when a
sweep starts, not when Hydra scans its plugins (at every start of every command).
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class BudgetGridSweeperConf:
    _target_: str = "hydra_plugins.sdexp_sweeper.budget_grid_sweeper.BudgetGridSweeper"
    max_batch_size: int | None = None  # jobs handed to the launcher at once (None: all)
    params: dict[str, str] | None = None
    dry_run: bool = False  # list the planned grid and launch nothing


ConfigStore.instance().store(
    group="hydra/sweeper", name="budget_grid", node=BudgetGridSweeperConf, provider="sdexp"
)


class BudgetGridSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        """``options``: those of ``BudgetGridSweeperConf``, for ``sdexp.sweep.grid.BudgetGrid``."""
        from sdexp.sweep.grid import BudgetGrid

        self.grid = BudgetGrid(**options)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.grid.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.grid.sweep(arguments)
