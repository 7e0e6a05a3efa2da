"""Safe RLHF's Lagrange multiplier (Dai et al. 2023): maximise reward subject to ``E[cost] <= threshold``
through ``min_theta max_{lambda >= 0} -R(theta) + lambda (C(theta) - threshold)``.

``lambda`` is kept as ``log lambda`` (so it stays positive) and takes a gradient-ascent step on
``lambda (C - threshold)``: it rises while the mean episode cost is above the threshold and falls
once it is below.
"""

from __future__ import annotations

import math


def lagrange_step(log_lambda: float, mean_cost: float, threshold: float, lr: float, *,
                  max_lambda: float | None = None) -> float:
    """One ascent step: ``log lambda += lr * lambda * (mean_cost - threshold)`` (the gradient of
    ``lambda (C - d)`` with respect to ``log lambda``); ``max_lambda`` caps it."""
    if not math.isfinite(mean_cost):
        raise ValueError(f"the mean episode cost is {mean_cost}")
    lam = math.exp(log_lambda)
    log_lambda = log_lambda + lr * lam * (mean_cost - threshold)
    if max_lambda is not None:
        log_lambda = min(log_lambda, math.log(max_lambda))
    return log_lambda


def actor_advantage(reward_advantages, cost_advantages, lam: float):
    """The actor's advantage under the multiplier: ``(A_r - lambda A_c) / (1 + lambda)``."""
    return (reward_advantages - lam * cost_advantages) / (1.0 + lam)
