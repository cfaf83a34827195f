"""The walker of README and the manual: every command of their bash code blocks that
``tests.helpers.CHECKS`` marks ``RUN`` runs as written, by bash, README's first and then the
pages', as a user would run it (the others: tests/unit/test_readme.py)."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import (
    ALL_COMMANDS,
    CHECKS,
    RUN,
    SMOKE_COMMAND,
    command_output,
    copy_of,
    readme_env,
)


@pytest.mark.slow
@pytest.mark.xdist_group("smoke")
def test_the_cheap_commands_run_as_written(smoke_sweep, tmp_path):
    """Each RUN command once, in the order of the pages (README first), by bash in a fresh
    directory, with this checkout's code and W&B offline. The smoke sweep, which later commands
    read, is the ``smoke_sweep`` fixture's (run so, once for every test that reads it); the
    others run in a copy of its directory."""
    here = copy_of(smoke_sweep, tmp_path / "readme")
    commands = [c for c in ALL_COMMANDS if CHECKS.get(c) == RUN]
    assert SMOKE_COMMAND in commands
    for command in [SMOKE_COMMAND] + [c for c in commands if c != SMOKE_COMMAND]:
        if command == SMOKE_COMMAND:
            done = command_output(smoke_sweep)
        else:
            done = subprocess.run(
                ["bash", "-c", command], cwd=here, env=readme_env(), capture_output=True, text=True
            )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{command}\n{output[-3000:]}"
        assert "Traceback" not in output, f"{command}\n{output[-3000:]}"
