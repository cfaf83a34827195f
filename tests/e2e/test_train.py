"""``python train.py`` as a user runs it: the tiny run and what it logs to W&B, CIFAR in the real
on-disk format under each recipe, the digits, and input it refuses."""

from __future__ import annotations

import pytest

from sdexp.results import differences, flatten, read_result
from tests.helpers import (
    FAST_TOY,
    command_output,
    compose_config,
    local_cifar,
    run_train,
    wandb_record,
)


def test_help_shows_the_groups_and_the_commands():
    """``python train.py --help``: ours (conf/hydra/help/sdexp.yaml; its contents:
    tests/unit/test_help.py), where Hydra printed its config dump, listing sweep and scale as
    plain groups (sweep=smoke fails: tests/e2e/test_faults.py)."""
    done = run_train("--help")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.strip() == compose_config([], hydra=True).hydra.help.template.strip()
    assert "\n  +sweep   " in done.stdout and "python train.py +sweep=smoke\n" in done.stdout


@pytest.mark.slow
def test_cli_toy_run_logs_to_wandb(finished_run):
    """``python train.py +scale=tiny mode=sensemode budget=0.3 logger=wandb`` (the session's
    ``finished_run``)."""
    done = command_output(finished_run.parent)
    assert done.returncode == 0, done.stderr
    result = read_result(finished_run)
    assert result.status == "ok" and abs(sum(result.survival) / 8 - 0.3) < 1e-6
    (wandb_run,) = (finished_run / "wandb").glob("offline-run-*")
    record = wandb_record(wandb_run)
    assert record["config"]["budget"] == 0.3
    assert record["config"]["mode"]["_target_"] == "sdexp.survival.SenseMode"
    assert record["config"]["expected_depth"] == pytest.approx(2.4)
    assert len(record["config"]["survival"]) == 8
    assert record["config"]["key"]["identity"] == result.key.identity
    assert record["config"]["code"] == result.code.to_dict() and result.code.commit  # a checkout
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
def test_cifar_reads_the_real_format_and_each_recipe_shows_in_config_and_results(
    tmp_path, cifar_root
):
    """A CIFAR-10 run (Stable ResNet110, SenseMode) on the tiny real-format copy, once with the
    reference recipe and once with the legacy one."""
    results = {}
    for recipe in ("reference", "legacy"):
        run_dir = tmp_path / recipe
        done = run_train(
            "mode=sensemode",
            "budget=0.3",
            f"recipe={recipe}",
            *local_cifar(cifar_root),
            "dataset.val_size=20",
            "mode.batches=1",
            "trainer=cpu",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "logger=csv",
            f"hydra.run.dir={run_dir}",
        )
        assert done.returncode == 0, done.stderr[-3000:]
        resolved = (run_dir / ".hydra" / "config.yaml").read_text()
        assert f"name: {recipe}" in resolved
        results[recipe] = read_result(run_dir)
    reference, legacy = results["reference"], results["legacy"]
    key = reference.key
    assert reference.status == "ok"
    assert (key.dataset, key.model, key.num_blocks, key.recipe) == (
        "cifar10",
        "resnet110",
        54,
        "reference",
    )
    assert abs(sum(reference.survival) / 54 - 0.3) < 1e-6
    assert reference.report == "best" and reference.test == reference.test_best
    assert 0 <= reference.test_best <= 100 and 0 <= reference.test_final <= 100
    assert reference.best_val is not None

    assert (reference.key.recipe, legacy.key.recipe) == ("reference", "legacy")
    assert reference.key.setup != legacy.key.setup
    changed = differences(reference.config, legacy.config, limit=20)
    for key, values in {
        "dataset.batch_size": "64 -> 128",
        "dataset.normalize": "False -> True",
        "model.shortcut": "avgpool -> stride",
        "recipe.dropped_blocks": "decay -> frozen",
        "recipe.report": "best -> final",
        "scheduler.count_from": "1 -> 0",
    }.items():
        assert f"{key}: {values}" in changed, changed
    assert {k for k in flatten(reference.config)} == {k for k in flatten(legacy.config)}
    assert legacy.report == "final" and legacy.test == legacy.test_final
    for result in results.values():
        assert result.test_best is not None and result.test_final is not None


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
def test_cli_digits_run(tmp_path):
    """The CPU-sized Budget Hypothesis' data (issue 13): scikit-learn's digits through the CIFAR
    ResNet, their recipe."""
    run_dir = tmp_path / "run"
    done = run_train(
        "dataset=digits",
        "model=resnet56",
        "model.depth=8",
        "mode=sensemode",
        "budget=0.4",
        "dataset.n_train=128",
        "trainer=cpu",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    )
    assert done.returncode == 0, done.stderr
    result = read_result(run_dir)
    key = result.key
    assert result.status == "ok" and result.metric == "error"
    assert (key.dataset, key.model, key.num_blocks, key.recipe) == ("digits", "resnet8", 3, "short")
    assert abs(sum(result.survival) / 3 - 0.4) < 1e-6 and len(result.sensitivity) == 3
    assert result.report == "final" and result.test == result.test_final
    assert 0 <= result.test_best <= 100 and result.best_val is not None
    assert len(result.epoch_times_s) == 2


# --- what it refuses -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "returncode", "expected"),
    [
        (["mode=linear", "budget=0.3"], 2, "error: budget: mode=linear cannot meet budget=0.3"),
        (
            ["mode=uniformm"],
            2,
            "error: mode=uniformm: no such option of mode (its options: linear, none, "
            "sensemode, uniform)",
        ),
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
    assert not run_dir.exists()  # nothing, not even the directory the command made


@pytest.mark.slow
def test_a_small_copy_says_which_switches_it_needs(cifar_root, tmp_path):
    """As a user with a copy of CIFAR-10 that is not the official archive (120 training
    images): one line naming dataset.verify_md5, then, with it off, one line naming
    dataset.val_size (5000 by default); exit status 2 and no traceback either time."""
    where = [f"dataset.data_dir={cifar_root}", "trainer=cpu", "logger=none"]
    done = run_train(*where, f"hydra.run.dir={tmp_path / 'a'}")
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: dataset.verify_md5: the files in ")
    assert "fail the md5 checksums of the official cifar10 archive" in line
    done = run_train(*where, "dataset.verify_md5=false", f"hydra.run.dir={tmp_path / 'b'}")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: dataset.val_size: fewer than the 120 training images, got 5000"
    ]


@pytest.mark.slow
def test_cli_refuses_cuda_graphs_on_a_cpu(tmp_path):
    run_dir = tmp_path / "run"
    done = run_train(*FAST_TOY, "speed.cuda_graphs=true", f"hydra.run.dir={run_dir}")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: speed.cuda_graphs: CUDA graphs need a CUDA GPU")
    assert "Traceback" not in done.stderr
    written = {p.name for p in run_dir.iterdir()} if run_dir.exists() else set()
    assert written <= {".hydra", "train.log"}
