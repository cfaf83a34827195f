"""Experiment loggers: Weights & Biases that never prompts and never crashes a run.

``mode: auto`` logs online when W&B credentials exist (``WANDB_API_KEY`` or a netrc entry for the
W&B host) and offline otherwise; ``WANDB_MODE`` in the environment wins over the config. If the
server cannot be reached, or an online run cannot start, the run goes on offline; ``wandb sync``
uploads it later. A resumed run does not log again the steps the W&B run already holds
(``ResumableWandbLogger``), and every run ends its W&B run with its exit code.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from pytorch_lightning.loggers import Logger, WandbLogger

from sdexp.errors import ConfigError

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")
T = TypeVar("T")


def wandb_server() -> tuple[str, int]:
    """The W&B server's host and port (``WANDB_BASE_URL``, else the public one)."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


def server_reachable(timeout_s: float = 5.0) -> bool:
    """Whether a TCP connection to the W&B server opens within ``timeout_s``.

    wandb has no quick check: an online ``wandb.init`` against an unreachable server retries
    for its ``init_timeout`` (90 s and more), in every run of a sweep."""
    try:
        socket.create_connection(wandb_server(), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def has_wandb_credentials() -> bool:
    """Whether wandb could log in without asking (wandb has no public call that says so)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = wandb_server()[0]
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


class ResumableWandbLogger(WandbLogger):
    """A WandbLogger whose history continues from the last step the W&B run already holds.

    A run killed or preempted mid-epoch resumes from the checkpoint of its last finished epoch
    and computes the steps after it again, with the same values (masks and data order are
    seeded). Whatever of those steps the W&B run received before the interruption is not
    logged a second time; what it never received (an offline run killed before wandb wrote it)
    is logged now. The run's last step comes from wandb itself: the resumed online run's
    summary, or the summaries of this directory's earlier offline runs of the same id.
    """

    STEP = "trainer/global_step"  # Lightning's step metric in W&B

    def __init__(self, save_dir: str, **kwargs) -> None:
        super().__init__(save_dir=save_dir, **kwargs)
        self._held: int | None = None  # found when the first metrics are logged
        if self._wandb_init.get("anonymous") is None:
            # Lightning 2.6 passes anonymous=None, which wandb 0.31 warns about on every run.
            self._wandb_init.pop("anonymous", None)

    def held_step(self) -> int:
        """The last trainer step this W&B run holds (-1: none)."""
        summaries = [dict(self.experiment.summary)]
        if self._wandb_init.get("mode") == "offline":
            current = Path(self.experiment.dir).parent
            earlier = Path(self.save_dir, "wandb").glob(f"offline-run-*-{self.experiment.id}")
            summaries = [offline_summary(run) for run in earlier if run != current]
        steps = [s[self.STEP] for s in summaries if isinstance(s.get(self.STEP), int | float)]
        return int(max(steps, default=-1))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._held is None:
            self._held = self.held_step()
        if step is not None and step <= self._held:
            return
        super().log_metrics(metrics, step)


def offline_summary(run_dir: Path) -> dict:
    """The summary of an offline W&B run, read from its files by wandb's own reader
    (``wandb leet inspect``); empty if it cannot be read (a run killed before wandb wrote)."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json"]
    try:
        done = subprocess.run([*command, str(run_dir)], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout).get("summary") or {}
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}


def with_fallback(start: Callable[[str], T], mode: str = "auto") -> T | None:
    """``start(mode)``, where ``start`` starts a W&B run, as W&B should be for a run that must
    not stop: offline when the server is unreachable (checked in seconds) and, if the run cannot
    start online, offline; None (and a warning) if it cannot start at all."""
    mode = resolve_wandb_mode(mode)
    if mode == "online" and not server_reachable():
        host, port = wandb_server()
        log.warning(f"W&B server {host}:{port} unreachable: logging offline (wandb sync uploads)")
        mode = "offline"
    import wandb

    for attempt in [mode, "offline"] if mode == "online" else [mode, mode]:
        try:
            return start(attempt)
        except Exception as error:  # server error, bad key, timeout, "run ID ... is in use"
            log.warning(f"W&B could not start {attempt} ({error})")
            # The failed run still holds its id in the wandb-core service ("run ID ... is in
            # use"), and so does a run killed in another process that shares this service (a
            # parent's, inherited through WANDB_SERVICE): the next attempt starts its own.
            wandb.teardown()
            os.environ.pop("WANDB_SERVICE", None)
    log.warning("W&B could not start: nothing of this is logged to W&B")
    return None


def wandb_logger(save_dir: str, mode: str = "auto", **kwargs) -> WandbLogger:
    """A W&B logger writing into the run's own directory; ``kwargs`` go to ``wandb.init``.
    Its run starts at once (``with_fallback``); if W&B cannot start, the run goes on without."""
    os.makedirs(save_dir, exist_ok=True)

    def start(attempt: str) -> WandbLogger:
        logger = ResumableWandbLogger(save_dir=save_dir, mode=attempt, **kwargs)
        logger.experiment  # noqa: B018 - starts the run now, while falling back is possible
        return logger

    return with_fallback(start, mode) or ResumableWandbLogger(
        save_dir=save_dir, mode="disabled", **kwargs
    )


def log_layer_profile(logger: Logger, name: str, values: Sequence[float]) -> None:
    """A per-layer quantity (survival, sensitivity) as a W&B line chart against the layer index."""
    if not isinstance(logger, WandbLogger):
        return  # other loggers get the list through log_hyperparams
    import wandb

    table = wandb.Table(columns=["layer", name], data=[[i + 1, v] for i, v in enumerate(values)])
    logger.experiment.log({f"layers/{name}": wandb.plot.line(table, "layer", name, title=name)})


def log_result(loggers: Sequence[Logger], summary: Mapping, row: Mapping | None = None) -> None:
    """A run's result for W&B dashboards: ``summary`` (what runs are filtered and grouped by)
    in the run's summary, and ``row`` as one history row, since a line plot's x-axis (the
    budget, for ``sdexp.dashboard``) must be a logged metric."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment.summary.update(dict(summary))
                if row:
                    logger.experiment.log(dict(row))
            except Exception as error:  # noqa: BLE001 - logging is never why a run fails
                log.warning(f"W&B could not take the run's result ({error})")


def where(loggers: Sequence[Logger]) -> str:
    """Where the run's W&B run is: its page, or its offline folder and how to upload it."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            if not run.offline:
                return f"W&B: {run.url}"
            folder = Path(run.dir).parent
            return f"W&B: logged offline to {folder} (upload: wandb sync {folder})"
    return ""


def finish(exit_code: int = 0) -> None:
    """End this job's W&B run (if any) with ``exit_code`` (non-zero: the run failed), so that
    the next job in the same process starts its own. Never raises: logging is not a reason for
    a run to fail."""
    wandb = sys.modules.get("wandb")  # not imported: no run to finish (and wandb may be absent)
    if wandb is None or wandb.run is None:
        return
    try:
        wandb.finish(exit_code=exit_code)
    except Exception as error:  # noqa: BLE001
        log.warning(f"W&B could not finish the run cleanly ({error})")
