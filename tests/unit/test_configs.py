"""Every option of every config group composes and instantiates (the Trainer and the loggers:
tests/integration/test_configs.py); the sweep and launcher presets compose."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sdexp.loader import TensorDataModule
from sdexp.models import ResidualNetwork
from sdexp.run.identity import run_key
from sdexp.survival import Mode
from tests.helpers import compose_config, config_options


@pytest.mark.parametrize("option", config_options("model"))
def test_model(make_config, option):
    cfg = make_config(f"model={option}")
    model = instantiate(cfg.model, input_shape=(3, 32, 32), num_outputs=10, mask_seed=0)
    assert isinstance(model, ResidualNetwork)
    assert model.num_blocks == {"resnet110": 54, "resnet56": 27, "vanilla": 50}[option]
    assert model.num_blocks == type(model).blocks_for(cfg.model.depth)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("option", config_options("mode"))
def test_mode(make_config, option):
    mode = instantiate(make_config(f"mode={option}").mode)
    assert isinstance(mode, Mode) and mode.name == option


@pytest.mark.parametrize("option", config_options("dataset"))
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


def test_optimizer_and_scheduler(make_config):
    cfg = make_config()
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    scheduler = instantiate(cfg.scheduler)(optimizer)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    # lr x0.1 from epoch 82 of 164 and x0.01 from 123, counted from 1: milestones 81 and 122
    assert scheduler.milestones == {81: 1, 122: 1}


def test_digits_recipe(make_config):
    cfg = make_config("dataset=digits", "model=resnet56", "model.depth=20")
    key, _ = run_key(cfg)
    assert (key.dataset, key.model, key.recipe, key.num_blocks) == (
        "digits",
        "resnet20",
        "short",
        9,
    )
    assert cfg.dataset.batch_size == 64 and cfg.dataset.normalize is True
    assert cfg.trainer.max_epochs == 50 and cfg.recipe.report == "final"
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (0.1, 1e-4)


PRESETS = [
    "table2_cifar10",
    "table2_cifar100",
    "table2_cifar10_resnet56",
    "table2_cifar100_resnet56",
]


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_compose(preset):
    cfg = compose_config([f"+sweep={preset}"], hydra=True)
    dataset, model = {
        "table2_cifar10": ("cifar10", "resnet110"),
        "table2_cifar100": ("cifar100", "resnet110"),
        "table2_cifar10_resnet56": ("cifar10", "resnet56"),
        "table2_cifar100_resnet56": ("cifar100", "resnet56"),
    }[preset]
    assert cfg.dataset.name == dataset and cfg.model.depth == int(model[6:])
    assert cfg.trainer.max_epochs == 164
    assert cfg.run.group == cfg.logger.group == preset  # one W&B group per sweep
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper._target_.endswith("BudgetGridSweeper")
    assert dict(cfg.hydra.sweeper.params) == {
        "mode": "sensemode,uniform,linear,none",
        "budget": "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
        "seed": "0,1,2,3",
    }
    sweep = OmegaConf.to_container(cfg.hydra.sweep)  # not resolved
    assert sweep == {  # Hydra's default subdir: the sweeper names each job's (job_overrides)
        "dir": "outputs/sweeps/${hydra.runtime.choices.sweep}",
        "subdir": "${hydra.job.num}",
    }
    assert cfg.hydra.sweep.dir == f"outputs/sweeps/{preset}"


@pytest.mark.parametrize(
    ("launcher", "gpus", "tasks"), [("slurm", 1, 1), ("slurm_ddp", 4, 4), ("slurm_cpu", None, 1)]
)
def test_slurm_presets(launcher, gpus, tasks):
    cfg = compose_config(["+sweep=table2_cifar10", f"hydra/launcher={launcher}"], hydra=True)
    slurm = cfg.hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.gpus_per_node, slurm.tasks_per_node) == (gpus, tasks)
    assert slurm.max_num_timeout > 0 and slurm.timeout_min > 0 and slurm.mem_gb > 0
    assert slurm.cpus_per_task > 0 and slurm.signal_delay_s > 0


def composed(*overrides: str):
    return compose_config(["+sweep=table2_cifar10", *overrides], hydra=True)


def test_the_shared_gpu_preset_composes():
    cfg = composed("hydra/launcher=gpu_shared", "hydra.launcher.n_jobs=8")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher")
    assert (launcher.n_jobs, launcher.backend) == (8, "loky")
    callback = cfg.hydra.callbacks.pin_threads
    assert callback._target_ == "sdexp.run.sharing.PinThreads" and callback.jobs == 8
    assert cfg.hydra.callbacks.mps._target_ == "sdexp.run.sharing.MPSDaemon"
    default = composed("hydra/launcher=gpu_shared", "hydra.launcher.n_jobs=4").hydra
    assert default.callbacks.pin_threads.jobs == 4
    assert composed("hydra/launcher=gpu_shared").hydra.launcher.n_jobs == 8  # measured


def test_the_shared_slurm_preset_composes():
    slurm = composed("hydra/launcher=slurm_shared").hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert slurm.gpus_per_node is None and slurm.gres == "shard:1"
    assert slurm.cpus_per_task == 2 and slurm.max_num_timeout > 0  # requeue as the slurm preset
    (setup,) = slurm.setup  # a shell command that needs no checkout and no Hydra runtime
    assert "pgrep -x nvidia-cuda-mps-control" in setup and "${" not in setup
