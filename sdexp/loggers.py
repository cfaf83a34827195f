"""Experiment loggers: Weights & Biases that never prompts and never crashes a run.

``mode: auto`` logs online when W&B credentials exist (``WANDB_API_KEY`` or a netrc entry for the
W&B host) and offline otherwise; ``WANDB_MODE`` in the environment wins over the config. If an
online run cannot start (no network), the run goes on offline; ``wandb sync`` uploads it later.
"""

from __future__ import annotations

import netrc
import os
import sys
import warnings
from collections.abc import Sequence
from urllib.parse import urlparse

from pytorch_lightning.loggers import Logger, WandbLogger

from sdexp.errors import ConfigError

WANDB_MODES = ("auto", "online", "offline", "disabled")


def has_wandb_credentials() -> bool:
    """Whether wandb could log in without asking (wandb has no public call that says so)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    if mode not in WANDB_MODES:
        raise ConfigError("logger.mode", f"one of {list(WANDB_MODES)}, got {mode!r}")
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if has_wandb_credentials() else "offline")
    return "offline" if mode == "dryrun" else mode


def wandb_logger(save_dir: str, mode: str = "auto", **kwargs) -> WandbLogger:
    """A WandbLogger writing into the run's own directory; ``kwargs`` go to ``wandb.init``."""
    mode = resolve_wandb_mode(mode)
    os.makedirs(save_dir, exist_ok=True)
    logger = WandbLogger(save_dir=save_dir, mode=mode, **kwargs)
    if mode == "online":
        try:
            logger.experiment  # noqa: B018 - starts the run now, while falling back is possible
        except Exception as error:  # no network, server down, bad key
            warnings.warn(f"W&B could not start online ({error}); logging offline", stacklevel=2)
            logger = WandbLogger(save_dir=save_dir, mode="offline", **kwargs)
    return logger


def log_layer_profile(logger: Logger, name: str, values: Sequence[float]) -> None:
    """A per-layer quantity (survival, sensitivity) as a W&B line chart against the layer index."""
    if not isinstance(logger, WandbLogger):
        return  # other loggers get the list through log_hyperparams
    import wandb

    table = wandb.Table(columns=["layer", name], data=[[i + 1, v] for i, v in enumerate(values)])
    logger.experiment.log({f"layers/{name}": wandb.plot.line(table, "layer", name, title=name)})


def finish() -> None:
    """End this job's W&B run (if any), so that the next job in the same process starts its own."""
    wandb = sys.modules.get("wandb")  # not imported: no run to finish (and wandb may be absent)
    if wandb is not None and wandb.run is not None:
        wandb.finish()
