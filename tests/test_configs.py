"""Every option of every config group composes and instantiates."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from sdexp.loader import TensorDataModule
from sdexp.models import ResidualNetwork
from sdexp.results import run_key
from sdexp.survival import Mode
from sdexp.training import fill_run_names
from sdexp.wandb_access import finish
from tests.conftest import CONF


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("option", options("model"))
def test_model(make_config, option):
    cfg = make_config(f"model={option}")
    model = instantiate(cfg.model, input_shape=(3, 32, 32), num_outputs=10, mask_seed=0)
    assert isinstance(model, ResidualNetwork)
    assert model.num_blocks == {"resnet110": 54, "resnet56": 27, "vanilla": 50}[option]
    assert model.num_blocks == type(model).blocks_for(cfg.model.depth)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("option", options("mode"))
def test_mode(make_config, option):
    mode = instantiate(make_config(f"mode={option}").mode)
    assert isinstance(mode, Mode) and mode.name == option


@pytest.mark.parametrize("option", options("dataset"))
def test_dataset(make_config, option):
    cfg = make_config(f"dataset={option}")
    datamodule = instantiate(cfg.dataset, seed=0)
    assert isinstance(datamodule, TensorDataModule)
    assert datamodule.name == option.removesuffix("_paper")
    assert cfg.trainer.max_epochs > 0 and cfg.optimizer.lr > 0


@pytest.mark.parametrize(
    ("overrides", "recipe"),
    [
        ([], "reference"),
        (["dataset=cifar100"], "reference"),
        (["dataset=toy", "model=vanilla"], "toy"),
        (["recipe=legacy"], "legacy"),
        (["recipe=huang2016"], "huang2016"),
    ],
)
def test_the_dataset_chooses_its_recipe(make_config, overrides, recipe):
    cfg = make_config(*overrides)
    assert cfg.recipe.name == recipe and run_key(cfg)[0].recipe == recipe


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        # the reference code (felixgwu 298758d): batch 64, no normalisation, DownsampleB, decayed
        # dropped blocks, lr steps counted from epoch 1, the best-validation checkpoint
        ("reference", (64, False, "avgpool", "decay", [81, 122], "best", True, 164)),
        ("legacy", (128, True, "stride", "frozen", [82, 123], "final", True, 164)),
        ("huang2016", (128, True, "avgpool", "decay", [249, 374], "best", True, 500)),
    ],
)
def test_recipes(make_config, recipe, expected):
    cfg = make_config(f"recipe={recipe}")
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    milestones = sorted(instantiate(cfg.scheduler)(optimizer).milestones)
    found = (
        cfg.dataset.batch_size,
        cfg.dataset.normalize,
        cfg.model.shortcut,
        cfg.recipe.dropped_blocks,
        milestones,
        cfg.recipe.report,
        optimizer.defaults["nesterov"],
        cfg.trainer.max_epochs,
    )
    assert found == expected
    assert (optimizer.defaults["lr"], optimizer.defaults["momentum"]) == (0.1, 0.9)
    assert optimizer.defaults["weight_decay"] == 1e-4


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer(make_config, option):
    cfg = make_config(f"trainer={option}")
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert isinstance(trainer, pl.Trainer)


def test_optimizer_and_scheduler(make_config):
    cfg = make_config()
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    scheduler = instantiate(cfg.scheduler)(optimizer)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    # lr x0.1 from epoch 82 of 164 and x0.01 from 123, counted from 1: milestones 81 and 122
    assert scheduler.milestones == {81: 1, 122: 1}


@pytest.mark.parametrize("option", options("logger"))
def test_logger(make_config, option):
    cfg = make_config(f"logger={option}")
    fill_run_names(cfg, run_key(cfg)[0])
    logger = instantiate(cfg.logger) if cfg.logger else None
    expected = {"wandb": WandbLogger, "csv": CSVLogger, "none": type(None)}[option]
    assert isinstance(logger, expected)
    finish()  # the W&B logger starts its run at once: end it, as train() does
