"""Config helpers: the resolvers ``conf/`` uses (registered when ``sdexp`` is imported) and the
checks that reject a bad configuration within seconds, before data, model or Lightning load."""

from __future__ import annotations

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf


def epochs_at(total_epochs: int, *fractions: float) -> list[int]:
    """The epochs at the given fractions of training: ``${epochs_at:164,0.5,0.75}`` -> [82, 123]."""
    return [int(fraction * total_epochs) for fraction in fractions]


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("epochs_at", epochs_at, replace=True)


def mode_and_blocks(cfg: DictConfig):
    """The configured survival mode and the model's number of blocks L, without building it."""
    return instantiate(cfg.mode), get_class(cfg.model._target_).blocks_for(cfg.model.depth)


def check_config(cfg: DictConfig):
    """Instantiate the mode and check it can meet the budget with the model's L blocks.

    Raises ``ConfigError`` for a budget outside (0, 1], bad mode options or an infeasible budget.
    """
    mode, num_blocks = mode_and_blocks(cfg)
    mode.check(cfg.budget, num_blocks)
    return mode
