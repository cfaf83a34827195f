"""``ConfigError``: the one exception type for bad input, in every wing. It names the option and
what is allowed; a command prints it as one line and exits with status 2 (``sdexp.run.failures``).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration the run cannot honour: ``option`` and what it allows (``message``)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option, self.message = option, message

    def __reduce__(self):  # a sweep job's error travels back to the sweep pickled (submitit)
        return type(self), (self.option, self.message)
