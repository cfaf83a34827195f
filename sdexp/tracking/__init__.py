"""Weights & Biases: access without Lightning (``wandb_access``), a run's logger (``loggers``), the
Report of a sweep (``report``) and its command (``dashboard``: ``sdexp-dashboard``)."""
