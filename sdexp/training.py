"""The task function: one configured run, from config checks to ``results.json``.

``train(cfg)`` is a plain function (``train.py`` only wraps it in ``@hydra.main``), so tests and
scripts call it with a composed config. The order matters for bad input: the budget and the mode
are checked first (seconds), then the data (before any model is built), then training starts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, Timer

import sdexp
from sdexp import loggers
from sdexp.config import check_config
from sdexp.data import TensorDataModule
from sdexp.depth import depth_variance, expected_depth
from sdexp.models import ResidualNetwork
from sdexp.module import StochasticDepthModule
from sdexp.results import write_results


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


def train(cfg: DictConfig) -> dict:
    """Train one network with stochastic depth; write and return the contents of results.json."""
    out = Path(cfg.output_dir)
    mode = check_config(cfg)
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
    budget = mode.effective_budget(cfg.budget)
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
    results = {
        "dataset": datamodule.name,
        "model": model.name,
        "mode": mode.name,
        "budget": budget,
        "seed": cfg.seed,
        "stable": model.stable,
        "num_blocks": model.num_blocks,
        "epochs": cfg.trainer.max_epochs,
    }
    fill_run_identity(cfg, results)

    logger = instantiate(cfg.logger) if cfg.logger else False
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    validate = datamodule.has_validation
    checkpoint = checkpointing(cfg, module.metric_name, validate)
    timer = Timer()
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        logger=logger,
        callbacks=[checkpoint, timer],
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
            "version": sdexp.__version__,
        }
        if results.get("status"):  # an interrupted run (KeyboardInterrupt, preemption) writes none
            write_results(out, results)
        loggers.finish()
    return results
