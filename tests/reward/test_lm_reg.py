"""GRM language-modelling regularisation of a reward model (``reward.<axis>.lm_coef``)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from align.config import ModelConfig
from align.errors import AlignError
from align.models import load_tokenizer
from align.records import PreferencePair, read_records
from align.reward.config import RewardModelConfig
from align.reward.data import chosen_answer_mask, collate_pairs, encode_pairs
from align.reward.lm_reg import LMRegularizer
from align.reward.model import load_reward_model
from align.reward.train import train_reward_model


def _pairs(run_dir, n=6):
    return read_records(run_dir / "rounds" / "00-sandbox" / "prefs_helpfulness_train.jsonl", PreferencePair)[:n]


def _policy_answer_loss(policy_dir, batch, pad_id):
    """The policy's own answer-only SFT loss on the chosen responses (HF's causal-LM loss)."""
    policy = LlamaForCausalLM.from_pretrained(policy_dir).eval()
    inputs = collate_pairs(batch, pad_id)
    n = len(batch)
    labels = inputs["input_ids"][:n].masked_fill(~chosen_answer_mask(batch, inputs["input_ids"].shape[1]), -100)
    with torch.no_grad():
        return policy(input_ids=inputs["input_ids"][:n], attention_mask=inputs["attention_mask"][:n],
                      labels=labels).loss


def _regularizer_loss(rm_dir, policy_dir, batch, pad_id):
    model, _ = load_reward_model(rm_dir, ModelConfig())
    model.eval()
    reg = LMRegularizer(model, policy_dir)
    inputs = collate_pairs(batch, pad_id)
    with torch.no_grad():
        model(**inputs)
        return reg.loss(inputs["input_ids"], chosen_answer_mask(batch, inputs["input_ids"].shape[1]))


def test_lm_loss_equals_the_policys_answer_only_sft_loss_with_tied_embeddings(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    sft = run_dir / "rounds" / "01-sft" / "model"
    tokenizer = load_tokenizer(sft)
    batch = encode_pairs(tokenizer, _pairs(run_dir), 128)
    # The mask covers exactly the chosen answer's tokens and its EOS, at the end of each sequence.
    for e, row in zip(batch, chosen_answer_mask(batch, max(len(e.chosen) for e in batch))):
        assert e.chosen_answer_len == len(tokenizer(_pairs(run_dir)[batch.index(e)].chosen,
                                                    add_special_tokens=False)["input_ids"]) + 1
        assert row.nonzero().flatten().tolist() == list(range(len(e.chosen) - e.chosen_answer_len, len(e.chosen)))
    ours = _regularizer_loss(sft, sft, batch, tokenizer.pad_token_id)
    torch.testing.assert_close(ours, _policy_answer_loss(sft, batch, tokenizer.pad_token_id), atol=1e-5, rtol=1e-5)


def test_an_untied_lm_head_is_read_from_the_checkpoint_and_a_missing_one_is_an_error(completed_smoke_run, tmp_path):
    run_dir, _ = completed_smoke_run
    tokenizer = load_tokenizer(run_dir / "rounds" / "01-sft" / "model")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    policy = LlamaForCausalLM(config)
    policy.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    assert "lm_head.weight" in load_file(tmp_path / "policy" / "model.safetensors")
    batch = encode_pairs(tokenizer, _pairs(run_dir), 128)
    ours = _regularizer_loss(tmp_path / "policy", tmp_path / "policy", batch, tokenizer.pad_token_id)
    torch.testing.assert_close(ours, _policy_answer_loss(tmp_path / "policy", batch, tokenizer.pad_token_id),
                               atol=1e-5, rtol=1e-5)

    config.num_labels = 1
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "classifier")  # no LM head saved
    tokenizer.save_pretrained(tmp_path / "classifier")
    model, _ = load_reward_model(tmp_path / "classifier", ModelConfig())
    with pytest.raises(AlignError, match=r"classifier: lm_coef > 0 needs .*lm_head\.weight"):
        LMRegularizer(model, tmp_path / "classifier")


def test_training_with_lm_coef_logs_the_lm_term_and_saves_a_plain_classifier(completed_smoke_run, tmp_path):
    run_dir, _ = completed_smoke_run
    sft = run_dir / "rounds" / "01-sft" / "model"
    pairs = _pairs(run_dir, 64)
    losses = {}
    for coef in (0.0, 1.0):
        model, tokenizer = load_reward_model(sft, ModelConfig())
        torch.manual_seed(0)
        model.score.reset_parameters()
        cfg = RewardModelConfig(lm_coef=coef, lr=1e-3, batch_size=16, max_steps=6, log_every=1)
        train_reward_model(model, tokenizer, pairs, cfg, seed=0, metrics_path=tmp_path / f"m{coef}.jsonl", init_dir=sft)
        rows = [json.loads(line) for line in (tmp_path / f"m{coef}.jsonl").read_text().splitlines()]
        logged = [r for r in rows if "losses/ranking" in r]
        assert len(logged) == 6
        assert all(("losses/lm" in r) == bool(coef) for r in logged)
        if coef:  # total = ranking + 1.0 * lm, step by step
            for r in logged:
                assert r["losses/total"] == pytest.approx(r["losses/ranking"] + r["losses/lm"], abs=2e-5)
            losses = logged
        model.save_pretrained(tmp_path / f"rm{coef}")
        saved = load_file(tmp_path / f"rm{coef}" / "model.safetensors")
        assert "score.weight" in saved and not any(k.startswith("lm_head") for k in saved)
    # The first step's LM term is the SFT policy's own answer loss on that batch: a language model, not noise
    # (a uniform guess over the vocabulary scores log V = 6.24 nats; the smoke SFT policy 3.84 on world 3, about half
    # of it on world 2).
    assert losses[0]["losses/lm"] < 0.7 * torch.log(torch.tensor(float(len(tokenizer)))).item()


def test_lm_coef_on_an_encoder_reward_model_is_refused(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    sft = run_dir / "rounds" / "01-sft" / "model"
    model, tokenizer = load_reward_model(sft, ModelConfig())
    tokenizer.cls_token = tokenizer.bos_token  # reads like an encoder's [CLS]-first pair encoding
    with pytest.raises(AlignError, match="lm_coef > 0 needs a causal LM reward model"):
        train_reward_model(model, tokenizer, _pairs(run_dir), RewardModelConfig(lm_coef=1.0, max_steps=1), seed=0,
                           init_dir=sft)
