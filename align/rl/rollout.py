"""A batch of sampled responses as tensors, and the forward passes PPO takes over it.

Each row is a prompt followed by its response, right-padded (so positions need no offsets). The
RL math runs on response-aligned ``(batch, T)`` tensors: entry ``[i, t]`` is response i's t-th token,
predicted by the model's output at ``prompt_len[i] - 1 + t``; ``mask`` is 1 on response tokens (EOS
included when the response ended) and 0 on the padding after them. Padding is located by the
lengths, never by comparing token ids, so a tokenizer whose pad token is its EOS reads the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch



@dataclass
class Rollout:
    """Prompt + response token ids, right-padded, with where each response sits."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    positions: torch.Tensor  # (B, T): the position whose output predicts response token t
    response_ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T) float: 1 on response tokens

    @classmethod
    def build(cls, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> Rollout:
        if len(prompts) != len(responses) or not prompts:
            raise ValueError("a rollout needs as many responses as prompts, at least one")
        if any(len(r) == 0 for r in responses):
            raise ValueError("every response needs at least one token (an immediate EOS counts)")
        width = max(len(p) + len(r) for p, r in zip(prompts, responses))
        t_max = max(len(r) for r in responses)
        b = len(prompts)
        input_ids = torch.full((b, width), pad_id, dtype=torch.long)
        attention = torch.zeros((b, width), dtype=torch.long)
        positions = torch.zeros((b, t_max), dtype=torch.long)
        response_ids = torch.full((b, t_max), pad_id, dtype=torch.long)
        mask = torch.zeros((b, t_max))
        for i, (p, r) in enumerate(zip(prompts, responses)):
            n = len(p) + len(r)
            input_ids[i, :n] = torch.tensor(list(p) + list(r))
            attention[i, :n] = 1
            positions[i, : len(r)] = torch.arange(len(p) - 1, len(p) - 1 + len(r))
            response_ids[i, : len(r)] = torch.tensor(list(r))
            mask[i, : len(r)] = 1.0
        return cls(input_ids, attention, positions, response_ids, mask)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) response lengths in tokens."""
        return self.mask.sum(1).long()

    @property
    def last(self) -> torch.Tensor:
        """(B,) index of each response's last real token: where the sequence score lands."""
        return self.lengths - 1

    def select(self, idx: torch.Tensor) -> Rollout:
        """The rows ``idx`` (a minibatch), trimmed to their own widths."""
        mask = self.mask[idx]
        t = int(mask.sum(1).max())
        attention = self.attention_mask[idx]
        width = int(attention.sum(1).max())
        return Rollout(self.input_ids[idx, :width], attention[:, :width], self.positions[idx, :t],
                       self.response_ids[idx, :t], mask[:, :t])

    def to(self, device: torch.device) -> Rollout:
        return Rollout(*(x.to(device) for x in (self.input_ids, self.attention_mask, self.positions,
                                                 self.response_ids, self.mask)))


def at_responses(x: torch.Tensor, rollout: Rollout) -> torch.Tensor:
    """``x[i, positions[i, t]]`` for a ``(B, L, ...)`` tensor: its response-aligned ``(B, T, ...)`` view."""
    index = rollout.positions
    if x.dim() == 3:
        index = index.unsqueeze(-1).expand(-1, -1, x.shape[-1])
    return x.gather(1, index)


def sequence_reward(score: torch.Tensor, kl: torch.Tensor, rollout: Rollout, beta: float) -> torch.Tensor:
    """Per-token rewards: ``-beta * kl`` on every response token, plus the sequence ``score`` on its last
    real token (not on padding after EOS)."""
    rewards = -beta * kl * rollout.mask
    rewards[torch.arange(len(rollout)), rollout.last] += score.to(rewards.dtype)
    return rewards


def _supports_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the causal LM under any wrapper (accelerate, DDP, torch.compile, peft) takes ``logits_to_keep``."""
    import inspect

    inner = model
    for attr in ("module", "_orig_mod"):
        inner = getattr(inner, attr, inner)
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def token_logprobs(model: torch.nn.Module, rollout: Rollout, temperature: float, *,
                   with_entropy: bool = False, entropy_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(B, T)`` log-probabilities of the response tokens under ``model`` with its logits divided by the
    sampling temperature (the distribution the tokens were drawn from), and optionally the entropy
    (without a gradient unless ``entropy_grad``: logged, not trained).

    Logits are computed from the first position that predicts a response token on (``logits_to_keep``):
    no vocabulary-sized outputs for the prompts where the model supports it."""
    skip = int(rollout.positions[:, 0].min())  # outputs before this column predict prompt tokens only
    keep = rollout.input_ids.shape[1] - skip
    kwargs = {"logits_to_keep": keep} if _supports_logits_to_keep(model) else {}
    logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask, **kwargs).logits
    shift = rollout.input_ids.shape[1] - logits.shape[1]  # 0 when every position's logits came back
    index = (rollout.positions - shift).clamp(min=0)  # padding entries (position 0) are masked below
    logits = logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1])).float() / temperature
    logp = torch.log_softmax(logits, -1)
    logprobs = logp.gather(-1, rollout.response_ids.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        source = logp if entropy_grad else logp.detach()
        entropy = -(source.exp() * source).sum(-1)
    return logprobs * rollout.mask, entropy
