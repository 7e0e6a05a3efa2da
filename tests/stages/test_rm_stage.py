"""The rm stage (align/stages/rm.py) through the user's entry point: the smoke campaign's 03-rm-helpfulness and
04-rm-safety, a real data set through a data spec, and what rebuilds its round."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, align_cli, manifest, statuses
from safetensors.torch import load_file

from align.config import ModelConfig
from align.records import PreferencePair, read_records
from align.reward.model import load_reward_model, score


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
        weights = load_file(run_dir / "rounds" / round_id / "rm" / "model.safetensors")
        assert weights["score.weight"].shape == (1, 32)  # one output on the policy's hidden size
    # world 3's helpfulness RM has the loglik head (configs/sandbox.yaml): its learned coefficient beside the
    # classifier (the sandbox's embeddings are tied, so no LM head of its own); the safety RM is a plain classifier
    head = load_file(run_dir / "rounds" / "03-rm-helpfulness" / "rm" / "reward_head.safetensors")
    assert set(head) == {"coef"} and head["coef"].numel() == 1
    assert not (run_dir / "rounds" / "04-rm-safety" / "rm" / "reward_head.safetensors").exists()
    assert "accuracy_by_bin" in _metrics(run_dir, "04-rm-safety")
    # The sandbox helpfulness RM is also asked to pick the right answer among 5 on held-out prompts.
    v = _metrics(run_dir, "03-rm-helpfulness")["verification"]
    benign = sum(json.loads(line)["family"] == "benign" for line in
                 (run_dir / "rounds" / "00-sandbox" / "eval_prompts.jsonl").read_text().splitlines())
    assert v["n"] == benign > 0 and v["candidates"] == 5 and 0 <= v["top1"] <= 1
    assert set(v["top1_by_category"]) <= {"lookup", "arithmetic", "sort", "multistep"}
    lo, hi = v["top1_ci95"]
    assert lo <= v["top1"] <= hi
    assert "verification" not in _metrics(run_dir, "04-rm-safety")


def test_rm_mix_follows_the_campaigns_shares(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    # smoke: 200 pairs per axis. Helpfulness (the default campaign's share 1/3: safety pairs are half of the
    # paper's "equal part", which it samples from safety and open-source data): round(200 * 0.3333 / 0.6667) = 100
    # of 300. Safety: helpfulness pairs are 10% of the mix (90/10): round(200 * 0.1 / 0.9) = 22 of 222.
    train = _metrics(run_dir, "03-rm-helpfulness")["train"]
    assert (train["pairs"], train["pairs_other_axis"]) == (300, 100)
    train = _metrics(run_dir, "04-rm-safety")["train"]
    assert (train["pairs"], train["pairs_other_axis"]) == (222, 22)


def test_saved_rm_scores_reproduce_the_round_accuracy(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    model, tokenizer = load_reward_model(run_dir / "rounds" / "04-rm-safety" / "rm", ModelConfig())
    pairs = read_records(run_dir / "rounds" / "00-sandbox" / "prefs_safety_eval.jsonl", PreferencePair)
    prompts = [p.prompt.text for p in pairs]
    r_c = score(model, tokenizer, prompts, [p.chosen for p in pairs], max_seq_len=128, batch_size=128)
    r_r = score(model, tokenizer, prompts, [p.rejected for p in pairs], max_seq_len=128, batch_size=128)
    assert round(float(np.mean(r_c > r_r)), 4) == _metrics(run_dir, "04-rm-safety")["accuracy"]


def test_batched_scoring_equals_one_at_a_time(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    model, tokenizer = load_reward_model(run_dir / "rounds" / "03-rm-helpfulness" / "rm", ModelConfig())
    prompts = ["What is 3 plus 4?", "Where does Kesjor live? Kesjor lives in Lunia.", "Hi!"]
    responses = ["The answer is 7.", "I can't help with that.", "The answer is Lunia. I hope this helps you today."]
    batched = score(model, tokenizer, prompts, responses, max_seq_len=128, batch_size=3)
    single = [score(model, tokenizer, [p], [r], max_seq_len=128, batch_size=1)[0] for p, r in zip(prompts, responses)]
    np.testing.assert_allclose(batched, single, atol=1e-5)


HH = Path(__file__).parents[2].parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"


def _real_data_config(tmp_path, init: Path, data: Path) -> Path:
    cfg = {"campaign": "real", "seed": 0, "stages": [{"kind": "rm", "name": "safety"}],
           "reward": {"safety": {"init": str(init), "other_axis_share": 0.0, "eval_fraction": 0.25, "lr": 1e-3,
                                 "batch_size": 8, "max_seq_len": 64, "margin": "none", "log_every": 5,
                                 "data": [{"spec": str(ROOT / "data_specs" / "hh_rlhf_harmless.yaml"),
                                           "path": str(data)}]}}}
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.skipif(not HH.exists(), reason="../shared/data not beside the checkout")
def test_rm_stage_trains_on_real_pairs_through_a_data_spec(completed_smoke_run, tmp_path):
    run_dir, _ = completed_smoke_run
    rows = gzip.open(HH, "rt").read().splitlines()[:40]
    data = tmp_path / "hh.jsonl"
    data.write_text("\n".join(rows) + "\n")
    config = _real_data_config(tmp_path, run_dir / "rounds" / "01-sft" / "model", data)
    result = align_cli("run", str(config), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "run" / "rounds" / "00-rm-safety" / "manifest.json").read_text())
    m = manifest["metrics"]
    source = m["sources"]["hh-rlhf-harmless"]
    assert source["rows"] == 40 and source["kept"] + sum(source["dropped"].values()) == 40
    assert source["eval"] == round(0.25 * source["kept"]) and source["train"] == source["kept"] - source["eval"]
    assert m["n"] == source["eval"] and m["train"]["pairs"] == source["train"] and m["train"]["pairs_other_axis"] == 0
    assert manifest["parents"] == []  # no sandbox: the spec and the file are the round's inputs
    assert any(str(data) in k for k in manifest["input_hashes"])

    # The same config again is a no-op; a changed data file rebuilds the round.
    again = align_cli("run", str(config), "--run-dir", str(tmp_path / "run"))
    assert again.returncode == 0 and "reused" in again.stderr + again.stdout
    data.write_text("\n".join(rows[:30]) + "\n")
    changed = align_cli("run", str(config), "--run-dir", str(tmp_path / "run"))
    assert changed.returncode == 0, changed.stderr
    m = json.loads((tmp_path / "run" / "rounds" / "00-rm-safety" / "manifest.json").read_text())["metrics"]
    assert m["sources"]["hh-rlhf-harmless"]["rows"] == 30


def test_rm_stage_without_data_or_sandbox_is_refused(tmp_path):
    cfg = {"campaign": "x", "stages": [{"kind": "rm", "name": "safety"}], "reward": {"safety": {"init": "/nope"}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    result = align_cli("run", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "stages[0] (rm safety): needs an earlier sandbox stage" in result.stderr
    assert not (tmp_path / "run" / "rounds").exists() or not any((tmp_path / "run" / "rounds").iterdir())


def test_a_field_the_rm_stage_reads_rebuilds_that_axis_only(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    config = manifest(run_dir, "04-rm-safety")["config"]
    assert "reward.safety" in config and "reward.helpfulness" not in config  # the whole section: logged with steps
    assert {"model.dtype", "model.trust_remote_code"} <= set(config)
    after = statuses(run_dir, "reward.safety.lm_coef=0.25")
    assert after["03-rm-helpfulness"] == after["01-sft"] == "completed"
    assert after["04-rm-safety"] == after["08-rm-safety"] == "stale"
    after = statuses(run_dir, "reward.helpfulness.margin=large")
    assert after["03-rm-helpfulness"] == "stale" and after["04-rm-safety"] == "completed"
