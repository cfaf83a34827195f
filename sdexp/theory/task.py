"""The task function behind ``python -m sdexp.theory``: run one experiment, write and log it."""

from __future__ import annotations

import importlib
import logging
import platform
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sdexp.errors import ConfigError
from sdexp.run import console
from sdexp.run.directory import keep_hydra_record
from sdexp.run.failures import raise_if_stopped, stop_on_signals
from sdexp.run.sharing import set_threads
from sdexp.run.typecheck import check_target
from sdexp.survival import MODES
from sdexp.theory.outcome import Outcome
from sdexp.tracking.wandb_access import finish

log = logging.getLogger("sdexp")


#: Integer options that may be 0 (epochs: the weight states, 0 at init); all others are at least 1.
MAY_BE_ZERO = ("seed", "neuron", "epochs")
#: The modes whose p a formula gives (``probes.survival``): SenseMode needs sensitivities.
FORMULA_MODES = ("none", "uniform", "linear")
#: Options that name survival modes, and the modes each may name (``train_mode`` trains with it).
MODE_OPTIONS = {"mode": FORMULA_MODES, "modes": FORMULA_MODES, "train_mode": tuple(MODES)}
#: Options that hold budgets, in (0, 1] (``sdexp.survival.check_budget``).
BUDGET_OPTIONS = ("budget", "budgets", "train_budget")


def leaves(values: dict, path: str):
    """``(option, value)`` for every value of an experiment's options, nested (``theorem1.width``)
    and in lists, not in the objects it builds (a ``_target_`` node checks its own)."""
    for key, value in values.items():
        option = f"{path}.{key}"
        if isinstance(value, dict):
            if "_target_" not in value:
                yield from leaves(value, option)
            continue
        for item in value if isinstance(value, list) else [value]:
            yield option, item


def check_leaf(option: str, value) -> None:
    """ConfigError naming ``option`` if ``value`` is out of its range: a mode the option cannot
    take, a budget outside (0, 1], one of Lemma 1's levels outside (0, 1), a size below 1."""
    name = option.rsplit(".", 1)[-1]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if name in MODE_OPTIONS and value not in MODE_OPTIONS[name]:
        raise ConfigError(option, f"one of {', '.join(MODE_OPTIONS[name])}, got {value!r}")
    if name in BUDGET_OPTIONS and number and not 0 < value <= 1:
        raise ConfigError(option, f"a budget in (0, 1], got {value!r}")
    if name == "betas" and number and not 0 < value < 1:
        raise ConfigError(option, f"a probability in (0, 1), got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool):
        low = 0 if name in MAY_BE_ZERO or name.endswith("_seed") else 1
        if value < low:
            raise ConfigError(option, f"an integer, at least {low}, got {value}")


def run_theory(cfg: DictConfig, command: str = "") -> Outcome:
    """Run ``cfg.experiment``; write its CSVs, PNG and summary.md into ``cfg.output_dir``, and
    log them when ``cfg.logger`` is set. The summary ends with the measured wall time and
    ``command``, the overrides that made it."""
    # the options by range, then by type (the signature, whose module imports Lightning): a
    # ConfigError (one line, exit 2) before a run
    values = OmegaConf.to_container(cfg.experiment, resolve=True)
    for option, value in leaves(values, "experiment"):
        check_leaf(option, value)
    check_target(values, "experiment")
    keep_hydra_record(Path(cfg.output_dir), cfg)
    console.open_run_log()
    console.quiet_libraries()  # the Trainer of regularizer and normality prints nothing of its own
    set_threads(cfg.threads)
    with stop_on_signals(defer=True):  # an import interrupted part-way is another error
        module = importlib.import_module(cfg.experiment._target_.rsplit(".", 1)[0])
    raise_if_stopped()
    log.info(f"{module.__doc__.splitlines()[0].rstrip('.')}: running ...")
    start = time.perf_counter()
    outcome: Outcome = instantiate(cfg.experiment, _convert_="all")
    seconds = time.perf_counter() - start
    outcome.metrics["wall_time_s"] = seconds
    outcome.summary += (
        f"\n\nWall time: {seconds:.1f} s on {platform.machine()} with "
        f"{torch.get_num_threads()} torch thread(s), `python -m sdexp.theory {command}`.\n"
    )
    files = outcome.write(Path(cfg.output_dir))
    names = ", ".join(sorted(path.name for path in files.values()))
    log.info(f"done in {seconds:.1f} s: {names} in {cfg.output_dir}")
    if cfg.logger:
        identity = {"name": f"theory-{outcome.name}", "tags": ["theory", outcome.name]}
        for key, value in identity.items():
            if cfg.run.get(key) is None:
                cfg.run[key] = value
        logger = instantiate(cfg.logger)
        try:
            outcome.log(logger, OmegaConf.to_container(cfg, resolve=True), files)
        finally:
            finish()
    return outcome
