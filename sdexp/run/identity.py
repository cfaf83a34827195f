"""A run's key (``sdexp.results.RunKey``) from its config alone, no data or model: the identity
config, its hashes and the readable fields. The run and the sweep's planner derive it here."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from sdexp.results import NOT_IDENTITY, NOT_SETUP, RunKey, config_hash, without
from sdexp.run.config import Checked, check_config


def run_key(cfg: DictConfig, checked: Checked | None = None) -> tuple[RunKey, dict]:
    """The run's key and identity config (the resolved config less ``NOT_IDENTITY``, with the
    budget the run really uses). ``checked``: what ``check_config`` built; without it, the check
    of a second runs here (the slow checks decide nothing of a key)."""
    checked = checked or check_config(cfg, complete=False)
    # The keys go before resolving: they may interpolate ${hydra:runtime.output_dir}.
    kept = without(OmegaConf.to_container(cfg, resolve=False), ("hydra", *NOT_IDENTITY))
    config = OmegaConf.to_container(
        OmegaConf.create({**kept, "budget": checked.budget}), resolve=True
    )
    key = RunKey(
        dataset=checked.datamodule.name,
        model=checked.model,
        mode=checked.mode.name,
        budget=checked.budget,
        seed=cfg.seed,
        recipe=cfg.recipe.name,
        epochs=cfg.trainer.max_epochs,
        stable=cfg.model.stable,
        num_blocks=checked.num_blocks,
        identity=config_hash(config),
        setup=config_hash(without(config, NOT_SETUP)),
    )
    return key, config
