"""End to end: train(cfg) in process and ``python train.py`` as a user runs it."""

from __future__ import annotations

import json
import subprocess

import pytest

from sdexp.errors import ConfigError
from sdexp.module import NonFiniteLossError
from sdexp.results import read_results
from sdexp.training import train
from tests.conftest import FAST_TOY, local_cifar, run_train

VOLATILE = {"train_time_s", "epoch_times_s"}


def stable_fields(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in VOLATILE}


def test_toy_sensemode_run(make_config, tmp_path):
    cfg = make_config(*FAST_TOY, "mode=sensemode", "budget=0.3", "logger=csv")
    results = train(cfg)
    assert read_results(tmp_path / "run") == results
    assert results["status"] == "ok"
    assert (results["dataset"], results["model"], results["mode"]) == (
        "toy",
        "vanilla",
        "sensemode",
    )
    survival = results["survival"]
    assert len(survival) == 8 and abs(sum(survival) / 8 - 0.3) < 1e-6
    assert len(results["sensitivity"]) == 8
    assert results["expected_depth"] == pytest.approx(0.3 * 8)
    for key in ("test_mse", "test_loss", "best_val_mse", "train_time_s", "depth_variance"):
        assert results[key] > 0, key
    assert results["epochs"] == 2 and results["stable"] is True and results["version"]
    assert len(results["epoch_times_s"]) == 2 and min(results["epoch_times_s"]) > 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()
    assert (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").exists()


def test_same_seed_same_results(tmp_path):
    from tests.conftest import compose_config

    def run(name: str, seed: int) -> dict:
        overrides = [*FAST_TOY, "mode=uniform", "logger=none", f"seed={seed}"]
        return train(compose_config([f"output_dir={tmp_path / name}", *overrides]))

    first, second, other = run("a", 0), run("b", 0), run("c", 1)
    assert stable_fields(first) == stable_fields(second)
    assert first["test_mse"] != other["test_mse"]


def test_resume_continues_as_one_run(tmp_path):
    """Stopping after 2 epochs and resuming to 4 equals training 4 epochs straight."""
    from tests.conftest import compose_config

    def run(name: str, epochs: int) -> dict:
        overrides = [*FAST_TOY, "mode=uniform", "logger=none", "scheduler.milestones=[3]"]
        overrides += [f"trainer.max_epochs={epochs}"]
        return train(compose_config([f"output_dir={tmp_path / name}", *overrides]))

    straight = run("straight", 4)
    run("resumed", 2)
    resumed = run("resumed", 4)  # finds checkpoints/last.ckpt and continues from epoch 2
    assert stable_fields(resumed) == stable_fields(straight)


def test_nonfinite_loss_marks_the_run_failed(make_config, tmp_path):
    cfg = make_config(*FAST_TOY, "logger=none", "optimizer.lr=1e4", "trainer.log_every_n_steps=1")
    with pytest.raises(NonFiniteLossError):
        train(cfg)
    results = read_results(tmp_path / "run")
    assert results["status"] == "failed"
    assert "NonFiniteLossError" in results["reason"] and "loss is" in results["reason"]


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
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and abs(sum(results["survival"]) / 8 - 0.3) < 1e-6
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
    assert record["name"] == "toy-vanilla-sensemode-b0.3-s0"
    assert set(record["tags"]) >= {"toy", "vanilla", "sensemode", "budget=0.3"}
    summary = record["summary"]
    assert summary["test/mse"] == pytest.approx(results["test_mse"])
    for key in ("train/loss", "train/sampled_depth", "val/mse", "val/loss", "test/loss"):
        assert key in summary, key
    assert "layers/survival_table" in summary and "layers/sensitivity_table" in summary
    assert record["state"] == "finished"


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
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert (results["dataset"], results["model"], results["num_blocks"]) == (
        "cifar10",
        "resnet110",
        54,
    )
    assert abs(sum(results["survival"]) / 54 - 0.3) < 1e-6
    assert 0 <= results["test_error"] <= 100 and results["best_val_error"] is not None


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
        "dataset.batch_size=60",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "logger=none",
        f"hydra.run.dir={run_dir}",
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert (results["dataset"], results["model"], results["mode"]) == (
        "cifar100",
        "resnet56",
        "linear",
    )
    assert results["best_val_error"] is None  # val_size=0: no validation


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "returncode", "expected"),
    [
        (["mode=linear", "budget=0.3"], 2, "error: budget: mode=linear cannot meet budget=0.3"),
        (["mode=uniformm"], 1, "Available options in 'mode'"),
        (["dataset.download=false", "dataset.data_dir=DATA"], 2, "error: dataset.data_dir:"),
    ],
)
def test_cli_bad_input(tmp_path, overrides, returncode, expected):
    run_dir = tmp_path / "run"
    overrides = [o.replace("DATA", str(tmp_path / "data")) for o in overrides]
    done = run_train(*overrides, "logger=wandb", f"hydra.run.dir={run_dir}")
    assert done.returncode == returncode
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    written = {p.name for p in run_dir.iterdir()} if run_dir.exists() else set()
    assert written <= {".hydra", "train.log"}  # no results.json, checkpoints or W&B run
