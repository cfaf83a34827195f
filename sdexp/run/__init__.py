"""A training run (``sdexp-train``): the command, its config checks, the task around the
LightningModule, its directory, what it prints, where it runs. Nothing of the analysis or the
tracking."""
