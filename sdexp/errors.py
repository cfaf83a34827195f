"""The one exception type for bad input: it names the option and what is allowed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class ConfigError(ValueError):
    """A configuration the run cannot honour; ``train.py`` prints it and exits with status 2."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


def find_config_error(error: BaseException | None) -> ConfigError | None:
    """The ConfigError behind ``error``, also when Hydra's instantiate wrapped it."""
    while error is not None:
        if isinstance(error, ConfigError):
            return error
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def exit_on_config_error() -> Iterator[None]:
    """Bad input: one line naming the option and what is allowed, exit status 2, no traceback."""
    try:
        yield
    except Exception as error:
        config_error = find_config_error(error)
        if config_error is None:
            raise
        print(f"error: {config_error}", file=sys.stderr)
        sys.exit(2)
