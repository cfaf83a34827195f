"""The task function: one configured run, from config checks to ``results.json``.

``train(cfg)`` is a plain function (``train.py`` only wraps it in ``@hydra.main``), so tests and
scripts call it with a composed config. The order matters:

1. the config is checked by type and range (``sdexp.config``: seconds, before any data);
2. the run's key is computed from the config alone (``sdexp.results``), and a finished
   ``results.json`` of the same identity ends the job here;
3. the output directory is claimed (``sdexp.rundir``: a lock, and nothing of another run);
4. the data, the model and the Trainer; training resumes from ``checkpoints/last.ckpt``;
5. the test set, for the final model and for the best-validation checkpoint; ``results.json``
   (failed runs too, with the reason) and the W&B summary.
"""

from __future__ import annotations

import hashlib
import logging
import os
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, Timer
from pytorch_lightning.utilities import rank_zero_only

import sdexp
from sdexp import console, loggers
from sdexp.checkpoints import AtomicCheckpointIO, RunIdentity
from sdexp.config import check_config
from sdexp.data import TensorDataModule
from sdexp.errors import ConfigError
from sdexp.models import ResidualNetwork
from sdexp.module import EpochTimer, LightningData, ProgressLines, Speed, StochasticDepthModule
from sdexp.results import RunKey, RunResult, UnreadableResult, completed, run_key, write_result
from sdexp.rundir import claim
from sdexp.sharing import set_threads
from sdexp.subnetwork import depth_variance, expected_depth
from sdexp.sweep import SWEEP_JOBS

log = logging.getLogger("sdexp")


def fill_run_names(cfg: DictConfig, key: RunKey) -> None:
    """W&B name, group, tags and id from the run's key, unless the config sets them. The id
    hashes the output directory and the identity: a re-run of the same run continues its W&B
    run, another configuration in the same directory (``overwrite=true``) gets its own."""
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


def checkpointing(cfg: DictConfig, metric: str, validate: bool) -> ModelCheckpoint:
    """``last.ckpt`` every epoch (for resuming) and ``best.ckpt`` by validation metric."""
    monitor = {"monitor": f"val/{metric}", "mode": "min", "filename": "best"} if validate else {}
    return ModelCheckpoint(dirpath=Path(cfg.output_dir) / "checkpoints", save_last=True, **monitor)


def check_launch(cfg: DictConfig) -> None:
    """DDP must not start inside a local multirun: Lightning relaunches the command line in each
    child process, which would run the whole sweep again there. Under SLURM every rank is a
    task of its own (one per GPU) and nothing is relaunched."""
    in_multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if in_multirun and "ddp" in str(cfg.trainer.get("strategy")) and not SLURMEnvironment.detect():
        raise ConfigError(
            "trainer",
            "trainer=ddp relaunches the command line in every child process, which inside a "
            "local multirun runs the whole sweep again: run DDP as a single run, or sweep under "
            "SLURM with one task per GPU (hydra/launcher=slurm_ddp)",
        )


def cluster_plugins() -> list:
    """Under SLURM, submitit requeues a preempted or timed-out job (``max_num_timeout``) and the
    requeued job resumes from ``last.ckpt``; Lightning's own SLURM auto-requeue is turned off so
    that only one of them handles the signal."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def finished(out: Path, key: RunKey) -> RunResult | None:
    """The run's own finished results.json in ``out``; an unreadable one counts as not finished."""
    try:
        return completed(out, key)
    except UnreadableResult as error:
        log.warning(f"{error}; treated as not finished")
        return None


def summary(result: RunResult) -> dict:
    """What a W&B dashboard filters and groups by: the key's plain fields and the numbers."""
    key = result.key
    return {
        **{k: getattr(key, k) for k in ("dataset", "model", "mode", "budget", "seed", "recipe")},
        "setup": key.setup,
        "status": result.status,
        "reason": result.reason,
        "metric": result.metric,
        "report": result.report,
        "test": result.test,
        "test_final": result.test_final,
        "test_best": result.test_best,
        "best_val": result.best_val,
        "expected_depth": result.expected_depth,
        "depth_variance": result.depth_variance,
        "epoch_time_s": statistics.median(result.epoch_times_s) if result.epoch_times_s else None,
    }


def train(cfg: DictConfig) -> RunResult:
    """Train one network with stochastic depth; write and return its results.json.

    A run whose results.json already says "ok" for the same identity is not trained again; a
    run with ``checkpoints/last.ckpt`` of the same identity resumes from it; a directory that
    holds a run of another identity stops the run (``overwrite=true`` discards that run).
    """
    out = Path(cfg.output_dir)
    mode = check_config(cfg)
    check_launch(cfg)
    console.quiet_libraries()
    set_threads(cfg.threads)
    key, config = run_key(cfg)
    if (done := finished(out, key)) is not None:
        log.info(f"{job_label()}{key.name}: finished before (results.json says ok): {out}")
        return done
    datamodule: TensorDataModule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.prepare_data()  # missing data stops the run before it claims the directory
    # Under DDP every rank runs train(); rank 0 holds the directory for all of them.
    with claim(out, key, config, cfg.overwrite, lock=rank_zero_only.rank == 0) as resume_from:
        return fit_and_test(cfg, key, config, mode, datamodule, resume_from)


def job_label() -> str:
    """The label of a job of a sweep the grid sweeper launched ("job 3/12: "), else ""."""
    if not (total := os.environ.get(SWEEP_JOBS)) or not HydraConfig.initialized():
        return ""
    return f"job {HydraConfig.get().job.num + 1}/{total}: "


def fit_and_test(
    cfg: DictConfig,
    key: RunKey,
    config: dict,
    mode,
    datamodule: TensorDataModule,
    resume_from: Path | None,
) -> RunResult:
    out = Path(cfg.output_dir)
    datamodule.setup("fit")

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model: ResidualNetwork = instantiate(
        cfg.model,
        input_shape=datamodule.input_shape,
        num_outputs=datamodule.num_outputs,
        mask_seed=cfg.seed,
    )
    module = StochasticDepthModule(
        model,
        mode,
        key.budget,
        datamodule.task,
        datamodule.num_outputs,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.scheduler else None,
        dropped_blocks=cfg.recipe.dropped_blocks,
        speed=Speed(**cfg.speed),
    )
    fill_run_names(cfg, key)
    logger = instantiate(cfg.logger) if cfg.logger else False
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True) | {"key": asdict(key)})
    validate = datamodule.has_validation
    checkpoint = checkpointing(cfg, module.metric_name, validate)
    timer, epoch_timer = Timer(), EpochTimer()
    extra: list[Callback] = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    bar = console.progress_bar_wanted(cfg.trainer.enable_progress_bar)
    progress = [] if bar else [ProgressLines()]
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        logger=logger,
        callbacks=[checkpoint, timer, epoch_timer, RunIdentity(key, config), *progress, *extra],
        plugins=[AtomicCheckpointIO(), *cluster_plugins()],
        limit_val_batches=None if validate else 0,
        enable_progress_bar=bar,
    )
    if trainer.is_global_zero:
        device = str(trainer.strategy.root_device)
        log.info(console.start_line(key, device, str(out), job_label()))
        if resume_from is not None:
            log.info(f"resuming from {resume_from}")
    result = RunResult(
        key=key,
        config=config,
        status="running",
        metric=module.metric_name,
        report=cfg.recipe.report,
        version=sdexp.__version__,
    )
    start = time.monotonic()
    try:
        trainer.fit(module, datamodule=LightningData(datamodule), ckpt_path=resume_from)
        # Read now: loading the best checkpoint to test it restores the Timer's saved state.
        result.train_time_s = timer.time_elapsed("train")
        test(trainer, module, trainer.datamodule, result, checkpoint if validate else None)
        result.status = "ok"
    except Exception as error:
        result.status, result.reason = "failed", f"{type(error).__name__}: {error}"
        raise
    finally:
        gate = model.gate
        result.survival, result.sensitivity = gate.survival, gate.sensitivity
        result.expected_depth = expected_depth(gate.survival)
        result.depth_variance = depth_variance(gate.survival)
        if result.train_time_s is None:  # fit did not end
            result.train_time_s = timer.time_elapsed("train")
        result.epoch_times_s = epoch_timer.times  # this process's epochs, validation excluded
        # An interrupted run (KeyboardInterrupt, preemption) writes none; under DDP rank 0 writes.
        if result.status != "running" and trainer.is_global_zero:
            path = write_result(out, result)
            numbers = summary(result)
            row = {k: numbers[k] for k in ("budget", "test", "expected_depth", "epoch_time_s")}
            loggers.log_result(trainer.loggers, numbers, row if result.status == "ok" else None)
            if not job_label() and (where := loggers.where(trainer.loggers)):
                log.info(where)  # a sweep's closing summary says it once for all its jobs
            baseline = getattr(datamodule, "baseline", "")
            log.info(console.end_line(result, str(path), baseline, time.monotonic() - start))
        loggers.finish(exit_code=0 if result.status == "ok" else 1)
    return result


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
    best = trainer.test(module, datamodule=datamodule, ckpt_path="best", verbose=False)[0]
    result.test_best = best[f"test_best/{metric}"]
