"""sdexp: Stochastic Depth experiments after Hayou & Ayed, "Regularization in ResNet with
Stochastic Depth" (NeurIPS 2021)."""

from importlib.metadata import PackageNotFoundError, version

from sdexp.config import register_resolvers

try:
    __version__ = version("sdexp")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

register_resolvers()
