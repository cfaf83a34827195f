"""The task function: one configured run, from config checks to ``results.json``.

In order: the config is checked once; the run's key comes from the config alone, and a finished
``results.json`` of the same identity ends the job; the output directory is claimed, and from
then on whatever stops the run is in its ``results.json``; then training (resuming from
``checkpoints/last.ckpt``), the tests, ``predictions.csv``, ``results.json`` and the W&B summary.
A run stopped by a signal writes no results.json: the same command resumes it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Protocol, runtime_checkable

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, Timer
from pytorch_lightning.utilities import rank_zero_only

from sdexp.errors import ConfigError
from sdexp.loader import TensorDataModule
from sdexp.models import ResidualNetwork
from sdexp.predictions import TESTED_MODELS, write_predictions
from sdexp.provenance import current_code, other_code, this_code
from sdexp.results import (
    METRIC,
    RESULTS_FILE,
    RunKey,
    RunResult,
    UnreadableResult,
    completed,
    write_result,
)
from sdexp.run import console
from sdexp.run.callbacks import EpochTimer, ProgressLines
from sdexp.run.checkpoints import AtomicCheckpointIO, RunIdentity, checkpointing
from sdexp.run.config import Checked, Speed, check_config
from sdexp.run.console import job_label
from sdexp.run.directory import CHECKPOINTS, LAST, Resume, check_kinds, claim, keep_hydra_record
from sdexp.run.failures import (
    Stopped,
    flat_message,
    mark_reported,
    raise_if_stopped,
    signal_name,
    stop_signal,
)
from sdexp.run.identity import run_key
from sdexp.run.module import LightningData, StochasticDepthModule
from sdexp.run.sharing import device_kind, runs_sharing_device, set_threads
from sdexp.run.slurm import cluster_plugins, in_job
from sdexp.subnetwork import gate_record

log = logging.getLogger("sdexp")


def fill_run_names(cfg: DictConfig, key: RunKey) -> None:
    """W&B name, group, tags and id from the run's key, unless the config sets them. The id
    hashes the output directory and the identity: a re-run continues its W&B run, another
    configuration in the same directory (``overwrite=true``) gets its own."""
    where = f"{Path(cfg.output_dir).resolve()}:{key.identity}"
    defaults = {
        "name": key.name,
        "group": f"{key.dataset}-{key.model}",
        "tags": [key.dataset, key.model, key.mode, f"budget={key.budget:g}", key.recipe],
        "id": hashlib.sha1(where.encode()).hexdigest()[:16],
    }
    for name, value in defaults.items():
        if cfg.run.get(name) is None:
            cfg.run[name] = value


@runtime_checkable
class ResultLogger(Protocol):
    """A logger that takes the run's result, says where it logged and ends its run (W&B's,
    ``sdexp.tracking.loggers``): the run imports nothing of the tracking."""

    def log_result(self, summary: dict, row: dict | None) -> None: ...
    def where(self) -> str: ...
    def finish(self, exit_code: int) -> None: ...


def check_launch(cfg: DictConfig) -> None:
    """No DDP inside a local multirun: Lightning relaunches the command line in each child
    process, which would run the whole sweep again (under SLURM nothing is relaunched)."""
    if console.in_multirun() and "ddp" in str(cfg.trainer.get("strategy")) and not in_job():
        raise ConfigError(
            "trainer",
            "trainer=ddp relaunches the command line in every child process, which inside a "
            "local multirun runs the whole sweep again: run DDP as a single run, or sweep under "
            "SLURM with one task per GPU (hydra/launcher=slurm_ddp)",
        )


def train(cfg: DictConfig, checked: Checked | None = None) -> RunResult:
    """Train one network with stochastic depth; write and return its results.json (not again
    for a finished run). ``checked``: what ``check_config(cfg)`` built, if the caller did."""
    out = Path(cfg.output_dir)
    checked = checked or check_config(cfg)
    check_launch(cfg)
    console.quiet_libraries()
    set_threads(cfg.threads)
    key, config = run_key(cfg, checked)
    check_kinds(out)
    try:  # the run's own finished results.json
        done = completed(out, key)
    except UnreadableResult as error:
        log.warning(f"{error}; treated as not finished")
        done = None
    made = other_code(done.code) if done is not None else None
    if done is not None and not (made and cfg.rerun_other_code):
        note = (
            f", made by other code ({made}; this is {this_code()}): rerun_other_code=true trains "
            "it again"
            if made is not None
            else ""
        )
        log.info(f"{job_label()}{key.name}: finished before (results.json says ok){note}: {out}")
        return done
    datamodule = checked.datamodule
    datamodule.prepare_data()  # missing data stops the run before it claims the directory
    datamodule.setup("fit")  # and so does data it cannot split (dataset.val_size)
    # Under DDP every rank runs train(); rank 0 holds the directory for all of them.
    rank_zero = rank_zero_only.rank == 0
    with claim(out, key, config, cfg.overwrite, lock=rank_zero, fresh=done is not None) as resume:
        if rank_zero:
            keep_hydra_record(out, cfg)
        console.open_run_log()
        if done is not None and rank_zero:
            log.info(
                f"{job_label()}{key.name}: made by other code ({made}): its results.json and "
                "checkpoints are discarded, and it trains again (rerun_other_code=true)"
            )
        return fit_and_test(cfg, key, config, checked, resume)


def fit_and_test(
    cfg: DictConfig, key: RunKey, config: dict, checked: Checked, resume: Resume | None
) -> RunResult:
    """Train and test in the claimed directory. Whatever fails from here on is in results.json
    and one error line; a signal stops the run with one line and no results.json."""
    out, datamodule = Path(cfg.output_dir), checked.datamodule
    result = RunResult(
        key=key,
        config=config,
        status="running",
        metric=METRIC[datamodule.task],
        report=cfg.recipe.report,
        code=current_code(),
    )
    model: ResidualNetwork | None = None
    trainer: pl.Trainer | None = None
    loggers: list[ResultLogger] = []
    timer, epoch_timer, io = Timer(), EpochTimer(), AtomicCheckpointIO()
    failure: Exception | None = None
    start = time.monotonic()
    try:
        datamodule.setup("fit")

        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        model = instantiate(
            cfg.model,
            input_shape=datamodule.input_shape,
            num_outputs=datamodule.num_outputs,
            mask_seed=cfg.seed,
        )
        module = StochasticDepthModule(
            model,
            checked.mode,
            checked.budget,
            datamodule.task,
            datamodule.num_outputs,
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(cfg.scheduler) if cfg.scheduler else None,
            dropped_blocks=cfg.recipe.dropped_blocks,
            speed=Speed(**cfg.speed),
        )
        fill_run_names(cfg, key)
        logger = instantiate(cfg.logger) if cfg.logger else False
        loggers = [logger] if isinstance(logger, ResultLogger) else []
        if logger:
            run = {"key": asdict(key), "code": current_code().to_dict()}  # beside the config
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True) | run)
        validate = datamodule.has_validation
        checkpoints = checkpointing(out, module.metric_name, validate)
        extra: list[Callback] = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
        bar = cfg.trainer.enable_progress_bar and sys.stderr.isatty()  # a terminal's only
        progress = [] if bar else [ProgressLines()]
        ours = [*checkpoints, timer, epoch_timer, RunIdentity(key, config), *progress]
        trainer = instantiate(
            cfg.trainer,
            logger=logger,
            callbacks=[*ours, *extra],
            plugins=[io, *cluster_plugins()],
            limit_val_batches=None if validate else 0,
            enable_progress_bar=bar,
        )
        if trainer.is_global_zero:
            log.info(console.start_line(key, str(trainer.strategy.root_device), str(out)))
            if resume is not None:
                log.info(f"resuming from {resume.path} after epoch {resume.epochs} of {key.epochs}")
        raise_if_stopped()
        ckpt_path = resume.path if resume is not None else None
        trainer.fit(module, datamodule=LightningData(datamodule), ckpt_path=ckpt_path)
        # Read now: loading the best checkpoint to test it restores the timers' saved state.
        result.train_time_s = timer.time_elapsed("train")
        result.epoch_times_s = list(epoch_timer.times)  # every epoch, validation excluded
        test(trainer, module, trainer.datamodule, result, checkpoints[0] if validate else None)
        check_finite(result)
        if rank_zero_only.rank == 0:  # predictions.csv: those of every model the run tested
            tested = {TESTED_MODELS[stage]: kept for stage, kept in module.predictions.items()}
            write_predictions(out, key.identity, result.metric, tested)
        result.status = "ok"
    except BaseException as error:
        if (signum := stop_signal()) is not None:  # Lightning turns Ctrl-C into sys.exit(1)
            stop = Stopped(signum)
            if rank_zero_only.rank == 0:
                log.error(stopped(signum, io, resume, key, out))
            raise mark_reported(stop) from None
        if isinstance(error, Exception):
            failure, result.status = error, "failed"
            result.reason = f"{type(error).__name__}: {flat_message(error)}"
        raise
    finally:
        if model is not None:
            vars(result).update(gate_record(model.gate))
        if trainer is not None:
            if result.train_time_s is None:  # fit did not end
                result.train_time_s = timer.time_elapsed("train")
                result.epoch_times_s = list(epoch_timer.times)
            result.device = device_kind(trainer.strategy.root_device)
            result.device_share = trainer.world_size / runs_sharing_device()
        try:  # a stopped run (a signal, preemption) writes none; under DDP rank 0 writes
            if result.status != "running" and rank_zero_only.rank == 0:
                conclude(result, failure, out, loggers, datamodule, time.monotonic() - start)
        finally:
            for logger in loggers:
                logger.finish(exit_code=0 if result.status == "ok" else 1)
    return result


def conclude(
    result: RunResult,
    failure: Exception | None,
    out: Path,
    loggers: list[ResultLogger],
    datamodule: TensorDataModule,
    elapsed: float,
) -> None:
    """Write results.json, give W&B the result and end its run, and print the run's last line:
    its result, or its failure as the one error line (``failure`` is then marked reported)."""
    try:
        path = write_result(out, result)
    except OSError as error:
        what = result.reason if result.status == "failed" else "the run ended ok"
        log.error(f"{what}; could not write {out / RESULTS_FILE} ({flat_message(error)})")
        raise mark_reported(error) from failure
    for logger in loggers:
        logger.log_result(result.summary(), result.history_row())
    where = "".join(logger.where() for logger in loggers)
    for logger in loggers:  # what W&B says of it, before the run's last line
        logger.finish(exit_code=0 if result.status == "ok" else 1)
    if where and not job_label():
        log.info(where)  # a sweep's closing summary says it once for all its jobs
    line = console.end_line(result, str(path), getattr(datamodule, "baseline", ""), elapsed)
    if result.status == "ok":
        log.info(line)
    else:
        log.error(f"{job_label()}{line}")
        if failure is not None:
            mark_reported(failure)


def stopped(signum: int, io: AtomicCheckpointIO, resume: Resume | None, key, out: Path) -> str:
    """The line of a run stopped by a signal: what it keeps, and that the same command resumes."""
    epochs = io.saved[LAST] + 1 if LAST in io.saved else resume.epochs if resume else 0
    kept = (
        f"{CHECKPOINTS}/{LAST} (after epoch {epochs} of {key.epochs}) is kept: the same command "
        f"resumes from it"
        if epochs
        else "no epoch had ended: the same command starts over"
    )
    return f"{job_label()}stopped by {signal_name(signum)}: {kept}: {out}"


class NonFiniteMetricError(RuntimeError):
    """A test or validation metric is NaN or infinite: the run diverged (its training loss may
    stay finite: ``optimizer.momentum=2``)."""


#: The metrics a finished run reports, checked to be finite (``check_finite``).
METRICS = ("test_final", "test_best", "test_loss", "best_val")


def check_finite(result: RunResult) -> None:
    """NonFiniteMetricError naming each of ``METRICS`` that is NaN or infinite."""
    values = {name: getattr(result, name) for name in METRICS}
    if bad := [f"{k} {v}" for k, v in values.items() if v is not None and not math.isfinite(v)]:
        raise NonFiniteMetricError(
            f"{', '.join(bad)}: not finite, the run diverged (stored as null)"
        )


def test(
    trainer: pl.Trainer,
    module: StochasticDepthModule,
    datamodule: LightningData,
    result: RunResult,
    checkpoint: ModelCheckpoint | None,
) -> None:
    """The test metrics of the final model and, with validation, of the best checkpoint."""
    metric = module.metric_name
    final = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    result.test_final, result.test_loss = final[f"test/{metric}"], final["test/loss"]
    if checkpoint is None or checkpoint.best_model_score is None:  # validation never ran
        return
    result.best_val = checkpoint.best_model_score.item()
    module.test_stage = "test_best"
    best = trainer.test(
        module, datamodule=datamodule, ckpt_path=checkpoint.best_model_path, verbose=False
    )[0]
    result.test_best = best[f"test_best/{metric}"]
