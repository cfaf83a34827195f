"""Budget grids (``hydra/sweeper=budget_grid``): the plan of a grid (``plan``), the sweeper's work
around it (``grid``) and its jobs on SLURM (``launchers``)."""
