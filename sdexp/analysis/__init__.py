"""Tables and verdicts from files (``sdexp-table``: ``cli``), without torch, Lightning or Hydra:
every run found (``runs``), Table 2 (``tables``), the Budget Hypothesis' verdict (``verdict``,
decided by ``paired``, described per budget by ``per_budget``; ``hypothesis``, ``images``,
``variants``), the plots (``plots``) and the cost (``cost``)."""
