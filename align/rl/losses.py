"""The PPO losses (Schulman et al. 2017, as in CleanRL's ppo.py) and the per-token KL penalty, on
``(batch, tokens)`` tensors with a response mask; each loss is a mean over the masked tokens."""

from __future__ import annotations

from typing import Literal

import torch

from align.rl.advantages import masked_mean


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
               estimator: Literal["k1", "k3"] = "k1") -> torch.Tensor:
    """Per-token estimate of ``KL(pi || pi_ref)`` from the sampled tokens' log-probabilities (Schulman,
    "Approximating KL divergence"): k1 = ``log pi - log pi_ref`` (unbiased, can be negative), k3 =
    ``(r - 1) - log r`` with ``r = pi_ref / pi`` (unbiased, never negative, lower variance)."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r} (k1 or k3)")


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate: ``max(-A r, -A clip(r, 1 - eps, 1 + eps))``, ``r = pi / pi_old``; returns the
    loss and ``approx_kl`` (k3 of old vs new) and ``clip_fraction`` over the masked tokens."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"approx_kl": masked_mean(ratio - 1 - log_ratio, mask),
                 "clip_fraction": masked_mean((torch.abs(ratio - 1.0) > clip).to(logprobs.dtype), mask)}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped value loss: ``0.5 max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)``; returns the
    loss and the share of tokens where the clipped term was larger."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_sq, clipped_sq = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_sq, clipped_sq), mask)
    with torch.no_grad():
        stats = {"value_clip_fraction": masked_mean((clipped_sq > unclipped_sq).to(values.dtype), mask)}
    return loss, stats
