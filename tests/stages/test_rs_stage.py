"""The rejection-sampling stage (align/stages/rs.py): best-of-K selection, pooling across rounds,
regularized selection, the rs rounds of the smoke campaign, and what rebuilds them."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import FixedRewardModels, align_cli, manifest, statuses

from align.chat import answer_ids
from align.combine.config import CombineConfig
from align.errors import AlignError
from align.generate import sequence_logprobs
from align.models import load_causal_lm, load_tokenizer
from align.records import Prompt
from align.stages.rs import (RejectionConfig, best_of_k_curve, pool_best, reward_scale, select_training_set,
                             selection_value, top_n)


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
    rms = FixedRewardModels({"The answer is 8.": 0.3})
    kept = select_training_set(marked, prior, {"p": prompt}, rms, CombineConfig(), RejectionConfig(k=2, kl_coef=1.0),
                               ref_logprobs)
    assert kept == [(prompt.text, "The answer is 7.")]
    assert [r["selection"] for r in marked] == pytest.approx([-9.0, -2.0], abs=1e-4)
    assert [r["ref_logprob"] for r in marked] == [-10.0, -1.0]
    assert [(r["best_in_round"], r["kept"]) for r in marked] == [(False, False), (True, True)]
    # the prior answer (R = 0.3) is put on this round's scale: (logit(0.3) - 1.301) / 0.896 - 0.5 = -2.90 < -2;
    # whitened on its own (a batch of one gives 0) it would have scored -0.5 and won
    assert "ref_logprob" not in prior[0]  # prior rounds' rows are not modified


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rs_rounds_of_the_smoke_campaign_keep_each_prompts_best(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    first, second = manifest(run_dir, "05-rs"), manifest(run_dir, "09-rs")
    assert first["parents"] == ["00-sandbox", "01-sft", "03-rm-helpfulness", "04-rm-safety"]
    # the refreshed reward models, and every prior rs round (pool: all_prior)
    assert second["parents"] == ["00-sandbox", "01-sft", "07-rm-helpfulness", "08-rm-safety", "05-rs"]
    rows = _rows(run_dir / "rounds" / "09-rs" / "samples.jsonl")
    m = second["metrics"]
    # the default campaign's plain best-of-K (world 3: the helpfulness RM checks answers): the gate's argmax
    assert len(rows) == m["rs"]["samples"] == 48 * 4 and m["rs"]["kl_coef"] == 0.0
    by_prompt: dict[str, list[dict]] = {}
    for r in rows:
        assert r["combined"] == (r["r_s"] if r["is_safety"] or r["r_s"] < 0.15 else r["r_h"])
        assert "ref_logprob" not in r
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    for group in by_prompt.values():
        best = [r for r in group if r["best_in_round"]]
        assert len(best) == 1 and best[0]["combined"] == max(r["combined"] for r in group)
    # the prompts of both rounds are pooled: training examples = prompts seen in either round
    first_prompts = {r["prompt_id"] for r in _rows(run_dir / "rounds" / "05-rs" / "samples.jsonl")}
    assert m["rs"]["training_examples"] == len(first_prompts | set(by_prompt))
    assert m["rs"]["kept_from_prior_rounds"] > 0
    curve = m["rs"]["best_of_k"]
    assert list(curve) == ["1", "2", "4"] and curve["1"] <= curve["2"] <= curve["4"]
    assert (run_dir / "rounds" / "09-rs" / "model").is_dir() and m["gold"]["n"] == 64
    assert 0 <= m["win_rate_vs_parent"] <= 1 and m["kl_vs_sft"] > 0


def test_regularized_best_of_k_keeps_the_argmax_of_reward_plus_the_sft_likelihood(smoke_copy):
    result = align_cli("run", str(smoke_copy / "campaign.yaml"), "--run-dir", str(smoke_copy), "--until", "05-rs",
                       "--set", "rs.kl_coef=1.0")
    assert result.returncode == 0, result.stderr
    assert "[04-rm-safety] completed earlier: reused" in result.stderr
    m = manifest(smoke_copy, "05-rs")
    assert m["config"]["rs.kl_coef"] == 1.0 and m["metrics"]["rs"]["kl_coef"] == 1.0
    rows = _rows(smoke_copy / "rounds" / "05-rs" / "samples.jsonl")
    by_prompt: dict[str, list[dict]] = {}
    for r in rows:  # the gate, then reward + 1.0 * log pi_SFT(answer)
        assert r["selection"] == pytest.approx(r["reward"] + 1.0 * r["ref_logprob"], abs=1e-3)
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    for group in by_prompt.values():
        best = [r for r in group if r["best_in_round"]]
        assert len(best) == 1 and best[0]["selection"] == max(r["selection"] for r in group)
    # the reference is the SFT policy: recompute one answer's log-likelihood
    sft = smoke_copy / "rounds" / "01-sft" / "model"
    tokenizer, model = load_tokenizer(sft), load_causal_lm(sft)
    lp = sequence_logprobs(model, tokenizer, [rows[0]["prompt"]], [answer_ids(tokenizer, rows[0]["response"])],
                           batch_size=1)[0]
    assert math.fsum(lp) == pytest.approx(rows[0]["ref_logprob"], abs=1e-3)


def test_a_field_the_rs_stage_reads_rebuilds_its_rounds_and_no_other(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    config = manifest(run_dir, "05-rs")["config"]
    assert {"combine.params", "rs.kl_coef", "reward.helpfulness.max_seq_len", "eval.batch_size"} <= set(config)
    after = statuses(run_dir, "combine.params={threshold: 0.2}")
    assert [r for r, s in after.items() if s == "stale"] == ["05-rs", "06-prefs", "07-rm-helpfulness",
                                                              "08-rm-safety", "09-rs", "10-ppo"]
    after = statuses(run_dir, "rs.kl_prompts=16")  # read by the rs rounds only (step 5)
    assert [r for r, s in after.items() if s == "stale"] == ["05-rs", "06-prefs", "07-rm-helpfulness",
                                                              "08-rm-safety", "09-rs", "10-ppo"]
    assert statuses(run_dir, "prefs.k=3")["05-rs"] == "completed"
    # a branch the stage did not take: the grid is read only for `temperature: auto`, so changing it
    # rebuilds nothing, while choosing `auto` (a field the stage read) rebuilds the round
    assert "rs.temperature_grid" not in config and set(statuses(run_dir, "rs.temperature_grid=[0.5]").values()) == \
        {"completed"}
    assert statuses(run_dir, "rs.temperature=auto")["05-rs"] == "stale"
