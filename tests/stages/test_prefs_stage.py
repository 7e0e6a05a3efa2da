"""The preference-refresh stage (align/stages/prefs.py): new pairs on the newest policy's answers, the
AI labeler, imported labels, the reward models retrained on them, and what rebuilds the round."""

from __future__ import annotations

import json
from collections import Counter

import torch
from conftest import ROOT, align_cli, manifest, statuses

from align.records import Prompt
from align.stages.prefs import distinct_pairs, label_with_reward_model


def test_prefs_round_labels_new_pairs_and_the_reward_models_retrain_on_them(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    prefs = manifest(run_dir, "06-prefs")
    assert prefs["parents"] == ["00-sandbox", "05-rs"]  # the newest policy's samples
    m = prefs["metrics"]
    assert m["labeler"] == "sandbox" and m["helpfulness"]["pairs"] > 0 and m["safety"]["pairs"] > 0
    assert m["helpfulness"]["gold_agreement"] > 0.5  # simulated annotators mostly agree with gold
    pairs = [json.loads(line) for line in (run_dir / "rounds" / "06-prefs" / "prefs_safety.jsonl").read_text()
             .splitlines()]
    assert len(pairs) == m["safety"]["pairs"] and all(p["prompt"]["family"] != "benign" for p in pairs)
    for round_id, axis, other, share in (("07-rm-helpfulness", "helpfulness", "safety", 0.3333),
                                         ("08-rm-safety", "safety", "helpfulness", 0.1)):
        rm = manifest(run_dir, round_id)
        assert "06-prefs" in rm["parents"]
        assert rm["metrics"]["refreshed_pairs"] == {axis: m[axis]["pairs"], other: m[other]["pairs"]}
        own = 200 + m[axis]["pairs"]  # the world's 200 pairs plus the new ones
        assert rm["metrics"]["train"]["pairs"] == own + round(own * share / (1 - share))


def test_ai_labeler_prefers_the_higher_reward_and_rates_the_gap():
    p = Prompt(id="p", text="q", family="benign", category="x", is_safety=False)
    pairs = label_with_reward_model([p, p, p], ["a", "b", "same"], ["x", "y", "same"], "helpfulness",
                                    torch.tensor([0.9, 0.40, 0.5]), torch.tensor([0.2, 0.45, 0.5]))
    assert (pairs[0].chosen, pairs[0].rejected, pairs[0].rating) == ("a", "x", "significantly_better")  # gap 0.7
    assert (pairs[1].chosen, pairs[1].rejected, pairs[1].rating) == ("y", "b", "negligibly_better")  # gap 0.05
    assert pairs[2] is None  # identical answers are no comparison


def test_distinct_pairs_of_k_answers():
    assert distinct_pairs(["a", "b", "a", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]  # duplicates once
    assert distinct_pairs(["x", "x"]) == [] and len(distinct_pairs(list("abcd"))) == 6  # k(k-1)/2


def test_prefs_with_the_ai_labeler_and_imported_labels(smoke_copy, tmp_path):
    result = align_cli("run", str(smoke_copy / "campaign.yaml"), "--run-dir", str(smoke_copy), "--until", "06-prefs",
                       "--set", "prefs.labeler=reward_model", "--set", "prefs.k=3")
    assert result.returncode == 0, result.stderr
    m = manifest(smoke_copy, "06-prefs")
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
    spec = str(ROOT / "data_specs" / "generic_pairs.yaml")
    result = align_cli("run", str(smoke_copy / "campaign.yaml"), "--run-dir", str(smoke_copy),
                       "--until", "07-rm-helpfulness",
                       "--set", "prefs.labeler=jsonl", "--set", f"prefs.data=[{{spec: {spec}, path: {labels}}}]")
    assert result.returncode == 0, result.stderr
    m = manifest(smoke_copy, "06-prefs")["metrics"]
    assert m["labeler"] == "jsonl" and m["helpfulness"]["pairs"] == 5 and m["safety"]["pairs"] == 0
    assert manifest(smoke_copy, "07-rm-helpfulness")["metrics"]["refreshed_pairs"]["helpfulness"] == 5




def test_the_generation_batch_the_prefs_stage_reads_from_rs_rebuilds_its_round(smoke_copy):
    """The prefs stage samples in batches of ``rs.sample_batch_size`` (another stage's section): the
    field is in its round's config slice because the stage read it, so changing it rebuilds the round."""
    assert manifest(smoke_copy, "06-prefs")["config"]["rs.sample_batch_size"] == 64
    assert statuses(smoke_copy, "rs.sample_batch_size=16")["06-prefs"] == "stale"
    # read by no round up to 06-prefs: rs reads temperature_prompts only for `temperature: auto`
    assert statuses(smoke_copy, "rs.temperature_prompts=16")["06-prefs"] == "completed"
    before = manifest(smoke_copy, "06-prefs")
    result = align_cli("run", str(smoke_copy / "campaign.yaml"), "--run-dir", str(smoke_copy), "--until", "06-prefs",
                       "--set", "rs.sample_batch_size=16")
    assert result.returncode == 0, result.stderr
    assert "[04-rm-safety] completed earlier: reused" in result.stderr and "[06-prefs] running prefs" in result.stderr
    after = manifest(smoke_copy, "06-prefs")
    assert after["config"]["rs.sample_batch_size"] == 16 and after["config_hash"] != before["config_hash"]
