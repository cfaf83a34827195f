"""The paper's theory, checked numerically: one experiment per result, each a function that
returns an ``Outcome`` (tables, a figure in the style of the paper's, a markdown summary).

    python -m sdexp.theory experiment=depth        # Lemma 1, Fig. 1a
    python -m sdexp.theory experiment=gradient     # Prop. 1, Table 1, Fig. 2
    python -m sdexp.theory experiment=regularizer  # Theorem 1, Fig. 3, eq. 6
    python -m sdexp.theory experiment=normality    # Theorem 2, Figs. 4 and 5

``<name>_quick`` runs each in seconds; ``logger=wandb`` also logs to Weights & Biases.
"""
