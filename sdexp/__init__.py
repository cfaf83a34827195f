"""sdexp: Stochastic Depth experiments after Hayou & Ayed, "Regularization in ResNet with
Stochastic Depth" (NeurIPS 2021)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sdexp")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
