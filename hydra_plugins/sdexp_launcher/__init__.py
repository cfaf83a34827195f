"""sdexp's SLURM launcher (``hydra/launcher=slurm``, ...), found by Hydra's plugin discovery."""
