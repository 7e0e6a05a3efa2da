"""The PPO loop (align/rl/ppo.py) on a tiny random Llama with scripted reward models: resume from a
checkpoint, NaN rewards, LoRA's single copy of the base weights, dropout, temperature, the no-EOS score."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaForSequenceClassification

from align.combine.config import CombineConfig
from align.records import Prompt
from align.rl.checkpoint import Checkpoints
from align.rl.config import PPOConfig
from align.models import disable_dropout
from align.rl.critic import ValueModel
from align.rl.ppo import NonFiniteError, PPOModels, train_ppo
from align.rl.rollout import Rollout, token_logprobs

PROMPTS = [Prompt(id=str(i), text=t, family="benign", category="x", is_safety=False)
           for i, t in enumerate(["What is 3 plus 4?", "Hi", "Where does Kesjor live?", "List: apple, pear."] * 2)]


class LengthRewards:
    """R_h rises with the answer's length, R_s 0.9; ``nan_after`` calls, NaN scores."""

    def __init__(self, nan_after: int | None = None):
        self.calls, self.nan_after = 0, nan_after

    def probabilities(self, prompts, responses):
        self.calls += 1
        r_h = torch.sigmoid(torch.tensor([len(r) / 10 - 1.0 for r in responses], dtype=torch.float64))
        if self.nan_after is not None and self.calls > self.nan_after:
            r_h = torch.full_like(r_h, float("nan"))
        return r_h, torch.full_like(r_h, 0.9)


def cfg(**kw) -> PPOConfig:
    base = dict(iterations=4, batch_size=4, minibatch_size=2, epochs=2, max_new_tokens=8, lr=1e-3, critic_lr=1e-3,
                eval_every=2, checkpoint_every=2, temperature=0.9)
    return PPOConfig(**(base | kw))


def make_models(policy, *, lora: bool = False) -> PPOModels:
    pol = copy.deepcopy(policy)
    config = copy.deepcopy(pol.config)
    config.num_labels = 1
    torch.manual_seed(0)  # the head's initialisation
    critic_cls = LlamaForSequenceClassification(config)
    critic_cls.load_state_dict(pol.state_dict(), strict=False)
    disable_dropout(pol)
    if lora:
        from align.config import LoraSettings
        from align.models import with_lora

        return PPOModels(with_lora(pol, LoraSettings(enabled=True, r=4)), None, ValueModel(critic_cls))
    return PPOModels(pol, copy.deepcopy(pol).requires_grad_(False), ValueModel(critic_cls))


def run(models, tokenizer, c, tmp_path, **kw):
    return train_ppo(models, tokenizer, kw.pop("rms", LengthRewards()), CombineConfig(rule="helpfulness_only"),
                     PROMPTS, c, seed=0, log=lambda m: None, **kw)


def test_a_run_killed_after_its_first_checkpoint_resumes_there_and_ends_as_an_uninterrupted_run(
        policy, tokenizer, tmp_path):
    c = cfg()
    whole = make_models(policy)
    run(whole, tokenizer, c, tmp_path, checkpoints=Checkpoints(tmp_path / "a", "fp"))

    class Killed(Exception):
        pass

    def crash(point):
        if point == "ppo-checkpoint-2":
            raise Killed

    first = make_models(policy)
    with pytest.raises(Killed):
        run(first, tokenizer, c, tmp_path, checkpoints=Checkpoints(tmp_path / "b", "fp"), crash=crash)
    resumed = make_models(policy)  # a new process: the starting weights again
    result = run(resumed, tokenizer, c, tmp_path, checkpoints=Checkpoints(tmp_path / "b", "fp"))
    assert result.resumed_from == 2 and len(result.history) == 4
    for a, b in zip(whole.policy.state_dict().values(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(whole.critic.state_dict().values(), resumed.critic.state_dict().values()):
        assert torch.equal(a, b)
    # a checkpoint of another config (fingerprint) is never resumed
    other = run(make_models(policy), tokenizer, c, tmp_path, checkpoints=Checkpoints(tmp_path / "b", "other"))
    assert other.resumed_from is None


def test_nan_rewards_stop_the_run_with_a_clear_error_and_keep_the_last_checkpoint(policy, tokenizer, tmp_path):
    c = cfg(iterations=6)
    ckpts = Checkpoints(tmp_path / "ck", "fp")
    # 1 call per iteration (no evaluation): the 4th iteration's scores are NaN, after the checkpoint at 2
    with pytest.raises(NonFiniteError, match=r"ppo iteration 3: .*NaN.*it-000002"):
        run(make_models(policy), tokenizer, c, tmp_path, checkpoints=ckpts, rms=LengthRewards(nan_after=3))
    last = ckpts.latest()
    assert last is not None and last.iteration == 2 and last.state["history"][-1]["step"] == 2


def test_lora_keeps_one_copy_of_the_base_weights_and_its_reference_is_the_starting_policy(policy, tokenizer):
    models = make_models(policy, lora=True)
    assert models.reference is None
    rollout = Rollout.build([[1, 5, 6], [1, 7]], [[8, 9, tokenizer.eos_token_id], [10]], tokenizer.pad_token_id)
    start, _ = token_logprobs(policy, rollout, 0.9)
    train_ppo(models, tokenizer, LengthRewards(), CombineConfig(rule="helpfulness_only"), PROMPTS,
              cfg(iterations=2, lr=1e-2), seed=0, log=lambda m: None)
    trainable = {n for n, p in models.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    base_ptrs = [p.data_ptr() for n, p in models.policy.named_parameters() if "lora_" not in n]
    assert len(base_ptrs) == len(set(base_ptrs))  # no second copy of a base weight
    assert torch.allclose(models.reference_logprobs(rollout, 0.9), start, atol=1e-6)
    trained, _ = token_logprobs(models.policy, rollout, 0.9)
    assert not torch.allclose(trained, start, atol=1e-4)  # the adapter learned something


def test_log_probabilities_use_the_logits_divided_by_the_temperature(policy):
    rollout = Rollout.build([[1, 5, 6]], [[8, 9]], 0)
    with torch.no_grad():
        lp, _ = token_logprobs(policy, rollout, 0.5)
        logits = policy(input_ids=rollout.input_ids).logits[0]
    expected = [torch.log_softmax(logits[2] / 0.5, -1)[8], torch.log_softmax(logits[3] / 0.5, -1)[9]]
    assert lp[0].tolist() == pytest.approx([float(x) for x in expected], abs=1e-5)


def test_dropout_is_off_in_the_policy_and_the_critic(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=32, attention_dropout=0.3))
    model.model.layers[0].mlp.add_module("drop", torch.nn.Dropout(0.5))
    disable_dropout(model)
    assert model.config.attention_dropout == 0.0
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_an_answer_without_eos_gets_the_fixed_score(policy, tokenizer):
    # max_new_tokens 1: almost no answer can end with EOS; every score is the no-EOS score
    models = make_models(policy)
    result = run(models, tokenizer, cfg(iterations=1, max_new_tokens=1, no_eos_score=-3.0, minibatch_size=4),
                 None)
    line = result.history[0]  # a random policy's first token is almost never EOS (1 in ~300)
    assert line["no_eos"] == 1.0 and line["reward"] == -3.0


def test_the_config_refuses_what_ppo_cannot_do():
    with pytest.raises(ValueError, match="top_p"):
        PPOConfig(top_p=0.9)
    with pytest.raises(ValueError, match="group_size"):
        PPOConfig(advantage="rloo")
    with pytest.raises(ValueError, match="critics"):
        PPOConfig(algorithm="ppo_lagrangian", advantage="rloo", group_size=2)


def _states_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.values(), b.values(), strict=True))


def test_a_critic_warm_up_trains_only_the_value_model(policy, tokenizer):
    models = make_models(policy)
    start_policy = {k: v.clone() for k, v in models.policy.state_dict().items()}
    start_critic = {k: v.clone() for k, v in models.critic.state_dict().items()}
    result = run(models, tokenizer, cfg(iterations=2, critic_warmup=2), None)
    assert _states_equal(models.policy.state_dict(), start_policy)
    assert not _states_equal(models.critic.state_dict(), start_critic)
    assert "losses/policy" not in result.history[0] and "losses/value" in result.history[0]


def test_rloo_and_group_norm_run_without_a_critic(policy, tokenizer):
    for advantage in ("rloo", "group_norm"):
        models = make_models(policy)
        models.critic = None
        start = {k: v.clone() for k, v in models.policy.state_dict().items()}
        result = run(models, tokenizer, cfg(iterations=1, advantage=advantage, group_size=2), None)
        assert not _states_equal(models.policy.state_dict(), start)
        assert "losses/value" not in result.history[0] and "explained_variance" not in result.history[0]


def test_keep_best_heldout_reward_restores_the_best_evaluation_points_policy(policy, tokenizer):
    models = make_models(policy)
    snapshots, scripted = {}, {0: 0.5, 2: 0.9, 4: 0.6}

    def evaluate(m, iteration):
        snapshots[iteration] = {k: v.clone() for k, v in m.policy.state_dict().items()}
        return {"rm_reward": scripted[iteration]}

    result = run(models, tokenizer, cfg(keep="best_heldout_reward"), None, evaluate=evaluate)
    assert result.kept_iteration == 2 and [e["iteration"] for e in result.evals] == [0, 2, 4]
    assert _states_equal(models.policy.state_dict(), snapshots[2])
    assert not _states_equal(snapshots[2], snapshots[4])
