"""The paper's theory, checked numerically (docs/theory/README.md): one experiment per result,
each a function that returns an ``Outcome`` (tables, a figure in the style of the paper's, a
markdown summary). ``python -m sdexp.theory experiment=<name>``: depth (Lemma 1, Fig. 1a), gradient
(Prop. 1, Table 1, Fig. 2), regularizer (Theorem 1, Fig. 3, eq. 6), normality (Theorem 2, Figs. 4
and 5); ``<name>_quick`` runs each in seconds; ``logger=wandb`` also logs to Weights & Biases.
"""
