"""What a run prints: one line when it starts, one when it ends, and progress a person can read.

``quiet_libraries`` turns off what Lightning, W&B and PyTorch print on every run. Information
goes to stdout, warnings and errors to stderr, and all of them, with time and source, to the
run's log file once the run owns its directory (``conf/hydra/job_logging/sdexp.yaml``). No
Lightning here: Hydra loads the formatter before a run's config is checked.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import warnings

from sdexp.results import RunKey, RunResult


class BelowWarning(logging.Filter):
    """Records below WARNING: the console's stdout (warnings and errors go to stderr)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class RunLogFile(logging.handlers.MemoryHandler):
    """The run's log file (``<output dir>/train.log``), written once the run owns its directory:
    Hydra opens it before the task starts, and a refused run would append to another run's log.
    The records wait in memory (a ``MemoryHandler`` without a target) until ``open_log``."""

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None) -> None:
        super().__init__(capacity=1, flushLevel=logging.NOTSET)  # once it has a target: each
        self.file = LogFile(filename, mode, encoding)

    def open_log(self) -> None:
        """Write the waiting records, and every later one as it comes."""
        self.file.setFormatter(self.formatter)
        self.setTarget(self.file)
        self.flush()


class LogFile(logging.FileHandler):
    """A log file that cannot be written is given up with one warning, not a traceback a line."""

    def __init__(self, filename: str, mode: str, encoding: str | None) -> None:
        super().__init__(filename, mode, encoding, delay=True)
        self.broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.broken:
            return
        try:  # FileHandler opens the file (delay=True) outside its own error handling
            super().emit(record)
        except Exception:  # noqa: BLE001 - reported once by handleError
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.broken:
            self.broken = True
            error = sys.exc_info()[1]
            sys.stderr.write(f"warning: cannot write {self.baseFilename} ({error}): log not kept\n")


def run_logs() -> list[RunLogFile]:
    return [h for h in logging.getLogger().handlers if isinstance(h, RunLogFile)]


def open_run_log() -> None:
    """The run owns its directory: its log file is written from now on (``RunLogFile``)."""
    for handler in run_logs():
        handler.open_log()


def run_log_opened() -> bool:
    """Whether this job's log file was opened (its run owned its directory)."""
    return any(handler.target is not None for handler in run_logs())


class BriefFormatter(logging.Formatter):
    """The console's format: the message, with the level before warnings and errors; a Python
    warning shows its first line only (the log file keeps the source line below it)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name == "py.warnings":
            text = text.strip().splitlines()[0]
        return text if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {text}"


#: Lightning's loggers: their info lines (GPU and TPU lines, tips, "`Trainer.fit` stopped") off.
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning")

#: Warnings every run or theory experiment triggers, and what they would have us do:
IGNORED_WARNINGS = (
    # A PyTorch deprecation inside Lightning (its own code calls the deprecated check).
    r".*isinstance\(treespec, LeafSpec\).*",
    # Worker processes for data gathered from memory in one tensor: none are needed.
    ".*does not have many workers.*",
    # A short run logs its training loss less than once an epoch; its metrics are all logged.
    ".*is smaller than the logging interval.*",
    # Lightning's SLURM detection, wherever srun is on the PATH: sdexp.run.slurm chooses instead.
    ".*The `srun` command is available on your system but is not used.*",
)


def quiet_libraries() -> None:
    """What Lightning and PyTorch print on every run off, and the rest into the log file too
    (Lightning, imported before Hydra configured logging, gives its logger its own handler)."""
    # wandb's telemetry, sent at exit: a server that refuses the key logs "error: Failed to export".
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        if not logger.propagate:  # Lightning's own console handler (pytorch_lightning/__init__)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
    logging.captureWarnings(True)
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


#: Set by the grid sweeper for its jobs: how many it launched ("job 3/12" on a job's lines).
SWEEP_JOBS = "SDEXP_SWEEP_JOBS"


def in_multirun() -> bool:
    """Whether this process runs a Hydra multirun (a sweep's jobs)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_label() -> str:
    """The label of a job of a sweep the grid sweeper launched ("job 3/12: "), else ""."""
    from hydra.core.hydra_config import HydraConfig

    if not (total := os.environ.get(SWEEP_JOBS)) or not HydraConfig.initialized():
        return ""
    return f"job {HydraConfig.get().job.num + 1}/{total}: "


def counted(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {noun}{'s' * (count != 1)}"


def start_line(key: RunKey, device: str, out: str) -> str:
    return (
        f"{job_label()}Training {key.dataset}, {key.model} (L = {key.num_blocks}), mode "
        f"{key.mode} at budget {key.budget:g}, seed {key.seed}, recipe {key.recipe}, "
        f"{counted(key.epochs, 'epoch')} on {device}: {out}"
    )


def metric_text(metric: str, value: float | None, report: str, baseline: str = "") -> str:
    """``test MSE 0.0728 (final model; the test targets' variance is 0.398)``."""
    which = "best-validation checkpoint" if report == "best" else "final model"
    which += f"; {baseline}" if baseline else ""
    if value is None:
        return f"no test {metric} ({which})"
    shown = f"{value:.2f}%" if metric == "error" else f"{value:.4g}"
    return f"test {'error' if metric == 'error' else 'MSE'} {shown} ({which})"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    )


def end_line(result: RunResult, path: str, baseline: str = "", elapsed: float | None = None) -> str:
    """``ok: test MSE 0.0728 (final model; ...), expected depth 15.0 of 50, 20s: results.json``,
    or for a failed run its reason: ``NonFiniteLossError: ... (failed after 3s: results.json)``
    (an error line)."""
    key = result.key
    if result.status != "ok":
        return f"{result.reason} ({result.status} after {duration(elapsed)}: {path})"
    head = f"ok: {metric_text(result.metric, result.test, result.report, baseline)}"
    depth = f"expected depth {result.expected_depth:.1f} of {key.num_blocks}"
    return f"{head}, {depth}, {duration(elapsed)}: {path}"
