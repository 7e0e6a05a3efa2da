"""The value model: a sequence classifier (a reward model, or the policy with a new scalar head) read
at every position instead of the last one. Value ``[i, t]`` estimates the return from the state before
response token t, the output at ``positions[i, t]`` (see ``rollout``).

Initialising the critic from a reward model (Llama 2 section 3.2.3, and Huang et al. 2024) starts it
with an idea of what is rewarded; it must read the policy's tokens, so it needs the policy's tokenizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from align.errors import AlignError
from align.rl.rollout import Rollout, at_responses

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

HEADS = ("score", "classifier", "v_head")


def value_head(model: PreTrainedModel) -> torch.nn.Module:
    """The scalar head of a sequence classifier."""
    for name in HEADS:
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise AlignError(f"{type(model).__name__}: no scalar head ({', '.join(HEADS)}) to read values from")


class ValueModel(torch.nn.Module):
    """A sequence classifier's backbone and scalar head, read at every position: ``(B, L)`` values. A
    module of its own so that accelerate prepares (and DDP wraps) the whole forward pass."""

    def __init__(self, classifier: PreTrainedModel):
        super().__init__()
        self.classifier = classifier
        self.head = value_head(classifier)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.classifier.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden).squeeze(-1).float()


def values(critic: torch.nn.Module, rollout: Rollout) -> torch.Tensor:
    """``(B, T)`` values of the states before each response token (0 on padding)."""
    v = critic(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask)
    return at_responses(v, rollout) * rollout.mask


def check_same_tokens(critic_tok: PreTrainedTokenizerBase, policy_tok: PreTrainedTokenizerBase, source: str) -> None:
    """A critic reads the policy's token ids: its tokenizer must be the policy's."""
    if critic_tok.get_vocab() != policy_tok.get_vocab():
        raise AlignError(f"ppo.critic_init: {source}: that model's tokenizer is not the policy's, so it cannot read "
                         "the policy's tokens; use critic_init: policy (a new value head on the policy)")


def negate_head(critic: PreTrainedModel) -> None:
    """Flip the head's sign: a safety reward model becomes a cost critic (cost = -score)."""
    with torch.no_grad():
        for p in value_head(critic).parameters():
            p.neg_()
