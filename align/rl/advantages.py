"""Advantages: masked statistics, GAE (Schulman et al. 2016) and the critic-free baselines.

Tensors are ``(batch, tokens)``, aligned on response tokens; ``mask`` is 1 on a response's tokens
and 0 on the padding after it (a response's tokens are a prefix of its row).
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (over ``dim``, or all)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance of ``x`` over the masked positions."""
    return masked_mean((x - masked_mean(x, mask)) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over the masked positions (``shift_mean=False`` keeps the mean: returns are
    scaled, not centred); padding comes out 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each response's tokens: ``(advantages, returns)``.

    ``delta_t = r_t + gamma V_{t+1} - V_t`` (``V`` past a response's last token is 0: the episode ends),
    ``A_t = delta_t + gamma lam A_{t+1}``, ``returns = A + V``. Padding positions come out 0.
    """
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): each of a prompt's K sequence scores minus the
    mean of the other K - 1. ``scores`` is ``(prompts * K,)``, a prompt's K responses adjacent."""
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 responses per prompt")
    s = scores.view(-1, group_size)
    baseline = (s.sum(1, keepdim=True) - s) / (group_size - 1)
    return (s - baseline).reshape(-1)


def group_norm_advantages(scores: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's group baseline (Shao et al. 2024): ``(s - mean) / (std + eps)`` within each prompt's K
    responses (sample std, as GRPO)."""
    if group_size < 2:
        raise ValueError("a group baseline needs at least 2 responses per prompt")
    s = scores.view(-1, group_size)
    return ((s - s.mean(1, keepdim=True)) / (s.std(1, keepdim=True) + eps)).reshape(-1)
