"""``sdexp-train mode=sensemode budget=0.3`` (or ``python train.py ...`` in a checkout): train a
Stable ResNet with stochastic depth at a mode and budget (configs: ``sdexp/conf/train.yaml``)."""

import hydra
from omegaconf import DictConfig

from sdexp.config import check_config
from sdexp.errors import exit_on_config_error


@hydra.main(config_path="pkg://sdexp.conf", config_name="train", version_base="1.3")
def train(cfg: DictConfig) -> None:
    with exit_on_config_error():
        check_config(cfg)  # bad input fails within seconds, before Lightning is even imported
        from sdexp.training import train as run

        run(cfg)
