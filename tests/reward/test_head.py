"""The ``loglik`` reward head: the scalar at the last token plus c times the answer's mean log-likelihood."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from align.config import ModelConfig
from align.errors import AlignError
from align.models import load_tokenizer
from align.records import PreferencePair, read_records
from align.reward.config import RewardModelConfig
from align.reward.head import CONFIG_KEY, HEAD_FILE, attach_head, head_of, save_head
from align.reward.model import load_reward_model, score
from align.reward.train import train_reward_model


def _pairs(run_dir, n=8):
    return read_records(run_dir / "rounds" / "00-sandbox" / "prefs_helpfulness_train.jsonl", PreferencePair)[:n]


def _policy_mean_logprob(policy_dir, tokenizer, prompt, answer):
    """By hand, from the causal LM's logits: the mean over the answer's tokens and EOS of log p(token | before)."""
    policy = LlamaForCausalLM.from_pretrained(policy_dir).eval()
    prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               tokenize=True, return_dict=False)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([list(prompt_ids) + answer_ids])
    with torch.no_grad():
        logp = torch.log_softmax(policy(input_ids=ids).logits[0].double(), -1)
    start = len(prompt_ids)
    return float(np.mean([logp[start + i - 1, t].item() for i, t in enumerate(answer_ids)]))


def test_with_the_scalar_zeroed_the_reward_is_the_policys_own_mean_answer_loglik(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    sft = run_dir / "rounds" / "01-sft" / "model"
    tokenizer = load_tokenizer(sft)
    model, _ = load_reward_model(sft, ModelConfig())
    with torch.no_grad():
        model.score.weight.zero_()
    attach_head(model, "loglik", coef=1.0, init_dir=sft)
    pairs = _pairs(run_dir, 4)
    prompts = [p.prompt.text for p in pairs] * 2
    answers = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    with torch.no_grad():
        ours = score(model, tokenizer, prompts, answers, max_seq_len=256, batch_size=3)  # mixed lengths in a batch
    expected = [_policy_mean_logprob(sft, tokenizer, p, a) for p, a in zip(prompts, answers)]
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    with torch.no_grad():  # and the head's weight scales it: c = 2 doubles every reward
        model.align_reward_head.coef.fill_(2.0)
        np.testing.assert_allclose(score(model, tokenizer, prompts, answers, max_seq_len=256, batch_size=8),
                                   2 * np.array(expected), atol=2e-4)


def test_training_learns_the_weight_and_a_saved_head_scores_the_same_after_loading(completed_smoke_run, tmp_path):
    run_dir, _ = completed_smoke_run
    sft = run_dir / "rounds" / "01-sft" / "model"
    model, tokenizer = load_reward_model(sft, ModelConfig())
    assert head_of(model) is None  # a plain classifier: the last-token head
    cfg = RewardModelConfig(head="loglik", loglik_coef=0.5, lr=1e-3, batch_size=8, max_steps=4, log_every=1)
    train_reward_model(model, tokenizer, _pairs(run_dir, 32), cfg, seed=0, init_dir=sft)
    coef = head_of(model).coef.item()
    assert coef != 0.5  # learned with the backbone
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    save_head(model, tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / "config.json").read_text())[CONFIG_KEY] == "loglik"
    assert (tmp_path / "rm" / HEAD_FILE).is_file()
    pairs = _pairs(run_dir, 6)
    args = ([p.prompt.text for p in pairs], [p.chosen for p in pairs])
    with torch.no_grad():
        before = score(model, tokenizer, *args, max_seq_len=256, batch_size=4)
    loaded, _ = load_reward_model(tmp_path / "rm", ModelConfig())
    assert head_of(loaded).coef.item() == pytest.approx(coef)
    with torch.no_grad():
        np.testing.assert_allclose(score(loaded, tokenizer, *args, max_seq_len=256, batch_size=4), before, atol=1e-5)
    (tmp_path / "rm" / HEAD_FILE).unlink()
    with pytest.raises(AlignError, match=rf"rm: config.json names the 'loglik' reward head and {HEAD_FILE} is missing"):
        load_reward_model(tmp_path / "rm", ModelConfig())


def test_an_untied_lm_head_is_read_from_the_policy_checkpoint(completed_smoke_run, tmp_path):
    run_dir, _ = completed_smoke_run
    tokenizer = load_tokenizer(run_dir / "rounds" / "01-sft" / "model")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    model, _ = load_reward_model(tmp_path / "policy", ModelConfig())
    with torch.no_grad():
        model.score.weight.zero_()
    head = attach_head(model, "loglik", coef=1.0, init_dir=tmp_path / "policy")
    assert not head.tied and head.new_params[-1] is head.lm_weight  # trained alongside the backbone
    p = _pairs(run_dir, 1)[0]
    with torch.no_grad():
        ours = score(model, tokenizer, [p.prompt.text], [p.chosen], max_seq_len=256, batch_size=1)
    np.testing.assert_allclose(ours, [_policy_mean_logprob(tmp_path / "policy", tokenizer, p.prompt.text, p.chosen)],
                               atol=1e-4)


def test_an_encoder_or_an_unknown_head_is_refused():
    encoder = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=32, num_labels=1))
    with pytest.raises(AlignError, match="head: loglik needs a causal LM reward model; BertForSequenceClassification"):
        attach_head(encoder, "loglik", coef=1.0, init_dir=None)
    with pytest.raises(AlignError, match="reward head 'mean'"):
        attach_head(encoder, "mean", coef=1.0, init_dir=None)
