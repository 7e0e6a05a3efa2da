"""The rm stage through the user's entry point (the smoke campaign's 03-rm-helpfulness, 04-rm-safety)."""

from __future__ import annotations

import json

import numpy as np
from safetensors.torch import load_file

from align.records import PreferencePair, read_records
from align.reward.train import load_reward_model, score


def _metrics(run_dir, round_id):
    return json.loads((run_dir / "rounds" / round_id / "manifest.json").read_text())["metrics"]


def test_rm_rounds_write_a_scalar_head_model_and_paper_metrics(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    for axis, round_id in (("helpfulness", "03-rm-helpfulness"), ("safety", "04-rm-safety")):
        m = _metrics(run_dir, round_id)
        assert m["axis"] == axis and m["n"] == 100
        assert set(m["accuracy_by_rating"]) <= {"significantly_better", "better", "slightly_better",
                                                 "negligibly_better"}
        assert set(m["cross_axis"]) == {"helpfulness", "safety"} and m["cross_axis"][axis] == m["accuracy"]
        assert "0.15" in m["unsafe_detection"] and 0 <= m["ece"] <= 1
        weights = load_file(next((run_dir / "rounds" / round_id / "rm").glob("*.safetensors")))
        assert weights["score.weight"].shape == (1, 32)  # one output on the policy's hidden size
    assert "accuracy_by_bin" in _metrics(run_dir, "04-rm-safety")


def test_rm_mix_follows_the_paper(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    # smoke: 200 pairs per axis. Helpfulness: + an equal part of safety pairs (200 of 400).
    # Safety: helpfulness pairs are 10% of the mix: round(200 * 0.1 / 0.9) = 22 of 222.
    train = _metrics(run_dir, "03-rm-helpfulness")["train"]
    assert (train["pairs"], train["pairs_other_axis"]) == (400, 200)
    train = _metrics(run_dir, "04-rm-safety")["train"]
    assert (train["pairs"], train["pairs_other_axis"]) == (222, 22)


def test_saved_rm_scores_reproduce_the_round_accuracy(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    model, tokenizer = load_reward_model(run_dir / "rounds" / "04-rm-safety" / "rm")
    pairs = read_records(run_dir / "rounds" / "00-sandbox" / "prefs_safety_eval.jsonl", PreferencePair)
    prompts = [p.prompt.text for p in pairs]
    r_c = score(model, tokenizer, prompts, [p.chosen for p in pairs])
    r_r = score(model, tokenizer, prompts, [p.rejected for p in pairs])
    assert round(float(np.mean(r_c > r_r)), 4) == _metrics(run_dir, "04-rm-safety")["accuracy"]


def test_batched_scoring_equals_one_at_a_time(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    model, tokenizer = load_reward_model(run_dir / "rounds" / "03-rm-helpfulness" / "rm")
    prompts = ["What is 3 plus 4?", "Where does Kesjor live? Kesjor lives in Lunia.", "Hi!"]
    responses = ["The answer is 7.", "I can't help with that.", "The answer is Lunia. I hope this helps you today."]
    batched = score(model, tokenizer, prompts, responses, batch_size=3)
    single = [score(model, tokenizer, [p], [r], batch_size=1)[0] for p, r in zip(prompts, responses)]
    np.testing.assert_allclose(batched, single, atol=1e-5)
