"""python train.py mode=sensemode budget=0.3: train a Stable ResNet with stochastic depth."""

import hydra
from omegaconf import DictConfig

from sdexp.config import check_config
from sdexp.errors import exit_on_config_error


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_config_error():
        check_config(cfg)  # bad input fails within seconds, before Lightning is even imported
        from sdexp.training import train

        train(cfg)


if __name__ == "__main__":
    main()
