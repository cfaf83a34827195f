"""A run's launch checks and W&B identity (``sdexp.run.training``), without training (runs in
process: tests/integration/test_training.py)."""

from __future__ import annotations

import pytest
from hydra.core.hydra_config import HydraConfig
from lightning_fabric.plugins.environments import SLURMEnvironment

from sdexp.errors import ConfigError
from sdexp.run.identity import run_key
from sdexp.run.slurm import cluster_plugins
from sdexp.run.training import check_launch, fill_run_names
from tests.helpers import compose_config


def test_a_run_keeps_its_wandb_identity(make_config):
    first, second = make_config("logger=wandb"), make_config("logger=wandb")
    fill_run_names(first, run_key(first)[0])
    fill_run_names(second, run_key(second)[0])
    assert first.run.id == second.run.id  # the same output dir and run: the same W&B run
    assert first.logger.resume == "allow"
    other = make_config("logger=wandb", "optimizer.lr=0.05")  # another run in the same dir
    fill_run_names(other, run_key(other)[0])
    assert other.run.id != first.run.id and other.run.name != first.run.name


def test_lightning_leaves_requeueing_to_sdexp_and_submitit(monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert cluster_plugins() == []  # not on SLURM
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    (environment,) = cluster_plugins()
    assert isinstance(environment, SLURMEnvironment) and not environment.auto_requeue


def test_ddp_is_refused_inside_a_local_multirun():
    cfg = compose_config(["trainer=ddp", "hydra.mode=MULTIRUN"], hydra=True)
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(ConfigError, match="relaunches the command line"):
            check_launch(cfg)
    finally:
        HydraConfig.instance().cfg = None
    check_launch(compose_config(["trainer=ddp"]))  # a single run may
    check_launch(compose_config([]))
