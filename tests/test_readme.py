"""Every command in README's bash code blocks, checked as a user would run it.

``CHECKS`` lists each command, as README writes it (continuation lines joined, a trailing
comment left out), with how it is checked:

- ``RUN``: run exactly as written by bash, in README's order, in a fresh directory that holds
  this checkout's ``train.py`` and ``scripts/`` (outputs land there, nothing in the checkout);
- ``COMPOSE``: too long for a CPU test or needs a GPU, CIFAR or a cluster: its configuration is
  composed by Hydra, as the command would (an override naming no key or option fails);
- any other value: the reason it is not run.

README changes in parallel with the code: a command that is not in ``CHECKS``, or an entry of
``CHECKS`` that README no longer has, fails ``test_every_readme_command_is_listed``, which
prints the commands to add. Decide for each and update the table.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, compose_config, user_env

RUN, COMPOSE = "run", "compose"
GPU = "trains on CIFAR for hours: needs a GPU and the data"
CHECKS = {
    'python -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e ".[dev]" '
    "&& python train.py dataset=toy model=vanilla mode=sensemode budget=0.3": "creates a virtual "
    "environment and installs the package (network, minutes; tests/test_installed.py builds and "
    "installs the wheel); its training command is tests/test_console.py's first test",
    ". .venv/bin/activate && pytest": "the whole test suite (about 10 minutes)",
    "python train.py mode=sensemode budget=0.3": COMPOSE,
    "python train.py dataset=cifar100 model=resnet56 mode=linear budget=0.7 seed=1": COMPOSE,
    "wandb sync outputs/runs/*/*/wandb/offline-run-*": "uploads to a W&B server",
    "wandb sync outputs/sweeps/table2_cifar10/*/*/wandb/offline-run-*": "uploads to a W&B server",
    "sdexp-dashboard --entity ENTITY --project sdexp --group table2_cifar10": "saves a report on "
    "a W&B server (tests/test_dashboard.py: without one it fails in one line)",
    "python train.py +sweep=smoke": RUN,
    "sdexp-dashboard --entity ENTITY --project sdexp --group smoke --metric mse --dry-run "
    "spec.json": RUN,
    "python train.py +sweep=table2_cifar10 hydra.sweeper.dry_run=true": RUN,
    "python train.py +sweep=table2_cifar10": COMPOSE,
    "python train.py +sweep=table2_cifar10 hydra/launcher=joblib hydra.launcher.n_jobs=4": COMPOSE,
    "python train.py +sweep=table2_cifar10 hydra/launcher=slurm hydra.launcher.partition=gpu "
    "hydra.launcher.timeout_min=600": COMPOSE,
    "python train.py trainer=ddp trainer.devices=2 dataset.batch_size=32 mode=sensemode "
    "budget=0.3": COMPOSE,
    "python train.py +sweep=table2_cifar10 trainer=ddp dataset.batch_size=16 "
    "hydra/launcher=slurm_ddp": COMPOSE,
    "sdexp-table outputs/sweeps/table2_cifar10": "reads the results of the CIFAR sweep",
    "sdexp-table outputs/sweeps/table2_* --out outputs/tables": "reads the results of the CIFAR "
    "sweeps",
    "sdexp-dashboard --project sdexp --group table2_cifar10 --tables outputs/tables": "reads "
    "the tables of the CIFAR sweeps (tests/test_aggregate.py logs a fabricated sweep's tables)",
    "python train.py +sweep=smoke && sdexp-table outputs/sweeps/smoke": RUN,
    "time python train.py +sweep=budget_cpu": COMPOSE,  # 11 minutes; tests/test_regenerate.py
    "sdexp-table outputs/sweeps/budget_cpu --out docs/budget_cpu": "reads the results of the "
    "budget_cpu sweep (11 minutes) and writes into the checkout's docs/",
    "python train.py +sweep=table2_cifar10 hydra/launcher=gpu_shared speed.cuda_graphs=true "
    "speed.fused_optimizer=true": COMPOSE,
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
    "--target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || "
    "exit; mkdir -p $OUT/gc; set -o pipefail; python3 scripts/gpu_check.py $OUT/gc 2>&1 | tee "
    "$OUT/gc/gpu_check.log": "runs on a lent GPU machine (tests/test_gpu_check.py runs the "
    "script's CPU dry run)",
    "sdexp-table outputs/sweeps/budget_cpu --small 0.2 --large 0.8": "reads the results of the "
    "budget_cpu sweep (tests/test_aggregate.py runs --small and --large on fabricated runs)",
    "time python train.py +sweep=hypothesis_cpu": COMPOSE,  # an hour; tests/test_regenerate.py
    "sdexp-table outputs/sweeps/hypothesis_cpu --out docs/hypothesis_cpu --small 0.2 "
    "--large 0.8": "reads the results of the hypothesis_cpu sweep and writes into the checkout's "
    "docs/",
    "python scripts/sensitivity_noise.py dataset=digits model=resnet56 --seeds 0-9 --batches 1 2 "
    "4 8 16 32 64 128 --out docs/sensitivity_noise": "2 minutes, writes into the checkout's docs/ "
    "(tests/test_sensitivity.py runs it at a smaller size)",
    "python scripts/bench.py": "15 minutes (tests/test_speed.py runs its --quick variant)",
    "python -m sdexp.theory experiment=depth": RUN,
    "python -m sdexp.theory experiment=gradient": COMPOSE,  # about 2 minutes each
    "python -m sdexp.theory experiment=regularizer": COMPOSE,
    "python -m sdexp.theory experiment=normality": COMPOSE,
}
ENTRIES = {("python", "train.py"): "train", ("python", "-m", "sdexp.theory"): "theory"}


def readme_commands(markdown: str) -> list[str]:
    """The commands of the bash code blocks of ``markdown``, in order: one per line once
    continuation lines are joined, a trailing comment left out, spaces collapsed."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(re.sub(r"(^|\s)#.*$", "", line).split())
            if command:
                commands.append(command)
    return commands


COMMANDS = readme_commands((ROOT / "README.md").read_text())


def test_every_readme_command_is_listed():
    unlisted = [c for c in COMMANDS if c not in CHECKS]
    stale = [c for c in CHECKS if c not in COMMANDS]
    assert not unlisted and not stale, (
        "README's commands and tests/test_readme.py's CHECKS disagree: add to CHECKS (RUN, "
        "COMPOSE or the reason not to run it)\n  "
        + "\n  ".join(map(repr, unlisted))
        + "\nand drop from CHECKS\n  "
        + "\n  ".join(map(repr, stale))
    )


def overrides(command: str) -> tuple[str, list[str]]:
    """The config (``train`` or ``theory``) and the overrides of a ``python train.py`` or
    ``python -m sdexp.theory`` command (``time`` before it is the shell's)."""
    words = shlex.split(command.removeprefix("time "))
    for entry, config in ENTRIES.items():
        if tuple(words[: len(entry)]) == entry:
            return config, [w for w in words[len(entry) :] if not w.startswith("-")]
    raise AssertionError(f"not a train.py or theory command: {command}")


@pytest.mark.parametrize("command", [c for c, how in CHECKS.items() if how == COMPOSE])
def test_the_long_readme_commands_compose(command):
    """Hydra composes the command's config, with its own part (launcher, sweeper) too."""
    config, args = overrides(command)
    cfg = compose_config(args, config_name=config, hydra=True)
    assert cfg.hydra.job.name == config


@pytest.mark.slow
def test_the_cheap_readme_commands_run_as_written(tmp_path):
    """Each RUN command, in README's order (the smoke sweep before the commands that read it),
    by bash in a fresh directory, with this checkout's code and W&B offline."""
    for name in ("train.py", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    bin_dir = str(Path(sys.executable).parent)  # python, sdexp-table, sdexp-dashboard
    env = user_env(PYTHONPATH=str(ROOT), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for command in [c for c in COMMANDS if CHECKS.get(c) == RUN]:
        done = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{command}\n{output[-3000:]}"
        assert "Traceback" not in output, f"{command}\n{output[-3000:]}"
