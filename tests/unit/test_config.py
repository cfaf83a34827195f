"""The run config's checks (``sdexp.run.config``): bad input is refused before anything trains or is
written, naming the option and what is allowed."""

from __future__ import annotations

import pytest

from sdexp.errors import ConfigError
from sdexp.run.config import check_config
from sdexp.run.failures import find_config_error
from sdexp.run.training import train


@pytest.mark.parametrize(
    ("overrides", "option", "message"),
    [
        (["budget=0"], "budget", "(0, 1]"),
        (["budget=1.5"], "budget", "(0, 1]"),
        (["mode=linear", "budget=0.3"], "budget", "smallest budget is (L-1)/(2L)"),
        (["mode=sensemode", "mode.p_min=1.2"], "mode.p_min", "[0, 1)"),
        (["mode=sensemode", "mode.p_min=0.2", "budget=0.1"], "budget", "mode.p_min = 0.2"),
        (["mode=sensemode", "mode.rule=inverse"], "mode.rule", "proportional"),
        (["dataset=toy"], "model", "model=vanilla"),
        (["model.depth=100"], "model.depth", "6n + 2"),
        (["budget=abc"], "budget", "a number, got 'abc'"),
        (["seed=-1"], "seed", "an integer in [0, 4294967295], got -1"),
        (["seed=abc"], "seed", "an integer, got 'abc'"),
        (["seed=1.5"], "seed", "an integer, got 1.5"),
        (["model.depth=abc"], "model.depth", "an integer, got 'abc'"),
        (["trainer.max_epochs=0"], "trainer.max_epochs", "at least 1, got 0"),
        (["trainer.max_epochs=-1"], "trainer.max_epochs", "at least 1, got -1"),
        (["trainer.max_epochs=abc"], "trainer.max_epochs", "got 'abc'"),
        (["trainer.precision=15"], "trainer.precision", "one of"),
        (["optimizer.lr=-0.1"], "optimizer", "Invalid learning rate"),
        (["optimizer.nesterov=maybe"], "optimizer.nesterov", "true or false, got 'maybe'"),
        (["mode=sensemode", "mode.batches=abc"], "mode.batches", "an integer"),
        (["recipe.report=sometimes"], "recipe.report", "one of ['best', 'final']"),
        (["recipe.dropped_blocks=thawed"], "recipe.dropped_blocks", "one of ['decay', 'frozen']"),
        (["model.shortcut=conv"], "model.shortcut", "one of ['avgpool', 'stride']"),
        (["dataset.batch_size=0"], "dataset.batch_size", "a positive integer, got 0"),
        (["dataset.val_size=0"], "recipe.report", "best needs a validation split"),
        (["overwrite=yes"], "overwrite", "true or false, got 'yes'"),
        (["rerun_other_code=maybe"], "rerun_other_code", "true or false, got 'maybe'"),
        (["~budget"], "budget", "missing: the run needs it; set it (budget=...)"),
        (["~mode"], "mode", "missing: the run needs it; set it (mode=...)"),
        (["scheduler.fractions=[0.5,2]"], "scheduler.fractions", "fractions in (0, 1]"),
        (["+model.colour=red"], "model.colour", "not an option of sdexp.models.CifarResNet"),
        (["+speed.turbo=true"], "speed.turbo", "not an option of speed"),
        (["+budgett=0.3"], "budgett", "not an option of the run config"),
        (["model=vanilla", "model.width=0"], "model.width", "a positive integer, got 0"),
        (["model=resnet56", "model.widths=[16,0,64]"], "model.widths", "three positive"),
        (["trainer.devices=2"], "trainer.devices", "2 devices need trainer=ddp"),
        (["trainer.devices=[0,1]"], "trainer.devices", "2 devices need trainer=ddp"),
        (["trainer.limit_train_batches=0"], "trainer.limit_train_batches", "got 0"),
        (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches", "in (0, 1]"),
    ],
)
def test_bad_input_fails_before_training(make_config, tmp_path, overrides, option, message):
    with pytest.raises(Exception) as error:
        train(make_config(*overrides, "logger=none"))
    config_error = find_config_error(error.value)
    assert isinstance(config_error, ConfigError)
    assert config_error.option == option and message in str(config_error)
    assert not (tmp_path / "run").exists()  # nothing written


def test_several_devices_need_ddp_that_handles_dropped_blocks(make_config):
    check_config(make_config("trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"))
    strategy = "+trainer.strategy={_target_:pytorch_lightning.strategies.DDPStrategy,"
    check_config(make_config("trainer.devices=2", strategy + "find_unused_parameters:true}"))
    with pytest.raises(ConfigError, match="which strategy ddp cannot reduce"):
        check_config(make_config("trainer.devices=2", "+trainer.strategy=ddp"))
