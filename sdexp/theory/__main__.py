"""python -m sdexp.theory experiment=gradient: one of the paper's theoretical results, checked."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sdexp.theory.task import run_theory


@hydra.main(config_path="pkg://sdexp.conf", config_name="theory", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_theory(cfg, command=" ".join(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
