"""The depth of the sampled subnetwork, L_delta = sum_l delta_l (Lemma 1).

With independent delta_l ~ Bernoulli(p_l), L_delta is Poisson-binomial: mean L_p = sum p_l,
variance v_p = sum p_l (1 - p_l). For a fixed budget the variance (and the Lemma 1 bound) is
largest for the uniform mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import brentq


def depth_distribution(survival: Sequence[float]) -> np.ndarray:
    """P(L_delta = k) for k = 0..L, exactly (the Poisson-binomial pmf, by convolution)."""
    pmf = np.ones(1)
    for p in np.asarray(survival, dtype=np.float64):
        pmf = np.convolve(pmf, [1.0 - p, p])
    return pmf


def expected_depth(survival: Sequence[float]) -> float:
    """L_p = E[L_delta] = sum_l p_l (the budget times L)."""
    return float(np.sum(survival))


def depth_variance(survival: Sequence[float]) -> float:
    """v_p = Var[L_delta] = sum_l p_l (1 - p_l)."""
    p = np.asarray(survival, dtype=np.float64)
    return float(np.sum(p * (1.0 - p)))


def _bennett_u(t: float) -> float:
    return (1.0 + t) * math.log1p(t) - t


def lemma1_deviation(survival: Sequence[float], beta: float) -> float:
    """Eq. 2: with probability >= 1 - beta, |L_delta - L_p| <= v_p u^{-1}(log(2/beta) / v_p),
    u(t) = (1 + t) log(1 + t) - t (Bennett's inequality)."""
    v = depth_variance(survival)
    if v == 0.0:
        return 0.0
    level = math.log(2.0 / beta) / v
    hi = 1.0
    while _bennett_u(hi) < level:
        hi *= 2.0
    return v * brentq(lambda t: _bennett_u(t) - level, 0.0, hi, xtol=1e-12)


def gate_record(gate) -> dict:
    """What a run records of its ``SurvivalGate``: p, the sensitivities it came from, and the
    mean and variance of L_delta."""
    p = gate.survival
    seen = {"survival": p, "sensitivity": gate.sensitivity, "sensitivity_se": gate.sensitivity_se}
    return seen | {"expected_depth": expected_depth(p), "depth_variance": depth_variance(p)}
