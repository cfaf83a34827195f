"""OmegaConf resolvers used by ``conf/`` (registered when ``sdexp`` is imported)."""

from __future__ import annotations

from omegaconf import OmegaConf


def epochs_at(total_epochs: int, *fractions: float) -> list[int]:
    """The epochs at the given fractions of training: ``${epochs_at:164,0.5,0.75}`` -> [82, 123]."""
    return [int(fraction * total_epochs) for fraction in fractions]


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("epochs_at", epochs_at, replace=True)
