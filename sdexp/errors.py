"""The one exception type for bad input: it names the option and what is allowed."""


class ConfigError(ValueError):
    """A configuration the run cannot honour; ``train.py`` prints it and exits with status 2."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
