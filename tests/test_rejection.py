"""Rejection sampling: K samples from a shared prompt cache, best-of-K selection, pooling across
rounds, and the rs rounds of the smoke campaign."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from align.chat import answer_ids
from align.config import CombineConfig, RejectionConfig
from align.errors import AlignError
from align.generate import sample_k, sequence_logprobs
from align.records import Prompt
from align.rejection import (RewardModels, best_of_k_curve, distinct, pool_best, reference_logprobs, reward_scale,
                             sample_and_score, score_responses, select_training_set, selection_value, top_n)
from align.reward.train import score
from align.sandbox.model import tiny_llama
from align.sandbox.tokenizer import train_tokenizer

TEXTS = ["Where does Kesjor live? Kesjor lives in Lunia.", "The answer is Lunia.", "What is 3 plus 4?",
         "The answer is 7.", "I can't help with that.", "List: apple, pear, plum. What is the first word?"] * 20
PROMPTS = ["What is 3 plus 4?", "Hi", "Where does Kesjor live? Kesjor lives in Lunia. Tell me, please."]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def policy(tokenizer):
    return tiny_llama(tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                      max_position_embeddings=256, seed=0)


def test_k_samples_from_a_shared_prompt_cache_match_each_sampled_alone(policy, tokenizer):
    """Log-probabilities recorded while sampling K answers from one shared, left-padded prompt
    cache equal those of each (prompt, answer) scored alone, unpadded, to 1e-5."""
    out = sample_k(policy, tokenizer, PROMPTS, k=3, temperature=1.0, top_p=1.0, max_new_tokens=10,
                   batch_size=8, seed=0)
    assert [len(group) for group in out] == [3, 3, 3]
    for i, group in enumerate(out):
        assert all(s.prompt_index == i for s in group)
        for s in group:
            (alone,) = sequence_logprobs(policy, tokenizer, [PROMPTS[i]], [s.token_ids], batch_size=1)
            assert len(alone) == len(s.logprobs) == len(s.token_ids)
            torch.testing.assert_close(torch.tensor(s.logprobs), torch.tensor(alone), atol=1e-5, rtol=0)
    # the K samples of a prompt are different draws, not one draw repeated
    assert len({tuple(s.token_ids) for s in out[2]}) > 1


def test_shared_cache_first_token_distribution_equals_a_plain_forward(policy, tokenizer):
    """Greedy (temperature 0) answers from the shared cache equal one-prompt-at-a-time greedy answers."""
    shared = sample_k(policy, tokenizer, PROMPTS, k=2, temperature=0.0, top_p=1.0, max_new_tokens=8,
                      batch_size=8, seed=0)
    for i, p in enumerate(PROMPTS):
        alone = sample_k(policy, tokenizer, [p], k=1, temperature=0.0, top_p=1.0, max_new_tokens=8,
                         batch_size=1, seed=0)[0][0]
        assert shared[i][0].token_ids == shared[i][1].token_ids == alone.token_ids


def test_sampling_bad_input(policy, tokenizer):
    kw = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4, "batch_size": 4, "seed": 0}
    with pytest.raises(AlignError, match="k must be at least 1"):
        sample_k(policy, tokenizer, PROMPTS, k=0, **kw)
    with pytest.raises(AlignError, match="prompt set is empty"):
        sample_k(policy, tokenizer, [], k=2, **kw)
    with pytest.raises(AlignError, match=r"prompt 2 is \d+ tokens, longer than max_prompt_tokens=12"):
        sample_k(policy, tokenizer, PROMPTS, k=2, max_prompt_tokens=12, **kw)
    with pytest.warns(UserWarning, match="keeping their last 12 tokens"):
        out = sample_k(policy, tokenizer, PROMPTS, k=2, max_prompt_tokens=12, long_prompts="truncate", **kw)
    assert len(out) == 3


def test_k_below_one_is_a_config_error():
    with pytest.raises(ValueError, match="k"):
        RejectionConfig(k=0)


def test_best_of_k_curve_and_top_n_hand_computed():
    rewards = torch.tensor([[0.1, 0.5, 0.3, 0.9], [0.7, 0.2, 0.8, 0.4]], dtype=torch.float64)
    # k=1: mean(0.1, 0.7) = 0.4; k=2: mean(0.5, 0.7) = 0.6; k=4: mean(0.9, 0.8) = 0.85
    assert best_of_k_curve(rewards) == {"1": 0.4, "2": 0.6, "4": 0.85}
    assert top_n([0.1, 0.5, 0.3, 0.9], 1) == [3]  # the argmax
    assert top_n([0.1, 0.5, 0.5, 0.9], 3) == [3, 1, 2]  # ties keep the earlier sample first
    assert best_of_k_curve(torch.tensor([[0.2, 0.6, 0.4]])) == {"1": 0.2, "2": 0.6, "3": 0.6}


def test_pool_keeps_each_prompts_best_across_rounds():
    current = {"p1": [("new-a", 0.6)], "p2": [("new-b", 0.3)]}
    prior = {"p1": [("old-a", 0.4), ("older-a", 0.5)], "p2": [("old-b", 0.9)], "p3": [("old-c", 0.2)]}
    pooled = pool_best(current, prior, keep=1)
    assert pooled == {"p1": [("new-a", 0.6, "current")], "p2": [("old-b", 0.9, "prior")],
                      "p3": [("old-c", 0.2, "prior")]}
    assert [t for t, _, _ in pool_best(current, prior, keep=2)["p1"]] == ["new-a", "older-a"]
    # the same text in both counts once
    assert pool_best({"p": [("x", 0.5)]}, {"p": [("x", 0.5)]}, keep=2) == {"p": [("x", 0.5, "current")]}


def test_regularized_selection_value_and_the_rounds_reward_scale_hand_computed():
    reward, ref = torch.tensor([0.5, -0.2]), torch.tensor([-1.0, -3.0])
    assert selection_value(reward, ref, 0.5).tolist() == pytest.approx([0.0, -1.7])  # 0.5 - 0.5, -0.2 - 1.5
    assert selection_value(reward, None, 0.0) is reward  # plain best-of-K
    with pytest.raises(AlignError, match="reference"):
        selection_value(reward, None, 0.5)
    # logits 0 and 2: mean 1, std 1, so whiten gives -1 and 1; logit 1 (p = 0.7311) maps to 0
    scale = reward_scale(torch.tensor([0.5, 1 / (1 + math.exp(-2))], dtype=torch.float64), CombineConfig())
    assert scale(torch.tensor([0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1))])).tolist() == \
        pytest.approx([-1.0, 1.0, 0.0], abs=1e-6)
    plain = reward_scale(torch.tensor([0.2, 0.4]), CombineConfig(whiten_logit=False))
    assert plain(torch.tensor([0.3])).tolist() == pytest.approx([0.3])


class _FixedRewardModels:
    """R_h per response text, R_s 0.9 (the gate reads R_h on an untagged prompt)."""

    def __init__(self, r_h: dict[str, float]):
        self.r_h = r_h

    def probabilities(self, prompts, responses):
        return (torch.tensor([self.r_h[r] for r in responses], dtype=torch.float64),
                torch.full((len(responses),), 0.9, dtype=torch.float64))


def test_regularized_best_of_k_keeps_the_answer_the_reference_finds_likely_and_pools_on_one_scale():
    prompt = Prompt(id="p", text="What is 3 plus 4?", family="benign", category="arithmetic", is_safety=False,
                    answer="7", split="train", template="t", entities=())
    rows = [{"prompt_id": "p", "response": "The answer is 9.", "combined": 0.9},  # RM's favourite, unlikely
            {"prompt_id": "p", "response": "The answer is 7.", "combined": 0.6}]
    ref = {"The answer is 9.": -10.0, "The answer is 7.": -1.0, "The answer is 8.": -0.5}

    def ref_logprobs(prompts, texts):
        assert [p.id for p in prompts] == ["p"] * len(texts)
        return [ref[t] for t in texts]

    plain = select_training_set([dict(r) for r in rows], [], {"p": prompt}, None, CombineConfig(),
                                RejectionConfig(k=2))
    assert plain == [(prompt.text, "The answer is 9.")]  # the argmax of the reward
    with pytest.raises(AlignError, match="kl_coef"):
        select_training_set([dict(r) for r in rows], [], {"p": prompt}, None, CombineConfig(),
                            RejectionConfig(k=2, kl_coef=1.0))
    # kl_coef 1: logits 2.197 and 0.405 whiten to +1 and -1; values 1 - 10 = -9 and -1 - 1 = -2
    marked = [dict(r) for r in rows]
    prior = [{"prompt_id": "p", "response": "The answer is 8.", "best_in_round": True}]
    rms = _FixedRewardModels({"The answer is 8.": 0.3})
    kept = select_training_set(marked, prior, {"p": prompt}, rms, CombineConfig(), RejectionConfig(k=2, kl_coef=1.0),
                               ref_logprobs)
    assert kept == [(prompt.text, "The answer is 7.")]
    assert [r["selection"] for r in marked] == pytest.approx([-9.0, -2.0], abs=1e-4)
    assert [r["ref_logprob"] for r in marked] == [-10.0, -1.0]
    assert [(r["best_in_round"], r["kept"]) for r in marked] == [(False, False), (True, True)]
    # the prior answer (R = 0.3) is put on this round's scale: (logit(0.3) - 1.301) / 0.896 - 0.5 = -2.90 < -2;
    # whitened on its own (a batch of one gives 0) it would have scored -0.5 and won
    assert "ref_logprob" not in prior[0]  # prior rounds' rows are not modified


class _CountingRewardModels(_FixedRewardModels):
    def probabilities(self, prompts, responses):
        self.calls = list(zip(prompts, responses))
        return super().probabilities(prompts, responses)


def test_repeated_samples_are_scored_once_and_every_row_gets_its_score():
    assert distinct(["a", "b", "a", "c", "b"]) == ([0, 1, 3], [0, 1, 0, 2, 1])
    assert distinct([]) == ([], [])
    p1, p2 = (Prompt(id=i, text=t, family="benign", category="x", is_safety=False) for i, t in (("1", "Q1"), ("2", "Q2")))
    rms = _CountingRewardModels({"A.": 0.8, "B.": 0.4})
    scored = score_responses(rms, CombineConfig(), [p1, p1, p1, p2, p2], ["A.", "B.", "A.", "A.", "A."])
    assert rms.calls == [("Q1", "A."), ("Q1", "B."), ("Q2", "A.")]  # the same answer to another prompt is new
    assert scored.r_h.tolist() == [0.8, 0.4, 0.8, 0.8, 0.8]
    assert scored.combined.tolist() == [0.8, 0.4, 0.8, 0.8, 0.8]


def test_reference_logprobs_of_repeated_answers_equal_each_scored_alone(policy, tokenizer):
    prompts, answers = [PROMPTS[0], PROMPTS[0], PROMPTS[1]], ["The answer is 7.", "The answer is 7.", "The answer is 7."]
    got = reference_logprobs(policy, tokenizer, prompts, answers)
    alone = [math.fsum(sequence_logprobs(policy, tokenizer, [p], [answer_ids(tokenizer, a)])[0])
             for p, a in zip(prompts, answers)]
    assert got == pytest.approx(alone, abs=1e-5) and got[0] == got[1] and got[0] != pytest.approx(got[2])


def test_reward_model_with_another_tokenizer_scores_from_text(policy, tokenizer):
    """The policy and a reward model tokenize differently: samples are re-tokenized from text."""
    rm_tok = train_tokenizer([t.upper() for t in TEXTS] + TEXTS, vocab_size=280)
    assert rm_tok.get_vocab() != tokenizer.get_vocab()

    def rm(tok, seed):
        torch.manual_seed(seed)
        m = LlamaForSequenceClassification(LlamaConfig(
            vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
            intermediate_size=32, max_position_embeddings=256, pad_token_id=tok.pad_token_id, num_labels=1))
        return m.eval(), tok

    rms = RewardModels(rm(tokenizer, 1), rm(rm_tok, 2))
    prompts = [Prompt(id=f"p{i}", text=t, family="benign", category="x", is_safety=i == 1)
               for i, t in enumerate(PROMPTS)]
    cfg = RejectionConfig(k=2, max_new_tokens=6)
    rows, combined = sample_and_score(policy, tokenizer, prompts, rms, CombineConfig(), cfg, temperature=1.0, seed=0)
    assert combined.shape == (3, 2) and len(rows) == 6
    texts = [r["response"] for r in rows]
    direct = score(rms.safety[0], rm_tok, [r["prompt"] for r in rows], texts)
    expected = [1 / (1 + math.exp(-x)) for x in direct]
    assert [r["r_s"] for r in rows] == pytest.approx(expected, abs=1e-6)
    # the gate: tagged prompt -> R_s
    assert all(r["combined"] == r["r_s"] and r["branch"] == "safety_tag" for r in rows if r["prompt_id"] == "p1")


def _manifest(run_dir, round_id):
    return json.loads((run_dir / "rounds" / round_id / "manifest.json").read_text())


def test_rs_rounds_of_the_smoke_campaign(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    first, second = _manifest(run_dir, "05-rs"), _manifest(run_dir, "09-rs")
    assert first["parents"] == ["00-sandbox", "01-sft", "03-rm-helpfulness", "04-rm-safety"]
    # the refreshed reward models, and every prior rs round (pool: all_prior)
    assert second["parents"] == ["00-sandbox", "01-sft", "07-rm-helpfulness", "08-rm-safety", "05-rs"]
    rows = [json.loads(line) for line in (run_dir / "rounds" / "09-rs" / "samples.jsonl").read_text().splitlines()]
    m = second["metrics"]
    assert len(rows) == m["rs"]["samples"] == 48 * 4
    # the best of each prompt's K samples is the argmax of the rule's value
    by_prompt: dict[str, list[dict]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    for group in by_prompt.values():
        best = [r for r in group if r["best_in_round"]]
        assert len(best) == 1 and best[0]["combined"] == max(r["combined"] for r in group)
        assert all(r["combined"] == (r["r_s"] if r["is_safety"] or r["r_s"] < 0.15 else r["r_h"]) for r in group)
    # the prompts of both rounds are pooled: training examples = prompts seen in either round
    first_prompts = {json.loads(line)["prompt_id"] for line in
                     (run_dir / "rounds" / "05-rs" / "samples.jsonl").read_text().splitlines()}
    assert m["rs"]["training_examples"] == len(first_prompts | set(by_prompt))
    assert m["rs"]["kept_from_prior_rounds"] > 0
    curve = m["rs"]["best_of_k"]
    assert list(curve) == ["1", "2", "4"] and curve["1"] <= curve["2"] <= curve["4"]
    assert (run_dir / "rounds" / "09-rs" / "model").is_dir() and m["gold"]["n"] == 64
    assert 0 <= m["win_rate_vs_parent"] <= 1 and m["kl_vs_sft"] > 0


def test_an_rs_round_raises_the_mean_combined_reward_of_greedy_answers(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    greedy = _manifest(run_dir, "05-rs")["metrics"]["greedy_reward"]
    assert greedy["policy"] > greedy["parent"]


def test_prefs_round_labels_new_pairs_and_the_reward_models_retrain_on_them(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    prefs = _manifest(run_dir, "06-prefs")
    assert prefs["parents"] == ["00-sandbox", "05-rs"]  # the newest policy's samples
    m = prefs["metrics"]
    assert m["labeler"] == "sandbox" and m["helpfulness"]["pairs"] > 0 and m["safety"]["pairs"] > 0
    assert m["helpfulness"]["gold_agreement"] > 0.5  # simulated annotators mostly agree with gold
    pairs = [json.loads(line) for line in (run_dir / "rounds" / "06-prefs" / "prefs_safety.jsonl").read_text()
             .splitlines()]
    assert len(pairs) == m["safety"]["pairs"] and all(p["prompt"]["family"] != "benign" for p in pairs)
    for round_id, axis, other, share in (("07-rm-helpfulness", "helpfulness", "safety", 0.5),
                                         ("08-rm-safety", "safety", "helpfulness", 0.1)):
        rm = _manifest(run_dir, round_id)
        assert "06-prefs" in rm["parents"]
        assert rm["metrics"]["refreshed_pairs"] == {axis: m[axis]["pairs"], other: m[other]["pairs"]}
        own = 200 + m[axis]["pairs"]  # the world's 200 pairs plus the new ones
        assert rm["metrics"]["train"]["pairs"] == own + round(own * share / (1 - share))


def test_ai_labeler_prefers_the_higher_reward_and_rates_the_gap():
    from align.prefs import label_with_reward_model

    p = Prompt(id="p", text="q", family="benign", category="x", is_safety=False)
    pairs = label_with_reward_model([p, p, p], ["a", "b", "same"], ["x", "y", "same"], "helpfulness",
                                    torch.tensor([0.9, 0.40, 0.5]), torch.tensor([0.2, 0.45, 0.5]))
    assert (pairs[0].chosen, pairs[0].rejected, pairs[0].rating) == ("a", "x", "significantly_better")  # gap 0.7
    assert (pairs[1].chosen, pairs[1].rejected, pairs[1].rating) == ("y", "b", "negligibly_better")  # gap 0.05
    assert pairs[2] is None  # identical answers are no comparison


def test_distinct_pairs_of_k_answers():
    from align.prefs import distinct_pairs

    assert distinct_pairs(["a", "b", "a", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]  # duplicates once
    assert distinct_pairs(["x", "x"]) == [] and len(distinct_pairs(list("abcd"))) == 6  # k(k-1)/2


def test_prefs_with_the_ai_labeler_and_imported_labels(smoke_copy, tmp_path):
    from conftest import align_cli

    result = align_cli("run", str(smoke_copy / "campaign.yaml"), "--run-dir", str(smoke_copy), "--until", "06-prefs",
                       "--set", "prefs.labeler=reward_model", "--set", "prefs.k=3")
    assert result.returncode == 0, result.stderr
    m = _manifest(smoke_copy, "06-prefs")
    assert m["parents"] == ["00-sandbox", "05-rs", "03-rm-helpfulness", "04-rm-safety"]
    assert m["metrics"]["labeler"] == "reward_model" and m["metrics"]["helpfulness"]["pairs"] > 0
    assert m["metrics"]["helpfulness"]["gold_agreement"] is not None
    pairs = [json.loads(line) for line in (smoke_copy / "rounds" / "06-prefs" / "prefs_helpfulness.jsonl")
             .read_text().splitlines()]
    per_prompt = Counter(p["prompt"]["id"] for p in pairs)
    assert max(per_prompt.values()) <= 3  # 3 answers: at most 3 distinct pairs a prompt
    assert len({(p["prompt"]["id"], *sorted((p["chosen"], p["rejected"]))) for p in pairs}) == len(pairs)
    assert m["metrics"]["helpfulness"]["pairs"] > len(per_prompt)  # more than one pair for some prompt

    labels = tmp_path / "human.jsonl"
    labels.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "good answer", "rejected": "bad answer",
                                          "rating": "better"}) + "\n" for i in range(5)))
    from conftest import ROOT

    spec = str(ROOT / "data_specs" / "generic_pairs.yaml")
    result = align_cli("run", str(smoke_copy / "campaign.yaml"), "--run-dir", str(smoke_copy), "--until", "07-rm-helpfulness",
                       "--set", "prefs.labeler=jsonl", "--set", f"prefs.data=[{{spec: {spec}, path: {labels}}}]")
    assert result.returncode == 0, result.stderr
    m = _manifest(smoke_copy, "06-prefs")["metrics"]
    assert m["labeler"] == "jsonl" and m["helpfulness"]["pairs"] == 5 and m["safety"]["pairs"] == 0
    assert _manifest(smoke_copy, "07-rm-helpfulness")["metrics"]["refreshed_pairs"]["helpfulness"] == 5


def test_regularized_rs_rounds_select_by_reward_plus_sft_log_likelihood(smoke_copy):
    from conftest import align_cli

    from align.models import load_causal_lm, load_tokenizer

    result = align_cli("run", str(smoke_copy / "campaign.yaml"), "--run-dir", str(smoke_copy), "--until", "09-rs",
                       "--set", "rs.kl_coef=0.5")
    assert result.returncode == 0, result.stderr
    m = _manifest(smoke_copy, "09-rs")["metrics"]
    assert m["rs"]["kl_coef"] == 0.5 and m["rs"]["kept_from_prior_rounds"] > 0
    rows = [json.loads(line) for line in (smoke_copy / "rounds" / "09-rs" / "samples.jsonl").read_text().splitlines()]
    by_prompt: dict[str, list[dict]] = {}
    for r in rows:
        assert r["selection"] == pytest.approx(r["reward"] + 0.5 * r["ref_logprob"], abs=1e-3)
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    for group in by_prompt.values():
        best = [r for r in group if r["best_in_round"]]
        assert len(best) == 1 and best[0]["selection"] == max(r["selection"] for r in group)
    # the reference is the SFT policy (not this round's parent 05-rs): recompute one answer's log-likelihood
    sft = smoke_copy / "rounds" / "01-sft" / "model"
    tokenizer, model = load_tokenizer(sft), load_causal_lm(sft)
    row = rows[0]
    lp = sequence_logprobs(model, tokenizer, [row["prompt"]], [answer_ids(tokenizer, row["response"])])[0]
    assert math.fsum(lp) == pytest.approx(row["ref_logprob"], abs=1e-3)
