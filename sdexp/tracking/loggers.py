"""Experiment loggers: Weights & Biases that never prompts and never decides a run's fate.

A run's W&B logger starts at once (online, else offline, else none). Every call into W&B after
the start is guarded (``ResumableWandbLogger.safely``): a W&B that fails mid-run (a server error,
wandb's service gone: SLURM signals every process of a job) is one warning, and the run goes on.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from sdexp.tracking.wandb_access import WandbMode, finish, offline_summary, one_line, with_fallback

log = logging.getLogger(__name__)


class ResumableWandbLogger(WandbLogger):
    """A WandbLogger whose history continues from the last step the W&B run already holds: a
    resumed run computes the steps after its last checkpoint again, with the same values; those
    W&B received (per the online run's summary, or the offline runs') are not logged twice."""

    STEP = "trainer/global_step"  # Lightning's step metric in W&B
    LAYERS = ("survival", "sensitivity", "sensitivity_se")  # per layer (sdexp.run.module)

    def __init__(self, save_dir: str, **kwargs) -> None:
        super().__init__(save_dir=save_dir, **kwargs)
        self._held: int | None = None  # found when the first metrics are logged
        self.lost: str | None = None  # why W&B stopped taking this run's logs
        if self._wandb_init.get("anonymous") is None:
            # Lightning 2.6 passes anonymous=None, which wandb 0.31 warns about on every run.
            self._wandb_init.pop("anonymous", None)

    def safely(self, what: str, call, *args, **kwargs):
        """``call(*args, **kwargs)``, a call into W&B; if it fails, one warning, and W&B is not
        asked again for this run (it would fail again, each time after its timeouts)."""
        if self.lost is not None:
            return None
        try:
            return call(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - W&B never decides a run's fate
            self.lost = f"{type(error).__name__}: {one_line(error)}"
            log.warning(
                f"W&B failed to {what} ({self.lost}): the run goes on without W&B; its results "
                "go to results.json"
            )
            return None

    def held_step(self) -> int:
        """The last trainer step this W&B run holds (-1: none)."""
        summaries = [dict(self.experiment.summary)]
        if self._wandb_init.get("mode") == "offline":
            current = Path(self.experiment.dir).parent
            earlier = Path(self.save_dir, "wandb").glob(f"offline-run-*-{self.experiment.id}")
            summaries = [offline_summary(run) for run in earlier if run != current]
        steps = [s[self.STEP] for s in summaries if isinstance(s.get(self.STEP), int | float)]
        return int(max(steps, default=-1))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.safely("log metrics", self._log_new_metrics, metrics, step)

    def _log_new_metrics(self, metrics: Mapping[str, float], step: int | None) -> None:
        if self._held is None:
            self._held = self.held_step()
        if step is None or step > self._held:
            super().log_metrics(metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        """The config; each per-layer quantity in it (``LAYERS``) also as a chart per layer."""
        self.safely("log the config", super().log_hyperparams, params)
        for name in self.LAYERS:
            if isinstance(params, dict) and isinstance(params.get(name), list):
                self.safely(f"log the layers' {name}", self.log_layers, name, params[name])

    def log_layers(self, name: str, values: Sequence[float]) -> None:
        import wandb

        data = [[i + 1, v] for i, v in enumerate(values)]
        table = wandb.Table(columns=["layer", name], data=data)
        self.experiment.log({f"layers/{name}": wandb.plot.line(table, "layer", name, title=name)})

    @rank_zero_only
    def log_result(self, summary: Mapping, row: Mapping | None = None) -> None:
        """A run's result: ``summary`` in the run's summary, and ``row`` as one history row,
        since a line plot's x-axis (the budget, in the report) must be a logged metric."""

        def give() -> None:
            self.experiment.summary.update(dict(summary))
            if row:
                self.experiment.log(dict(row))

        self.safely("take the run's result", give)

    def where(self) -> str:
        """Where the W&B run is, if anywhere: its page, or its folder and how to upload it."""
        if self.experiment.disabled:
            return ""
        run, lost = self.experiment, " (incomplete: W&B was lost mid-run)" if self.lost else ""
        if not run.offline:
            return f"W&B: {run.url}{lost}"
        folder = str(Path(run.dir).parent)
        return f"W&B: logged offline to {folder}{lost} (upload: wandb sync {shlex.quote(folder)})"

    def finish(self, exit_code: int) -> None:
        """End the W&B run (``sdexp.tracking.wandb_access.finish``: never raises)."""
        finish(exit_code)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.safely("finalize the run", super().finalize, status)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self.safely("note a checkpoint", super().after_save_checkpoint, checkpoint_callback)


def wandb_logger(save_dir: str, mode: WandbMode = "auto", **kwargs) -> WandbLogger:
    """A W&B logger in the run's own directory, started at once (``kwargs``: ``wandb.init``'s)."""
    os.makedirs(save_dir, exist_ok=True)

    def start(attempt: str) -> WandbLogger:
        logger = ResumableWandbLogger(save_dir=save_dir, mode=attempt, **kwargs)
        logger.experiment  # noqa: B018 - starts the run now, while falling back is possible
        return logger

    started = with_fallback(start, mode, Path(save_dir, "wandb", "service.log"))
    return started or ResumableWandbLogger(save_dir=save_dir, mode="disabled", **kwargs)
