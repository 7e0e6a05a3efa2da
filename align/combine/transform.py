"""The post-transform of the combined reward (Llama 2 section 3.2.3): ``whiten(logit(R_c))``.

The logit undoes the sigmoid so the reward lives on the reward models' score scale; ``R_c`` is
clamped to ``[eps, 1 - eps]`` first so scores of exactly 0 or 1 stay finite. Whitening
standardises over the batch (population std); a batch of one carries no scale and whitens to 0.
"""

from __future__ import annotations

import torch

from align.errors import AlignError


def logit(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    p = p.clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def whiten(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the batch; a batch of one gives 0."""
    return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps)


def combine_rewards(rule, r_h: torch.Tensor, r_s: torch.Tensor, is_safety: torch.Tensor, *,
                    whiten_logit: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """The combined reward of each entry: ``rule(R_h, R_s, is_safety)``, then ``whiten(logit(.))``."""
    if not (len(r_h) == len(r_s) == len(is_safety)):
        raise AlignError(f"R_h, R_s and is_safety differ in length: {len(r_h)}, {len(r_s)}, {len(is_safety)}")
    for name, r in (("R_h", r_h), ("R_s", r_s)):
        if not torch.isfinite(r).all():
            raise AlignError(f"{name} holds NaN or infinite scores")
    combined = rule(r_h, r_s, is_safety)
    if not torch.isfinite(combined).all():
        raise AlignError("the combination rule returned NaN or infinite rewards")
    return post_transform(combined, whiten_logit=whiten_logit, eps=eps)


def post_transform(combined: torch.Tensor, *, whiten_logit: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """``whiten(logit(R_c))`` when configured, else ``R_c`` unchanged."""
    return whiten(logit(combined, eps)) if whiten_logit else combined
