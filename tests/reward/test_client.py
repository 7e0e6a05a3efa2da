"""The reward-model client (align/reward/client.py): repeated samples scored once, each reward model
reading the text with its own tokenizer, the gate applied to both scores."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import PROMPTS, TEXTS, FixedRewardModels
from transformers import LlamaConfig, LlamaForSequenceClassification

from align.combine.config import CombineConfig
from align.records import Prompt, distinct
from align.reward.client import RewardModel, RewardModels, score_responses
from align.reward.model import score
from align.sandbox.tokenizer import train_tokenizer
from align.stages.rs import RejectionConfig, sample_and_score


class _CountingRewardModels(FixedRewardModels):
    def probabilities(self, prompts, responses):
        self.calls = list(zip(prompts, responses))
        return super().probabilities(prompts, responses)


def test_repeated_samples_are_scored_once_and_every_row_gets_its_score():
    assert distinct(["a", "b", "a", "c", "b"]) == ([0, 1, 3], [0, 1, 0, 2, 1])
    assert distinct([]) == ([], [])
    p1, p2 = (Prompt(id=i, text=t, family="benign", category="x", is_safety=False)
              for i, t in (("1", "Q1"), ("2", "Q2")))
    rms = _CountingRewardModels({"A.": 0.8, "B.": 0.4})
    scored = score_responses(rms, CombineConfig(), [p1, p1, p1, p2, p2], ["A.", "B.", "A.", "A.", "A."])
    assert rms.calls == [("Q1", "A."), ("Q1", "B."), ("Q2", "A.")]  # the same answer to another prompt is new
    assert scored.r_h.tolist() == [0.8, 0.4, 0.8, 0.8, 0.8]
    assert scored.combined.tolist() == [0.8, 0.4, 0.8, 0.8, 0.8]


def test_reward_model_with_another_tokenizer_scores_from_text(policy, tokenizer):
    """The policy and a reward model tokenize differently: samples are re-tokenized from text."""
    rm_tok = train_tokenizer([t.upper() for t in TEXTS] + TEXTS, vocab_size=280)
    assert rm_tok.get_vocab() != tokenizer.get_vocab()

    def rm(tok, seed):
        torch.manual_seed(seed)
        m = LlamaForSequenceClassification(LlamaConfig(
            vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
            intermediate_size=32, max_position_embeddings=256, pad_token_id=tok.pad_token_id, num_labels=1))
        return RewardModel(m.eval(), tok, max_seq_len=128, batch_size=128)

    rms = RewardModels(rm(tokenizer, 1), rm(rm_tok, 2))
    prompts = [Prompt(id=f"p{i}", text=t, family="benign", category="x", is_safety=i == 1)
               for i, t in enumerate(PROMPTS)]
    cfg = RejectionConfig(k=2, max_new_tokens=6)
    rows, combined = sample_and_score(policy, tokenizer, prompts, rms, CombineConfig(), cfg, temperature=1.0, seed=0)
    assert combined.shape == (3, 2) and len(rows) == 6
    texts = [r["response"] for r in rows]
    direct = score(rms.safety.model, rm_tok, [r["prompt"] for r in rows], texts, max_seq_len=128, batch_size=128)
    expected = [1 / (1 + math.exp(-x)) for x in direct]
    assert [r["r_s"] for r in rows] == pytest.approx(expected, abs=1e-6)
    # the gate: tagged prompt -> R_s
    assert all(r["combined"] == r["r_s"] and r["branch"] == "safety_tag" for r in rows if r["prompt_id"] == "p1")
