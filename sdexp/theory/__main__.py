"""python -m sdexp.theory experiment=gradient: one of the paper's theoretical results, checked."""

from functools import partial

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sdexp.run.cli import hydra_errors_in_one_line, run_task
from sdexp.run.failures import exit_on_stop, stop_on_signals


@hydra_errors_in_one_line
@hydra.main(config_path="pkg://sdexp.conf", config_name="theory", version_base="1.3")
def theory(cfg: DictConfig) -> None:
    from sdexp.theory.task import run_theory  # torch: after the signal handlers

    run_task(cfg, partial(run_theory, command=" ".join(HydraConfig.get().overrides.task)))


def main() -> None:
    """The command (``sdexp-theory``, ``python -m sdexp.theory``): one line and exit status 2
    for bad input, as ``sdexp-train`` (``sdexp.run.cli``)."""
    with stop_on_signals(defer=True, restore=False):
        exit_on_stop(theory)


if __name__ == "__main__":
    main()
