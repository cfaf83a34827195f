"""python train.py mode=sensemode budget=0.3: train a Stable ResNet with stochastic depth."""

import hydra
from omegaconf import DictConfig

from sdexp.training import exit_on_config_error, train


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_config_error():
        train(cfg)


if __name__ == "__main__":
    main()
