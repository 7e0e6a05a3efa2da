"""The evaluation stage (align/stages/eval.py): the newest policy on the held-out prompts."""

from __future__ import annotations

from conftest import manifest, statuses


def test_the_eval_round_reproduces_the_sft_rounds_own_measurement(completed_smoke_run):
    """02-eval measures 01-sft's model with the same eval settings and seed: the same draws, the same metrics."""
    run_dir, _ = completed_smoke_run
    m = manifest(run_dir, "02-eval")
    assert m["parents"] == ["00-sandbox", "01-sft"]
    ours, sft = dict(m["metrics"]["gold"]), dict(manifest(run_dir, "01-sft")["metrics"]["gold"])
    ours.pop("eval_seconds"), sft.pop("eval_seconds")
    assert ours == sft
    assert (run_dir / "rounds" / "02-eval" / "eval_samples.jsonl").read_bytes() == \
        (run_dir / "rounds" / "01-sft" / "eval_samples.jsonl").read_bytes()


def test_a_field_the_eval_stage_reads_rebuilds_it(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    config = manifest(run_dir, "02-eval")["config"]
    assert {"eval.temperature", "eval.samples_per_prompt", "model.dtype"} <= set(config)
    assert all(k in ("seed", "model.dtype", "model.trust_remote_code") or k.startswith("eval.") for k in config)
    after = statuses(run_dir, "eval.temperature=1.0")
    assert after["02-eval"] == "stale" and after["00-sandbox"] == "completed"
    assert statuses(run_dir, "rs.k=2")["02-eval"] == "completed"
