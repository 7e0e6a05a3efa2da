"""The reward-model client: both reward models scoring (prompt, response) text, and the combined
reward of a batch under a combination rule. What rejection sampling, PPO, preference labelling,
evaluation and ``align score`` call.

Responses are scored from their text, so a reward model need not share the policy's tokenizer.
Repeated (prompt, response) entries, common among a sharp policy's K samples, are scored once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from align.combine import combine_rewards, gate_branch, resolve_rule
from align.combine.config import CombineConfig
from align.combine.transform import post_transform
from align.config import ModelConfig
from align.records import Prompt, distinct
from align.reward.config import RewardModelConfig
from align.reward.model import load_reward_model, score

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class RewardModel:
    """One reward model with its tokenizer and how it reads: sequence length and scoring batch."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    max_seq_len: int
    batch_size: int

    @classmethod
    def load(cls, path: Path, rm_cfg: RewardModelConfig, model_cfg: ModelConfig) -> RewardModel:
        """The reward model saved at ``path``, reading as ``rm_cfg`` says (``max_seq_len``, ``eval_batch_size``)."""
        model, tokenizer = load_reward_model(path, model_cfg)
        return cls(model, tokenizer, rm_cfg.max_seq_len, rm_cfg.eval_batch_size)

    def scores(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """``(N,)`` raw rewards, float64."""
        raw = score(self.model, self.tokenizer, prompts, responses, max_seq_len=self.max_seq_len,
                    batch_size=self.batch_size)
        return torch.as_tensor(raw, dtype=torch.float64)

    def probabilities(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """``(N,)`` sigmoid of the rewards: the scale the gate reads."""
        return torch.sigmoid(self.scores(prompts, responses))


@dataclass
class RewardModels:
    """The helpfulness and the safety reward model, trained separately (Llama 2 section 3.2.2)."""

    helpfulness: RewardModel
    safety: RewardModel

    def probabilities(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(R_h, R_s)``: the sigmoid of each model's score, one entry per (prompt, response)."""
        return self.helpfulness.probabilities(prompts, responses), self.safety.probabilities(prompts, responses)


@dataclass(frozen=True)
class Scored:
    """Scores of a batch of (prompt, response): both models, the rule's value, the transformed reward."""

    r_h: torch.Tensor
    r_s: torch.Tensor
    combined: torch.Tensor  # the rule's value, on the probability scale
    reward: torch.Tensor  # whiten(logit(combined)) when configured, else combined
    branch: list[str] | None  # the gate's branch per entry (llama2_gate only)


def score_responses(rms: RewardModels, combine: CombineConfig, prompts: Sequence[Prompt],
                    responses: Sequence[str]) -> Scored:
    """Both reward models' probabilities, the rule's combined value and the transformed reward of each
    (prompt, response); ``is_safety`` is each prompt's tag."""
    first, where = distinct([(p.text, r) for p, r in zip(prompts, responses)])
    r_h, r_s = rms.probabilities([prompts[i].text for i in first], [responses[i] for i in first])
    r_h, r_s = r_h[where], r_s[where]
    tags = torch.tensor([p.is_safety for p in prompts], dtype=torch.bool)
    combined = combine_rewards(resolve_rule(combine.rule, combine.params), r_h, r_s, tags, whiten_logit=False).double()
    reward = post_transform(combined, whiten_logit=combine.whiten_logit, eps=combine.logit_eps)
    branch = gate_branch(r_s, tags, **combine.params) if combine.rule == "llama2_gate" else None
    return Scored(r_h, r_s, combined, reward, branch)
