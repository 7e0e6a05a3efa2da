"""The SFT stage (align/stages/sft.py) through the user's entry point: the smoke campaign's 01-sft round,
its gold metrics, and what rebuilds it."""

from __future__ import annotations

import json

from conftest import manifest, statuses


def test_the_sft_round_saves_safetensors_and_measures_the_policy(completed_smoke_run):
    run_dir, output = completed_smoke_run
    sft = run_dir / "rounds" / "01-sft"
    assert list((sft / "model").glob("*.safetensors")) and not list((sft / "model").glob("*.bin"))
    m = manifest(run_dir, "01-sft")
    assert m["status"] == "completed" and m["parents"] == ["00-sandbox"]
    gold = m["metrics"]["gold"]
    assert gold["n"] == 64 and gold["samples_per_prompt"] == 2
    for key in ("violation_rate", "false_refusal_rate", "helpful_accuracy", "well_formed_rate"):
        lo, hi = gold["ci95"][key]
        assert 0 <= lo <= gold[key] <= hi <= 1
    samples = [json.loads(line) for line in (sft / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 128 and {"response", "violation", "correct", "refused", "gold_utility"} <= set(samples[0])
    steps = [json.loads(line) for line in (sft / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1]["losses/sft"] < steps[0]["losses/sft"]  # the smoke SFT lowers its loss
    assert steps[-1]["step"] == m["metrics"]["sft"]["steps"] and steps[-1]["charts/tokens_per_s"] > 0
    assert "01-sft: violation_rate=" in output


def test_a_field_the_sft_stage_reads_rebuilds_it(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    config = manifest(run_dir, "01-sft")["config"]
    assert {"sft", "model.hidden_size", "eval.samples_per_prompt"} <= set(config)
    assert not any(k.startswith(("reward", "rs", "prefs", "tracking", "campaign")) for k in config)
    for override in ("sft.log_every=7", "model.num_layers=3", "eval.top_p=0.9"):
        after = statuses(run_dir, override)
        assert after["00-sandbox"] == "completed" and after["01-sft"] == "stale", override
    assert statuses(run_dir, "reward.safety.lr=0.01")["01-sft"] == "completed"
