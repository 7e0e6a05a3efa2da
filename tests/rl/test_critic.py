"""The value model (align/rl/critic.py): a reward model read at every position, or the policy with a zero
head; a critic must read the policy's tokens; the paper's PPO values load as an overlay."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import ROOT

from align.chat import pad
from align.config import ModelConfig, load_config
from align.errors import AlignError
from align.models import load_tokenizer
from align.reward.model import load_reward_model
from align.sandbox.tokenizer import train_tokenizer
from align.stages.ppo import build_critic


def test_a_critic_from_the_reward_model_reads_its_score_at_every_position(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    rm_dir = run_dir / "rounds" / "07-rm-helpfulness" / "rm"
    policy_dir = run_dir / "rounds" / "09-rs" / "model"
    tok = load_tokenizer(policy_dir)
    critic = build_critic("helpfulness", policy_dir=policy_dir, rm_dirs={"helpfulness": rm_dir}, tokenizer=tok,
                          model_cfg=ModelConfig())
    rm, _ = load_reward_model(rm_dir, ModelConfig())
    rows = [tok("What is 3 plus 4? The answer is 7.")["input_ids"], tok("Hi there.")["input_ids"]]
    ids, mask = pad(rows, tok.pad_token_id, left=False)
    with torch.no_grad():
        v = critic(input_ids=ids, attention_mask=mask)
        scores = rm(input_ids=ids, attention_mask=mask).logits[:, 0]
    last = mask.sum(1) - 1
    # the RM's score is its head at the last real token: the critic's value there is that score
    assert torch.allclose(v[torch.arange(2), last], scores, atol=1e-5)
    assert v.shape == ids.shape

    zero = build_critic("policy", policy_dir=policy_dir, rm_dirs={}, tokenizer=tok, model_cfg=ModelConfig())
    with torch.no_grad():
        assert zero(input_ids=ids, attention_mask=mask).abs().max() == 0  # a new head that starts at 0


def test_a_critic_with_another_tokenizer_is_refused(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    other = train_tokenizer(["an entirely different corpus of words"] * 20, vocab_size=120)
    with pytest.raises(AlignError, match="critic_init: helpfulness.*not the policy's.*critic_init: policy"):
        build_critic("helpfulness", policy_dir=run_dir / "rounds" / "09-rs" / "model",
                     rm_dirs={"helpfulness": run_dir / "rounds" / "07-rm-helpfulness" / "rm"}, tokenizer=other,
                     model_cfg=ModelConfig())


def test_the_papers_ppo_values_load_as_an_overlay(tmp_path):
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump({"extends": str(ROOT / "configs" / "ppo-paper.yaml"), "campaign": "real",
                                    "ppo": {"beta": 0.005}}))
    cfg = load_config(path)
    assert (cfg.ppo.lr, cfg.ppo.batch_size, cfg.ppo.minibatch_size, cfg.ppo.adam_eps) == (1e-6, 512, 64, 1e-5)
    assert cfg.ppo.beta == 0.005 and cfg.ppo.lam == 0.95 and cfg.ppo.gamma == 1.0  # 34B/70B's beta
