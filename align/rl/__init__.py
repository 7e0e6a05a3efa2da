"""Reinforcement learning from the reward models: the pieces of PPO (Llama 2 section 3.2.3) as pure
functions of float tensors shaped ``(batch, tokens)`` with a response mask (1 on response tokens,
0 on padding after EOS), and the rollout and value model the PPO stage composes them with.

- ``advantages``: masked mean and whitening, GAE, and the critic-free baselines (RLOO, group norm);
- ``losses``: the per-token KL penalty (k1, k3), the clipped policy and value losses;
- ``lagrangian``: Safe RLHF's multiplier step;
- ``rollout``: sampled responses as response-aligned tensors, log-probabilities and values;
- ``critic``: a value model from a reward model (or the policy) with a head read at every token.
"""

from align.rl.advantages import (
           gae,
           group_norm_advantages,
           masked_mean,
           masked_var,
           masked_whiten,
           rloo_advantages,
)
from align.rl.lagrangian import lagrange_step
from align.rl.losses import kl_penalty, policy_loss, value_loss

__all__ = ["gae", "group_norm_advantages", "kl_penalty", "lagrange_step", "masked_mean", "masked_var",
           "masked_whiten", "policy_loss", "rloo_advantages", "value_loss"]
