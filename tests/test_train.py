"""End to end: train(cfg) in process and ``python train.py`` as a user runs it."""

from __future__ import annotations

import json
import subprocess

import pytest

from sdexp.errors import ConfigError
from sdexp.module import NonFiniteLossError
from sdexp.results import RunResult, read_result
from sdexp.training import train
from tests.conftest import FAST_TOY, local_cifar, run_train

# timings, and the share of the device: how many runs of a sweep ran beside it
VOLATILE = {"train_time_s", "epoch_times_s", "device_share"}


def stable_fields(result: RunResult) -> dict:
    """What two runs of the same computation agree on (not their timings)."""
    return {k: v for k, v in result.to_dict().items() if k not in VOLATILE}


def test_toy_sensemode_run(make_config, tmp_path):
    cfg = make_config(*FAST_TOY, "mode=sensemode", "budget=0.3", "logger=csv")
    result = train(cfg)
    assert read_result(tmp_path / "run") == result
    assert result.status == "ok"
    key = result.key
    assert (key.dataset, key.model, key.mode, key.recipe) == ("toy", "vanilla", "sensemode", "toy")
    survival = result.survival
    assert len(survival) == 8 and abs(sum(survival) / 8 - 0.3) < 1e-6
    assert len(result.sensitivity) == 8
    assert result.expected_depth == pytest.approx(0.3 * 8)
    assert result.metric == "mse" and result.report == "final"
    for name in ("test_final", "test_best", "test_loss", "best_val", "train_time_s"):
        assert getattr(result, name) > 0, name
    assert result.test == result.test_final and result.depth_variance > 0
    assert key.epochs == 2 and key.stable is True and result.version
    assert len(result.epoch_times_s) == 2 and min(result.epoch_times_s) > 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()
    assert (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").exists()


def test_a_run_builds_its_dataset_and_mode_once(make_config, monkeypatch):
    """The command's task (``sdexp.cli.train_task``: the config check, then the run) builds the
    dataset and the survival mode once, the check's, and the model twice: on the meta device
    (the check, no weights) and for training (seeded)."""
    import functools

    from sdexp.cli import train_task
    from sdexp.data import ToyDataModule
    from sdexp.models import VanillaResNet
    from sdexp.survival import SenseMode

    built = []
    for cls in (ToyDataModule, SenseMode, VanillaResNet):

        def counted(self, *args, __init__=cls.__init__, cls=cls, **kwargs):
            built.append(cls.__name__)
            __init__(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", functools.wraps(cls.__init__)(counted))
    train_task(make_config(*FAST_TOY, "mode=sensemode", "budget=0.3", "logger=none"))
    assert sorted(built) == ["SenseMode", "ToyDataModule", "VanillaResNet", "VanillaResNet"]


def test_same_seed_same_results(tmp_path):
    from tests.conftest import compose_config

    def run(name: str, seed: int) -> dict:
        overrides = [*FAST_TOY, "mode=uniform", "logger=none", f"seed={seed}"]
        return train(compose_config([f"output_dir={tmp_path / name}", *overrides]))

    first, second, other = run("a", 0), run("b", 0), run("c", 1)
    assert stable_fields(first) == stable_fields(second)
    assert first.test != other.test


def test_a_crashed_run_resumes_as_one_run(tmp_path):
    """A run that crashed after 2 of its 4 epochs (results.json says failed) is started again
    with the same command: it resumes from last.ckpt and ends as the uninterrupted run."""
    from tests.conftest import compose_config

    overrides = [*FAST_TOY, "mode=uniform", "logger=none", "trainer.max_epochs=4"]
    straight = train(compose_config([f"output_dir={tmp_path / 'straight'}", *overrides]))
    crash = ["+callbacks.crash._target_=tests.helpers.CrashOnce", "+callbacks.crash.epoch=2"]
    cfg = compose_config([f"output_dir={tmp_path / 'crashed'}", *overrides, *crash])
    with pytest.raises(RuntimeError, match="a crash, once"):
        train(cfg)
    assert read_result(tmp_path / "crashed").status == "failed"
    resumed = train(compose_config([f"output_dir={tmp_path / 'crashed'}", *overrides, *crash]))
    assert resumed.status == "ok" and resumed.key.epochs == 4
    ignore = {"identity", "setup", "config"}  # the crashing callback is part of the config
    assert {k: v for k, v in stable_fields(resumed).items() if k not in ignore} == {
        k: v for k, v in stable_fields(straight).items() if k not in ignore
    }


def test_nonfinite_loss_marks_the_run_failed(make_config, tmp_path):
    cfg = make_config(*FAST_TOY, "logger=none", "optimizer.lr=1e4", "trainer.log_every_n_steps=1")
    with pytest.raises(NonFiniteLossError):
        train(cfg)
    result = read_result(tmp_path / "run")
    assert result.status == "failed"
    assert "NonFiniteLossError" in result.reason and "loss is" in result.reason


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
    from sdexp.errors import find_config_error

    with pytest.raises(Exception) as error:
        train(make_config(*overrides, "logger=none"))
    config_error = find_config_error(error.value)
    assert isinstance(config_error, ConfigError)
    assert config_error.option == option and message in str(config_error)
    assert not (tmp_path / "run").exists()  # nothing written


# --- as a user runs it ---------------------------------------------------------------------


@pytest.mark.slow
def test_cli_toy_run_logs_to_wandb(tmp_path):
    run_dir = tmp_path / "run"
    done = run_train(*FAST_TOY, "mode=sensemode", "budget=0.3", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr
    result = read_result(run_dir)
    assert result.status == "ok" and abs(sum(result.survival) / 8 - 0.3) < 1e-6
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    inspect = subprocess.run(
        ["wandb", "leet", "inspect", "--summary", "--json", str(wandb_run)],
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(inspect.stdout)
    assert record["config"]["budget"] == 0.3
    assert record["config"]["mode"]["_target_"] == "sdexp.survival.SenseMode"
    assert record["config"]["expected_depth"] == pytest.approx(2.4)
    assert len(record["config"]["survival"]) == 8
    assert record["config"]["key"]["identity"] == result.key.identity
    assert record["name"] == f"toy-vanilla-sensemode-b0.3-s0-{result.key.setup[:6]}"
    assert set(record["tags"]) >= {"toy", "vanilla", "sensemode", "budget=0.3"}
    summary = record["summary"]
    assert summary["test/mse"] == pytest.approx(result.test_final)
    assert summary["test_best/mse"] == pytest.approx(result.test_best)
    for key in ("train/loss", "train/sampled_depth", "val/mse", "val/loss", "test/loss"):
        assert key in summary, key
    assert "layers/survival_table" in summary and "layers/sensitivity_table" in summary
    # plain names and the numbers, for dashboards that filter failures and group by mode
    plain = {"status": "ok", "mode": "sensemode", "dataset": "toy", "model": "vanilla"}
    assert {k: summary[k] for k in plain} == plain
    assert summary["budget"] == 0.3 and summary["seed"] == 0 and summary["recipe"] == "toy"
    assert summary["test"] == pytest.approx(result.test) and summary["metric"] == "mse"
    assert summary["best_val"] == pytest.approx(result.best_val)
    assert summary["setup"] == result.key.setup and summary["expected_depth"] > 0
    assert record["state"] == "finished" and record["exit_code"] == 0


@pytest.mark.slow
def test_cli_cifar_run_reads_the_real_format(tmp_path, cifar_root):
    run_dir = tmp_path / "run"
    done = run_train(
        "mode=sensemode",
        "budget=0.3",
        *local_cifar(cifar_root),
        "dataset.val_size=20",
        "dataset.batch_size=50",
        "mode.batches=1",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    )
    assert done.returncode == 0, done.stderr
    result = read_result(run_dir)
    assert result.status == "ok"
    key = result.key
    assert (key.dataset, key.model, key.num_blocks, key.recipe) == (
        "cifar10",
        "resnet110",
        54,
        "reference",
    )
    assert abs(sum(result.survival) / 54 - 0.3) < 1e-6
    assert result.report == "best" and result.test == result.test_best
    assert 0 <= result.test_best <= 100 and 0 <= result.test_final <= 100
    assert result.best_val is not None


@pytest.mark.slow
def test_cli_cifar100(tmp_path, cifar_root):
    run_dir = tmp_path / "run"
    done = run_train(
        "dataset=cifar100",
        "model=resnet56",
        "mode=linear",
        "budget=0.6",
        *local_cifar(cifar_root),
        "dataset.val_size=0",
        "recipe.report=final",  # no validation split: no best checkpoint to report
        "dataset.batch_size=60",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "logger=none",
        f"hydra.run.dir={run_dir}",
    )
    assert done.returncode == 0, done.stderr
    result = read_result(run_dir)
    key = result.key
    assert (key.dataset, key.model, key.mode) == ("cifar100", "resnet56", "linear")
    assert result.best_val is None and result.test_best is None  # val_size=0: no validation
    assert result.test == result.test_final


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "returncode", "expected"),
    [
        (["mode=linear", "budget=0.3"], 2, "error: budget: mode=linear cannot meet budget=0.3"),
        (["mode=uniformm"], 1, "Available options in 'mode'"),
        (["dataset.download=false", "dataset.data_dir=DATA"], 2, "error: dataset.data_dir:"),
        (["budget=abc"], 2, "error: budget: a number, got 'abc'"),
        (["seed=-1"], 2, "error: seed: an integer in [0, 4294967295], got -1"),
        (["seed=abc"], 2, "error: seed: an integer, got 'abc'"),
        (["model.depth=abc"], 2, "error: model.depth: an integer, got 'abc'"),
        (["trainer.max_epochs=0"], 2, "error: trainer.max_epochs: an integer, at least 1, got 0"),
    ],
)
def test_cli_bad_input(tmp_path, overrides, returncode, expected):
    run_dir = tmp_path / "run"
    overrides = [o.replace("DATA", str(tmp_path / "data")) for o in overrides]
    done = run_train(*overrides, "logger=wandb", f"hydra.run.dir={run_dir}")
    assert done.returncode == returncode
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert not run_dir.exists() or not any(run_dir.iterdir())  # nothing: not even train.log


def test_several_devices_need_ddp_that_handles_dropped_blocks(make_config):
    from sdexp.config import check_config

    check_config(make_config("trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"))
    strategy = "+trainer.strategy={_target_:pytorch_lightning.strategies.DDPStrategy,"
    check_config(make_config("trainer.devices=2", strategy + "find_unused_parameters:true}"))
    with pytest.raises(ConfigError, match="which strategy ddp cannot reduce"):
        check_config(make_config("trainer.devices=2", "+trainer.strategy=ddp"))


def test_training_time_is_counted_once(make_config, tmp_path):
    """Testing the best checkpoint loads it, and with it the Timer's saved state: the training
    time is read before, not counted twice."""
    import torch

    result = train(make_config(*FAST_TOY, "logger=none"))
    assert result.test_best is not None  # the best checkpoint was loaded and tested
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    (timer,) = [v for k, v in last["callbacks"].items() if k.startswith("Timer")]
    saved = timer["time_elapsed"]["train"]  # at the end of the last epoch
    assert saved <= result.train_time_s < 1.5 * saved
