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

from sdexp import console, loggers
from sdexp.sharing import set_threads
from sdexp.theory.outcome import Outcome

log = logging.getLogger("sdexp")


def run_theory(cfg: DictConfig, command: str = "") -> Outcome:
    """Run ``cfg.experiment``; write its CSVs, PNG and summary.md into ``cfg.output_dir``, and
    log them when ``cfg.logger`` is set. The summary ends with the measured wall time and
    ``command``, the overrides that made it."""
    console.quiet_libraries()  # the Trainer of regularizer and normality prints nothing of its own
    set_threads(cfg.threads)
    module = importlib.import_module(cfg.experiment._target_.rsplit(".", 1)[0])
    log.info(f"{module.__doc__.splitlines()[0].rstrip('.')}: running ...")
    start = time.perf_counter()
    outcome: Outcome = instantiate(cfg.experiment, _convert_="all")
    seconds = time.perf_counter() - start
    outcome.metrics["wall_time_s"] = seconds
    outcome.summary += (
        f"\n\nWall time: {seconds:.1f} s on {platform.machine()} with "
        f"{torch.get_num_threads()} torch thread(s), "
        f"`python -m sdexp.theory {command}`.\n"
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
            loggers.finish()
    return outcome
