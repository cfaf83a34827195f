"""The task function: one configured run, from config checks to ``results.json``.

``train(cfg)`` is a plain function (``train.py`` only wraps it in ``@hydra.main``), so tests and
scripts call it with a composed config. The order matters for bad input: the budget and the mode
are checked first (seconds), then the data (before any model is built), then training starts.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, Timer

import sdexp
from sdexp import loggers
from sdexp.config import check_config
from sdexp.data import TensorDataModule
from sdexp.depth import depth_variance, expected_depth
from sdexp.errors import ConfigError
from sdexp.models import ResidualNetwork
from sdexp.module import EpochTimer, StochasticDepthModule
from sdexp.results import write_results
from sdexp.sweep import completed, run_identity

log = logging.getLogger(__name__)


def fill_run_identity(cfg: DictConfig, identity: dict) -> None:
    """W&B name, group, tags and id from the run's identity, unless the config sets them."""
    budget, seed = identity["budget"], identity["seed"]
    defaults = {
        "name": f"{identity['dataset']}-{identity['model']}-{identity['mode']}-b{budget:g}-s{seed}",
        "group": f"{identity['dataset']}-{identity['model']}",
        "tags": [identity["dataset"], identity["model"], identity["mode"], f"budget={budget:g}"],
        "id": hashlib.sha1(str(Path(cfg.output_dir).resolve()).encode()).hexdigest()[:16],
    }
    for key, value in defaults.items():
        if cfg.run.get(key) is None:
            cfg.run[key] = value


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


def train(cfg: DictConfig) -> dict:
    """Train one network with stochastic depth; write and return the contents of results.json.

    A run whose results.json already says "ok" for the same run (``sdexp.sweep.IDENTITY_KEYS``)
    is not trained again; a run with ``checkpoints/last.ckpt`` resumes from it.
    """
    out = Path(cfg.output_dir)
    mode = check_config(cfg)
    check_launch(cfg)
    datamodule: TensorDataModule = instantiate(cfg.dataset)
    datamodule.prepare_data()
    datamodule.setup("fit")

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model: ResidualNetwork = instantiate(
        cfg.model,
        input_shape=datamodule.input_shape,
        num_outputs=datamodule.num_outputs,
        mask_seed=cfg.seed,
    )
    results = run_identity(cfg, datamodule, model, mode)
    if (done := completed(out, results)) is not None:
        log.info(f"{out}: results.json says this run finished (status ok): skipping it")
        return done
    budget = results["budget"]
    module = StochasticDepthModule(
        model,
        mode,
        budget,
        datamodule.task,
        datamodule.num_outputs,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
        **cfg.speed,
    )
    fill_run_identity(cfg, results)

    logger = instantiate(cfg.logger) if cfg.logger else False
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    validate = datamodule.has_validation
    checkpoint = checkpointing(cfg, module.metric_name, validate)
    timer, epoch_timer = Timer(), EpochTimer()
    extra: list[Callback] = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        logger=logger,
        callbacks=[checkpoint, timer, epoch_timer, *extra],
        plugins=cluster_plugins(),
        limit_val_batches=None if validate else 0,
    )
    last = out / "checkpoints" / "last.ckpt"
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=last if last.exists() else None)
        test = trainer.test(module, datamodule=datamodule, verbose=False)[0]
        metric = module.metric_name
        best = checkpoint.best_model_score
        results |= {
            f"test_{metric}": test[f"test/{metric}"],
            "test_loss": test["test/loss"],
            f"best_val_{metric}": None if best is None else best.item(),
            "status": "ok",
        }
    except Exception as error:
        results |= {"status": "failed", "reason": f"{type(error).__name__}: {error}"}
        raise
    finally:
        gate = model.gate
        results |= {
            "survival": gate.survival,
            "sensitivity": gate.sensitivity,
            "expected_depth": expected_depth(gate.survival),
            "depth_variance": depth_variance(gate.survival),
            "train_time_s": timer.time_elapsed("train"),
            "epoch_times_s": epoch_timer.times,  # this process's epochs, validation excluded
            "version": sdexp.__version__,
        }
        # an interrupted run (KeyboardInterrupt, preemption) writes none; under DDP rank 0 writes
        if results.get("status") and trainer.is_global_zero:
            write_results(out, results)
        loggers.finish()
    return results
