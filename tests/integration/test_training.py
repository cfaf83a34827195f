"""train(cfg) in process: one tiny run (the ``trained`` fixture) and what it writes, the same
run again, a crash and its resumption, a diverging loss, W&B runs of jobs in one process, bf16,
what the command builds once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.regression import MeanSquaredError

from sdexp import __version__
from sdexp.predictions import read_predictions
from sdexp.provenance import current_code
from sdexp.results import read_result
from sdexp.run.module import NonFiniteLossError
from sdexp.run.training import train
from tests.helpers import FAST_TOY, compose_config, local_cifar, same_numbers, stable_fields

# The ``trained`` fixture's run: SenseMode at budget 0.3, two epochs, a CSV log.
TRAINED = [*FAST_TOY, "mode=sensemode", "budget=0.3", "logger=csv"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``train(TRAINED)`` once for this module: (its result, its output directory)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    return train(compose_config([f"output_dir={out}", *TRAINED])), out


def test_toy_sensemode_run(trained):
    result, out = trained
    assert read_result(out) == result
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
    assert key.epochs == 2 and key.stable is True
    assert result.code == current_code() and result.code.version == __version__
    assert len(result.epoch_times_s) == 2 and min(result.epoch_times_s) > 0
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert (out / "checkpoints" / "best.ckpt").exists()
    assert (out / "csv" / "version_0" / "metrics.csv").exists()
    stored = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["sdexp_run"]
    assert stored["code"] == current_code().to_dict()  # beside the identity


def float32_error(predictions) -> float:
    """The test error as the module's torchmetrics computes it: (1 - correct / n) x 100, each
    step in float32."""
    correct = np.float32((predictions["predicted"] == predictions["target"]).sum())
    return float((np.float32(1) - correct / np.float32(len(predictions))) * np.float32(100))


def batched_mse(predictions, batch_size: int) -> float:
    """The MSE as the module's ``MeanSquaredError`` computes it: float32 sums per evaluation
    batch, in the test set's order, over n."""
    mse = MeanSquaredError()
    target = torch.tensor(predictions["target"].to_numpy(), dtype=torch.float32)
    output = torch.tensor(predictions["prediction"].to_numpy(), dtype=torch.float32)
    for start in range(0, len(target), batch_size):
        mse.update(output[start : start + batch_size], target[start : start + batch_size])
    return mse.compute().item()


def test_the_predictions_give_the_test_mse_to_the_last_digit(trained):
    """predictions.csv of a regression run: every test example once per tested model, with the
    run's identity; the final model's and the best checkpoint's MSE recomputed from it equal
    results.json's, bit for bit."""
    result, out = trained
    frame = read_predictions(out, result.key.identity, "mse")
    assert set(frame.model) == {"final", "best"}
    for model, value in (("final", result.test_final), ("best", result.test_best)):
        rows = frame[frame.model == model]
        assert list(rows["index"]) == list(range(64))  # scale=tiny: 64 test samples
        squared = np.float32(rows.prediction - rows.target) ** 2
        assert (np.float32(rows.squared_error) == squared.astype(np.float32)).all()
        assert batched_mse(rows, 1024) == value, model  # the toy eval_batch_size: 1024
    final = frame[frame.model == "final"]
    assert final.squared_error.mean() == pytest.approx(result.test_loss, rel=1e-5)


def test_the_predictions_give_the_test_error_to_the_last_digit(make_config):
    """predictions.csv of a classification run (digits): the class and the loss per test image;
    the test error recomputed from it equals results.json's to the last digit."""
    overrides = ["dataset=digits", "model=resnet56", "model.depth=8", "mode=uniform"]
    overrides += ["dataset.n_train=128", "trainer=cpu", "trainer.max_epochs=1", "logger=none"]
    overrides += ["budget=0.5", "trainer.enable_progress_bar=false"]
    config = make_config(*overrides)
    result = train(config)
    frame = read_predictions(config.output_dir, result.key.identity, "error")
    assert set(frame.model) == {"final", "best"}
    for model, value in (("final", result.test_final), ("best", result.test_best)):
        rows = frame[frame.model == model]
        assert list(rows["index"]) == list(range(997)) and rows.predicted.between(0, 9).all()
        assert float32_error(rows) == value, model
    final = frame[frame.model == "final"]
    assert final.loss.mean() == pytest.approx(result.test_loss, rel=1e-5)


def test_same_seed_same_results(trained, tmp_path):
    def run(name: str, seed: int) -> dict:
        overrides = [*TRAINED, "logger=none", f"seed={seed}"]
        return train(compose_config([f"output_dir={tmp_path / name}", *overrides]))

    first, second, other = trained[0], run("b", 0), run("c", 1)
    assert stable_fields(first) == stable_fields(second)
    assert first.test != other.test


def test_a_finished_run_is_skipped(trained, caplog):
    first, out = trained
    written = (out / "results.json").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="sdexp"):
        again = train(compose_config([f"output_dir={out}", *TRAINED]))
    assert again == first
    assert (out / "results.json").stat().st_mtime_ns == written
    assert "finished before (results.json says ok)" in caplog.text


def test_a_crashed_run_resumes_as_one_run(trained, tmp_path):
    """A run that crashed after 1 of its 2 epochs (results.json says failed) is started again
    with the same command: it resumes from last.ckpt and ends as the uninterrupted run."""
    straight = trained[0]
    crash = ["+callbacks.crash._target_=tests.callbacks.CrashOnce", "+callbacks.crash.epoch=1"]
    cfg = compose_config([f"output_dir={tmp_path / 'crashed'}", *TRAINED, *crash])
    with pytest.raises(RuntimeError, match="a crash, once"):
        train(cfg)
    assert read_result(tmp_path / "crashed").status == "failed"
    resumed = train(compose_config([f"output_dir={tmp_path / 'crashed'}", *TRAINED, *crash]))
    assert resumed.status == "ok" and resumed.key.epochs == 2
    assert same_numbers(resumed, straight)  # the crashing callback is part of the config


def test_training_time_is_counted_once(trained):
    """Testing the best checkpoint loads it, and with it the Timer's saved state: the training
    time is read before, not counted twice."""
    result, out = trained
    assert result.test_best is not None  # the best checkpoint was loaded and tested
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    (timer,) = [v for k, v in last["callbacks"].items() if k.startswith("Timer")]
    saved = timer["time_elapsed"]["train"]  # at the end of the last epoch
    assert saved <= result.train_time_s < 1.5 * saved


def test_nonfinite_loss_marks_the_run_failed(make_config, tmp_path):
    cfg = make_config(*FAST_TOY, "logger=none", "optimizer.lr=1e4", "trainer.log_every_n_steps=1")
    with pytest.raises(NonFiniteLossError):
        train(cfg)
    result = read_result(tmp_path / "run")
    assert result.status == "failed"
    assert "NonFiniteLossError" in result.reason and "loss is" in result.reason


def test_jobs_in_one_process_get_their_own_wandb_runs(tmp_path):
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"job{seed}"
        train(compose_config([f"output_dir={out}", *FAST_TOY, f"seed={seed}", "logger=wandb"]))
        (run,) = (out / "wandb").glob("offline-run-*")
        runs.append(run.name.rsplit("-", 1)[-1])
    assert runs[0] != runs[1]
    import wandb

    assert wandb.run is None  # finished at the end of each job


def test_bf16_autocast_run(make_config, cifar_root):
    cfg = make_config(
        *local_cifar(cifar_root),
        "dataset.val_size=20",
        "dataset.batch_size=50",
        "model=resnet56",
        "model.depth=14",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.precision=bf16-mixed",
        "trainer.enable_progress_bar=false",
        "speed.channels_last=true",
        "logger=none",
    )
    result = train(cfg)
    assert result.status == "ok" and 0 <= result.test <= 100


def test_a_run_builds_its_dataset_and_mode_once(make_config, monkeypatch):
    """The command's task (``sdexp.run.cli.train_task``: the config check, then the run) builds the
    dataset and the survival mode once, the check's, and the model twice: on the meta device
    (the check, no weights) and for training (seeded)."""
    import functools

    from sdexp.data import ToyDataModule
    from sdexp.models import VanillaResNet
    from sdexp.run.cli import train_task
    from sdexp.survival import SenseMode

    built = []
    for cls in (ToyDataModule, SenseMode, VanillaResNet):

        def counted(self, *args, __init__=cls.__init__, cls=cls, **kwargs):
            built.append(cls.__name__)
            __init__(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", functools.wraps(cls.__init__)(counted))
    train_task(make_config(*FAST_TOY, "mode=sensemode", "budget=0.3", "logger=none"))
    assert sorted(built) == ["SenseMode", "ToyDataModule", "VanillaResNet", "VanillaResNet"]
