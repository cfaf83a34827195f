"""The config groups that build a Lightning Trainer or a logger (a W&B run) instantiate."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
from hydra.utils import instantiate
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from sdexp.run.identity import run_key
from sdexp.run.training import fill_run_names
from sdexp.tracking.wandb_access import finish
from tests.helpers import config_options


@pytest.mark.parametrize("option", config_options("trainer"))
def test_trainer(make_config, option):
    cfg = make_config(f"trainer={option}")
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert isinstance(trainer, pl.Trainer)


@pytest.mark.parametrize("option", config_options("logger"))
def test_logger(make_config, option):
    cfg = make_config(f"logger={option}")
    fill_run_names(cfg, run_key(cfg)[0])
    logger = instantiate(cfg.logger) if cfg.logger else None
    expected = {"wandb": WandbLogger, "csv": CSVLogger, "none": type(None)}[option]
    assert isinstance(logger, expected)
    finish()  # the W&B logger starts its run at once: end it, as train() does
