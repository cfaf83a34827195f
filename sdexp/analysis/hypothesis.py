"""The Budget Hypothesis (Sec. 5), the names it speaks in, and where its regimes split.

"Assuming L >> 1, the uniform mode outperforms SenseMode in the large budget regime, while
SenseMode outperforms the uniform mode in the small budget regime" (Sec. 5); Sec. 6 reads
Table 2 with the regimes split at b = L_bar/L = 0.5. It predicts a sign reversal of
err(SenseMode) - err(Uniform), nothing about where it happens. ``MODE_NAMES``: how every table,
plot and verdict names the modes (the paper's spelling).
"""

MODE_NAMES = {"sensemode": "SenseMode", "uniform": "Uniform", "linear": "Linear"}
HYPOTHESIS = ("sensemode", "uniform")  # the Budget Hypothesis' pair (Sec. 5)
BOUNDARY = 0.5  # Sec. 6: small budget b < 0.5, large budget b >= 0.5
SMALL, LARGE = "small", "large"
#: The mode the hypothesis predicts better in each regime.
PREDICTED = {SMALL: "sensemode", LARGE: "uniform"}


def name(mode: str) -> str:
    """A mode as the paper names it: ``sensemode`` is SenseMode."""
    return MODE_NAMES.get(mode, mode)
