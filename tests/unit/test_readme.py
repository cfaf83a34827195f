"""Every command in the bash code blocks of README and of the manual (docs/**/*.md) is listed in
``tests.helpers.CHECKS`` with how it is checked, and the long ones compose as Hydra composes them
(the cheap ones run as written: tests/e2e/test_readme.py); CI runs README's first two commands
as written."""

from __future__ import annotations

import shlex

import pytest

from tests.helpers import (
    ALL_COMMANDS,
    CHECKS,
    COMMANDS,
    COMPOSE,
    PAGE_COMMANDS,
    ROOT,
    bash_commands,
    compose_config,
)

ENTRIES = {("python", "train.py"): "train", ("python", "-m", "sdexp.theory"): "theory"}


def test_every_command_of_readme_and_the_manual_is_listed():
    unlisted = [
        f"{command!r}  ({page})"
        for page, commands in PAGE_COMMANDS.items()
        for command in commands
        if command not in CHECKS
    ]
    stale = [repr(c) for c in CHECKS if c not in ALL_COMMANDS]
    assert not unlisted and not stale, (
        "the commands of README and docs/ and tests/helpers.py's CHECKS disagree: add to CHECKS "
        "(RUN, COMPOSE or the reason not to run it)\n  "
        + "\n  ".join(unlisted)
        + "\nand drop from CHECKS\n  "
        + "\n  ".join(stale)
    )


def test_the_manual_has_pages_with_commands():
    """The pages are found (a wrong glob would check nothing), and their commands are read
    from bash blocks at any indentation: a block inside a list item counts too."""
    assert "docs/getting-started.md" in PAGE_COMMANDS and "docs/slurm.md" in PAGE_COMMANDS
    assert len([c for c in PAGE_COMMANDS.values() if c]) >= 10
    markdown = "1. step\n\n   ```bash\n   python train.py \\\n       seed=1   # a comment\n   ```\n"
    assert bash_commands(markdown) == ["python train.py seed=1"]


def overrides(command: str) -> tuple[str, list[str]]:
    """The config (``train`` or ``theory``) and the overrides of a ``python train.py`` or
    ``python -m sdexp.theory`` command (``time`` before it is the shell's)."""
    words = shlex.split(command.removeprefix("time "))
    for entry, config in ENTRIES.items():
        if tuple(words[: len(entry)]) == entry:
            return config, [w for w in words[len(entry) :] if not w.startswith("-")]
    raise AssertionError(f"not a train.py or theory command: {command}")


@pytest.mark.parametrize("command", [c for c, how in CHECKS.items() if how == COMPOSE])
def test_the_long_commands_compose(command):
    """Hydra composes the command's config, with its own part (launcher, sweeper) too."""
    config, args = overrides(command)
    cfg = compose_config(args, config_name=config, hydra=True)
    assert cfg.hydra.job.name == config


def test_ci_runs_the_first_two_readme_commands_as_written():
    """``.ci/run`` installs and tests exactly as README's opening commands tell a new user: each
    is a line of the script, unchanged (CI checks more around them: the result, the lint)."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    install, tests = COMMANDS[:2]
    assert install.startswith("python3 -m venv .venv") and tests.endswith("pytest")
    assert install in lines and tests in lines
