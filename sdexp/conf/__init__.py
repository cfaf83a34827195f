"""The Hydra configs, shipped as package data: ``@hydra.main(config_path="pkg://sdexp.conf")``
finds them in an installed wheel as well as in a checkout."""
