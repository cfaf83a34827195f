"""sdexp's Hydra sweeper (``hydra/sweeper=budget_grid``), found by Hydra's plugin discovery."""
