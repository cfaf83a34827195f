"""A training run (``sdexp-train``): the command (``cli``, ``failures``), its config checked once
(``config``, ``typecheck``, ``identity``), the task (``training``) around the LightningModule
(``module``, ``callbacks``, ``checkpoints``, ``graphs``), its directory (``directory``), what it
prints (``console``), where it runs (``sharing``, ``slurm``). It imports nothing of the analysis
or the tracking."""
