"""The grid sweeper's work (``hydra/sweeper=budget_grid``): a budget grid planned before anything
is launched (``sdexp.sweep.plan``), its jobs launched with Hydra's launcher, each in the directory
its run's identity names, and a closing summary, also when Ctrl-C or SIGTERM stops it (exit status
130 or 143). Hydra's basic sweeper has no hook to drop or merge cells, hence a sweeper of our own.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException, HydraException
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sdexp.errors import ConfigError
from sdexp.results import CELL_DIR, UnreadableResult, read_result, write_plan
from sdexp.run.config import LIGHTNING_GROUPS
from sdexp.run.console import SWEEP_JOBS, counted
from sdexp.run.directory import WAYS_OUT, cannot_create
from sdexp.run.failures import (
    JobEnded,
    Stopped,
    one_line,
    signal_name,
    stop_on_signals,
    stop_signal,
)
from sdexp.sweep import plan


class GridError(CompactHydraException):
    """A grid that cannot run, or jobs that failed: one line, exit status 1 (not Hydra's report)."""


class BudgetGrid:
    """The grid sweeper's work: plan the grid, record it, launch the rest, close with a summary."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.max_batch_size, self.params, self.dry_run = max_batch_size, params or {}, dry_run
        self.merged = {"baseline": 0, "repeated": 0}

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def plan(self, arguments: list[str]) -> list:
        """The cells of the grid, in the basic sweeper's order, planned by sdexp.sweep.plan."""
        if SUBDIR in {o.split("=", 1)[0].lstrip("+~") for o in self.config.hydra.overrides.hydra}:
            raise GridError(
                f"{SUBDIR}: the budget grid names each run's directory by its identity, "
                f"<sweep dir>/{CELL_DIR}; choose the sweep's directory with hydra.sweep.dir"
            )
        loader = self.hydra_context.config_loader
        params = [f"{k}={v}" for k, v in self.params.items()]
        parsed = OverridesParser.create(loader).parse_overrides([*params, *arguments])
        try:  # the basic sweeper's product: a later value of a key replaces an earlier one
            (product,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
        except HydraException as error:  # a range or an interval: no grid of values
            raise GridError(f"the budget grid takes lists of values ({error})") from None
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        if why := cannot_create(sweep_dir):  # the dry run says so too
            raise GridError(f"hydra.sweep.dir: cannot create {sweep_dir} ({why})")
        if why := plan.older_layout(sweep_dir):
            raise GridError(why)
        print(f"Planning {len(product)} cells into {shown(sweep_dir)} ...", flush=True)
        compose = plan.CellComposer(loader, self.config)
        try:
            planner = plan.CellPlanner(complete=not self.dry_run)
            cells, self.merged = plan.plan_grid(product, compose, planner, sweep_dir)
        except ConfigError as error:
            raise GridError(str(error)) from error
        return cells

    def sweep(self, arguments: list[str]) -> Any:
        try:
            with stop_on_signals():  # the command defers a signal until here: planning stops
                return self.plan_and_launch(arguments)
        except GridError as error:
            exit_with(1, str(error))
        except Exception:  # noqa: BLE001 - a composition interrupted part-way by the stop
            if (signum := stop_signal()) is None:
                raise
        except Stopped as stop:  # before the launch (which says what its jobs did when stopped)
            signum = stop.signum
        exit_with(
            128 + signum,
            f"stopped by {signal_name(signum)} while planning the sweep: nothing was launched",
        )

    def plan_and_launch(self, arguments: list[str]) -> list:
        cells = self.plan(arguments)
        runs = [c for c in cells if c.left_out is None]
        done = [c for c in runs if c.status == "done"]
        clashes = [c for c in runs if c.status == "conflict"]
        todo = [c for c in runs if c.status != "done"]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        summary = (
            f"Grid {shown(sweep_dir.absolute())}: {len(cells) + sum(self.merged.values())} "
            f"cells, {len(cells) - len(runs)} left out (infeasible for their mode), "
            f"{merged_text(**self.merged)} = {counted(len(runs), 'run')}: "
            f"{len(done)} already done (skipped), {len(todo)} to launch"
            + (f" ({len(clashes)} of them where another run's files are)" if clashes else "")
        )
        other_code = plan.describe_other_code(cells)  # finished runs other code made
        if self.dry_run:
            print("\n".join([*plan.describe_setups(cells), *describe(cells, cells)]))
            print(
                "Checked every cell's options but the optimizer's values and the "
                f"{', '.join(LIGHTNING_GROUPS)} options: the sweep checks those when it launches "
                "(they import torch's compiler and Lightning, seconds)."
            )
            print("\n".join([summary, *other_code]))
            return []
        shown_cells = [c for c in cells if c.left_out or c.note]
        lines = [*plan.describe_setups(cells), *describe(shown_cells, cells), summary, *other_code]
        print("\n".join(lines), flush=True)
        if clashes and not all(c.config.overwrite for c in clashes):
            raise GridError(
                f"{len(clashes)} of the grid's run directories hold another run's files, e.g. "
                f"{shown(clashes[0].run_dir)}: {clashes[0].note}. Nothing was launched: "
                f"{WAYS_OUT}"
            )
        if not todo:
            return cells
        try:
            if check_request := getattr(self.launcher, "check_request", None):
                check_request()  # sdexp.sweep.launchers: what the jobs ask of a cluster's nodes
            prepare_data(todo)
        except ConfigError as error:
            raise GridError(str(error)) from error
        try:  # the plan checked the place (cannot_create); it may still refuse (chattr +i)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
            write_plan(sweep_dir, plan.plan_of(sweep_dir, cells))
        except OSError as error:
            why = f"{error.strerror or error}: {error.filename or sweep_dir}"
            raise GridError(f"hydra.sweep.dir: cannot write {sweep_dir} ({why})") from error
        self.launch(sweep_dir, todo, skipped=len(done), left_out=len(cells) - len(runs))
        return cells

    def launch(self, sweep_dir: Path, todo: list, skipped: int, left_out: int) -> None:
        """Launch the cells' jobs, then the closing summary, also when a signal stops the sweep."""
        os.environ[SWEEP_JOBS] = str(len(todo))  # each job's first line: "job 3/12: ..."
        jobs = [plan.job_overrides(c) for c in todo]
        before = {c.run_dir: plan.traces(c.run_dir) for c in todo}
        size = self.max_batch_size or len(jobs)
        returns: list = []  # what each launched job ended as (JobReturn), in the jobs' order
        try:
            with stop_on_signals():  # as a run: SIGINT, SIGTERM raise Stopped (where not set)
                batches = BasicSweeper.split_overrides_to_chunks(jobs, size)  # Hydra's batching
                for number, batch in enumerate(batches):
                    returns += self.launcher.launch(batch, initial_job_idx=number * size) or []
        except ConfigError as error:  # the launcher refused the jobs (what they ask for)
            raise GridError(str(error)) from None
        except (KeyboardInterrupt, SystemExit) as stop:
            if (signum := stopping_signal(stop)) is not None:
                signal.signal(signum, signal.SIG_IGN)  # the same signal again: the summary first
            closing_summary(sweep_dir, todo, before, returns, skipped, left_out)
            if signum is None:
                raise  # a job ended the process (sys.exit): so does the sweep, after its summary
            exit_with(
                128 + signum,
                f"interrupted ({signal.Signals(signum).name}): run the same command to go on "
                "(finished runs are skipped, interrupted ones resume from their last checkpoint)",
            )
        ended = closing_summary(sweep_dir, todo, before, returns, skipped, left_out)
        if not_ok := {kind: n for kind, n in ended.items() if kind != "ok" and n}:
            counts = ", ".join(f"{n} {kind}" for kind, n in not_ok.items())
            raise GridError(
                f"{sum(not_ok.values())} of {len(todo)} jobs did not end ok: {counts} "
                "(listed above; run the same command to run them again)"
            )


def exit_with(status: int, message: str) -> NoReturn:
    """The sweep's end with an error: one line on stderr, exit status ``status``."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status) from None


#: A job's directory below the sweep directory: the sweeper sets it per job (``job_overrides``).
SUBDIR = "hydra.sweep.subdir"


def stopping_signal(stop: KeyboardInterrupt | SystemExit) -> int | None:
    """The signal that stopped the sweep, or None where a job ended the process otherwise (a
    job's Trainer turns ``Stopped`` into SystemExit(1): ``stop_signal`` still says which)."""
    if isinstance(stop, Stopped):
        return stop.signum
    if stop_signal() is not None:
        return stop_signal()
    if isinstance(stop, KeyboardInterrupt) or stop.code == 128 + signal.SIGINT:
        return signal.SIGINT
    return None


def merged_text(baseline: int, repeated: int) -> str:
    """'N merged (why)': cells that are the same run as an earlier cell of the grid."""
    why = [f"{baseline} of the no-SD baseline, which runs once per seed"] if baseline else []
    why += [counted(repeated, "duplicate")] if repeated else []
    return f"{baseline + repeated} merged" + (f" ({', '.join(why)})" if why else "")


#: What a launched job ended as, in the closing summary's order (``job_outcome``).
OUTCOMES = ("ok", "failed", "interrupted", "refused", "not launched")


def job_outcome(cell, before: tuple | None, ended: JobReturn | None) -> tuple[str, str]:
    """What the job of ``cell`` ended as (one of ``OUTCOMES``) and why, from its ``JobReturn``
    (``ended``, if the launch got that far), its own results.json and its ``traces`` against
    ``before``. Refused: the run never owned its directory (``ConfigError``)."""
    error = ended._return_value if ended is not None and ended.status == JobStatus.FAILED else None
    if isinstance(error, ConfigError):
        return "refused", one_line(error)
    try:
        result = read_result(cell.run_dir)
    except UnreadableResult as unreadable:
        result, error = None, error or unreadable
    own = result is not None and result.key.identity == cell.key.identity  # not another run's
    if own and (result.status == "failed" or error is None):
        return result.status, result.reason or ""
    if isinstance(error, JobEnded | Stopped):
        return "interrupted", str(error)
    if error is not None:
        return "failed", one_line(error)
    started = plan.traces(cell.run_dir) != before
    return ("interrupted", "") if started else ("not launched", "")


def closing_summary(
    sweep_dir: Path, todo: list, before: dict, returns: list, skipped: int, left_out: int
) -> dict[str, int]:
    """Print how each launched job ended, where W&B logged and how to make the table."""
    ended = {kind: [] for kind in OUTCOMES}
    for number, cell in enumerate(todo):
        returned = returns[number] if number < len(returns) else None
        kind, why = job_outcome(cell, before[cell.run_dir], returned)
        ended[kind].append((cell, why))
    count = {kind: len(cells) for kind, cells in ended.items()}
    where = shown(sweep_dir.absolute())
    lines = [
        f"Sweep {where}: {len(todo) - count['not launched']} launched: {count['ok']} ok, "
        f"{count['failed']} failed, {count['interrupted']} interrupted, "
        f"{count['refused']} refused"
        + (f"; {count['not launched']} not launched" if count["not launched"] else "")
        + f"; {skipped} already done, {left_out} left out"
    ]
    for kind in ("failed", "interrupted", "refused"):
        lines += [
            f"  {kind}: {shown(c.run_dir)}" + (f" ({why})" if why else "") for c, why in ended[kind]
        ]
    if any((c.run_dir / "wandb").is_dir() for c in todo):  # <setup>/<cell>/wandb/
        runs = f"{shlex.quote(str(where))}/*/*/wandb/offline-run-*"
        lines.append(f"W&B: offline runs upload with: wandb sync {runs}")
    lines.append(f"Table: sdexp-table {shlex.quote(str(where))}")
    print("\n".join(lines), flush=True)
    return count


def prepare_data(cells: list) -> None:
    """Check (or download) each dataset once, here, so that parallel jobs never race for it."""
    seen = set()
    for cell in cells:
        key = OmegaConf.to_yaml(cell.config.dataset)
        if key not in seen:
            seen.add(key)
            instantiate(cell.config.dataset, seed=cell.config.seed).prepare_data()


def describe(cells: list, grid: list) -> list[str]:
    """One line per cell: its overrides that vary over the grid, number, status, directory, note."""
    shared = set.intersection(*(set(c.overrides) for c in grid)) if len(grid) > 1 else set()
    numbers = {id(c): i for i, c in enumerate(c for c in grid if c.left_out is None)}
    lines = []
    for cell in cells:
        if cell.left_out:
            always = ("mode", "budget")  # its reason is about them
            named = [o for o in cell.overrides if o not in shared or o.split("=")[0] in always]
            lines.append(f"   -  left out  {' '.join(named)}  ({cell.left_out})")
            continue
        varying = " ".join(o for o in cell.overrides if o not in shared)
        note = f"  ({cell.note})" if cell.note else ""
        number = numbers[id(cell)]
        lines.append(f"{number:4d}  {cell.status:8s}  {varying}  -> {shown(cell.run_dir)}{note}")
    return lines


def shown(path: Path) -> Path:
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
