"""Experiment loggers: Weights & Biases that never prompts and never crashes a run.

A run's W&B logger starts at once, through ``sdexp.wandb_access.with_fallback``: online when
credentials exist and the server answers, else offline (``wandb sync`` uploads it later), else
none. A resumed run does not log again the steps the W&B run already holds
(``ResumableWandbLogger``), and at its end a run gives W&B its result (``log_result``: the
summary and history row of ``sdexp.results.RunResult``).
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytorch_lightning.loggers import Logger, WandbLogger

from sdexp.wandb_access import offline_summary, with_fallback

log = logging.getLogger(__name__)


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
            folder = str(Path(run.dir).parent)
            return f"W&B: logged offline to {folder} (upload: wandb sync {shlex.quote(folder)})"
    return ""
