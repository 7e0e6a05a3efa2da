"""Fine-tuning with the answer-only loss (align/sft.py): masking, the loss formula, and training that
lowers the loss."""

from __future__ import annotations

import math

import pytest
import torch

from align.sandbox.model import tiny_llama
from align.sandbox.tokenizer import train_tokenizer
from align.sft import IGNORE_INDEX, FinetuneConfig, answer_only_loss, build_examples, collate, finetune

TEXTS = ["Where does Kesjor live?", "The answer is Lunia.", "What is 3 plus 4?", "The answer is 7.",
         "I can't help with that."] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


def test_answer_only_loss_matches_hand_computation():
    # One sequence of 3 tokens over a vocab of 2; position 0 predicts token 1 (a prompt token,
    # ignored), position 1 predicts token 2 (an answer token, label 1).
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1]])
    # Only position 1 counts: -log softmax([2, 0])[1] = log(1 + e^2) = 2.126928
    assert answer_only_loss(logits, labels).item() == pytest.approx(math.log(1 + math.e ** 2), rel=1e-6)


def test_prompt_positions_are_ignored_by_the_loss(tokenizer):
    examples, skipped = build_examples(tokenizer, [("Where does Kesjor live?", "The answer is Lunia.")],
                                       max_seq_len=64)
    assert skipped == 0
    e = examples[0]
    n_prompt = sum(label == IGNORE_INDEX for label in e["labels"])
    answer = tokenizer.decode(e["input_ids"][n_prompt:])
    assert answer == "The answer is Lunia.</s>"
    assert all(label == IGNORE_INDEX for label in e["labels"][:n_prompt])
    assert e["labels"][n_prompt:] == e["input_ids"][n_prompt:]
    batch = collate(examples, tokenizer.pad_token_id)
    torch.manual_seed(0)
    logits = torch.randn(1, len(e["input_ids"]), len(tokenizer))
    base = answer_only_loss(logits, batch["labels"])
    perturbed = logits.clone()
    perturbed[:, : n_prompt - 1] += 100 * torch.randn_like(perturbed[:, : n_prompt - 1])  # predict prompt tokens
    assert answer_only_loss(perturbed, batch["labels"]).item() == pytest.approx(base.item(), abs=1e-6)
    perturbed[:, n_prompt - 1] += 5.0 * torch.randn(len(tokenizer))  # predicts the first answer token
    assert answer_only_loss(perturbed, batch["labels"]).item() != pytest.approx(base.item(), abs=1e-6)


def test_long_prompts_are_skipped_and_long_answers_cut(tokenizer):
    examples, skipped = build_examples(tokenizer, [("word " * 100, "The answer is 7."),
                                                   ("What is 3 plus 4?", "The answer is 7. " * 20)],
                                       max_seq_len=24)
    assert skipped == 1 and len(examples) == 1 and len(examples[0]["input_ids"]) == 24


def test_padding_is_masked(tokenizer):
    examples, _ = build_examples(tokenizer, [("What is 3 plus 4?", "The answer is 7."),
                                             ("Where does Kesjor live?", "I can't help with that.")], max_seq_len=64)
    batch = collate(examples, tokenizer.pad_token_id)
    pad = batch["attention_mask"] == 0
    assert pad.any() and (batch["labels"][pad] == IGNORE_INDEX).all()


def test_sft_lowers_the_loss_and_learns_the_answers(tokenizer):
    model = tiny_llama(tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                       max_position_embeddings=64, seed=0)
    pairs = [("What is 3 plus 4?", "The answer is 7."), ("Where does Kesjor live?", "The answer is Lunia.")] * 16
    result = finetune(model, tokenizer, pairs, FinetuneConfig(max_steps=60, batch_size=8, lr=1e-2, warmup_ratio=0.0),
                       seed=0)
    assert result.steps == 60
    assert result.final_loss < 0.2 < 2.0 < result.first_loss
