"""sdexp: Stochastic Depth experiments after Hayou & Ayed, "Regularization in ResNet with
Stochastic Depth" (NeurIPS 2021).

The paper's core is pure torch (``docs/api.md``): the gate (eq. 1 and 3), the survival
modes, the sensitivities (Sec. 5), the sampled depth (Lemma 1) and the residual networks, as
``sdexp.SenseMode``, ... imported on first use, so that ``import sdexp`` imports no torch. The
wings: ``sdexp.run``, ``sdexp.sweep``, ``sdexp.analysis``, ``sdexp.tracking``, ``sdexp.theory``.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sdexp")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

#: The core's names, by the module each lives in.
CORE = {
    "gate": ("SurvivalGate", "branch_scale"),
    "survival": ("MODES", "Mode", "NoSD", "Uniform", "Linear", "SenseMode", "check_budget"),
    "sensitivity": ("sensitivities", "removal_sensitivities", "sensitivity_samples", "summarize"),
    "subnetwork": ("depth_distribution", "expected_depth", "depth_variance", "lemma1_deviation"),
    "models": ("ResidualBlock", "ResidualNetwork", "CifarResNet", "VanillaResNet"),
}
_HOME = {name: module for module, names in CORE.items() for name in names}
__all__ = ["__version__", *_HOME]


def __getattr__(name: str):
    """``sdexp.SenseMode`` and the core's other names (``CORE``), imported on first use."""
    if name not in _HOME:
        raise AttributeError(f"module 'sdexp' has no attribute {name!r}")
    return getattr(import_module(f"sdexp.{_HOME[name]}"), name)
