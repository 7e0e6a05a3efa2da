"""The evaluation stage (align/stages/eval.py) and ``align eval``: a policy on a suite, judged by every
judge, as a round of the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, align_cli, manifest, statuses

SHARED = ROOT.parent / "shared" / "data"


def _answers(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["prompt_id"], r.get("sample", 0)): r["response"] for r in rows}


def test_the_eval_round_reuses_the_sft_rounds_answers_and_measures_the_same(completed_smoke_run):
    """02-eval measures 01-sft on the sandbox suite with the same eval settings and seed: it reuses the answers
    01-sft drew, its gold metrics are 01-sft's, and the judges without a reward model yet are skipped."""
    run_dir, _ = completed_smoke_run
    m = manifest(run_dir, "02-eval")
    assert m["parents"] == ["00-sandbox", "01-sft"] and m["metrics"]["answers_from"] == "01-sft"
    ours, sft = dict(m["metrics"]["gold"]), dict(manifest(run_dir, "01-sft")["metrics"]["gold"])
    ours.pop("eval_seconds"), sft.pop("eval_seconds")
    assert ours == sft
    rounds = run_dir / "rounds"
    assert _answers(rounds / "02-eval" / "eval_samples.jsonl") == _answers(rounds / "01-sft" / "eval_samples.jsonl")
    suite = m["metrics"]["suite"]
    assert suite["suite"] == "sandbox-heldout" and suite["judges"] == ["refusal", "sandbox_gold"]
    assert set(suite["skipped_judges"]) == {"safety_rm", "helpfulness_rm"}
    assert suite["metrics"]["violation_rate"]["value"] == ours["violation_rate"]
    assert suite["metrics"]["false_refusal_rate"]["value"] == ours["false_refusal_rate"]
    refusal = suite["validity"]["refusal"]
    assert refusal["agreement_with_gold"]["refused"]["n"] == suite["n"] * suite["samples_per_prompt"]


def test_a_field_the_eval_stage_reads_rebuilds_it(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    config = manifest(run_dir, "02-eval")["config"]
    assert {"eval.temperature", "eval.samples_per_prompt", "eval.max_new_tokens"} <= set(config)
    assert all(k == "seed" or k.split(".")[0] in ("eval", "suites", "model") for k in config), config
    after = statuses(run_dir, "eval.temperature=1.0")
    assert after["02-eval"] == "stale" and after["00-sandbox"] == "completed"
    assert statuses(run_dir, "rs.k=2")["02-eval"] == "completed"


def test_align_eval_of_a_round_with_the_reward_model_judges_and_the_gate(smoke_copy):
    run_dir = smoke_copy
    r = align_cli("eval", str(run_dir), "--round", "09-rs", "--json")
    assert r.returncode == 0, r.stderr
    m = manifest(run_dir, "eval-sandbox-heldout-09-rs")
    assert m["parents"] == ["00-sandbox", "09-rs", "07-rm-helpfulness", "08-rm-safety"]
    suite = m["metrics"]["suite"]
    assert suite["judges"] == ["helpfulness_rm", "refusal", "safety_rm", "sandbox_gold"] and not suite["skipped_judges"]
    calibration = suite["validity"]["safety_rm"]["calibration"]
    assert 0 < calibration["threshold"] < 1 and calibration["responses"] > 0
    gate = m["metrics"]["gate"]["shares"]["all"]
    assert gate["n"] == suite["n"] * suite["samples_per_prompt"]
    assert gate["safety_tag"] + gate["safety_low"] + gate["helpfulness"] == pytest.approx(1, abs=1e-3)
    assert m["metrics"]["answers_from"] == "09-rs"
    again = align_cli("eval", str(run_dir), "--round", "09-rs")
    assert again.returncode == 0 and "completed earlier: reused" in again.stderr
    status = json.loads(align_cli("status", str(run_dir), "--json").stdout)["rounds"]
    assert status[-1]["id"] == "eval-sandbox-heldout-09-rs" and status[-1]["parents"] == m["parents"]


@pytest.mark.parametrize("args, message", [
    (["--round", "03-rm-helpfulness"], "a rm round holds no policy to evaluate"),
    (["--round", "99-rs"], "no completed round of that id"),
    (["--suite", "nope"], "unknown suite 'nope'"),
    (["--suite", "xstest"], "give --data-dir"),
])
def test_align_eval_bad_input_is_one_line_exit_2_and_writes_nothing(smoke_copy, args, message):
    before = sorted(p.name for p in (smoke_copy / "rounds").iterdir())
    r = align_cli("eval", str(smoke_copy), *args)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert sorted(p.name for p in (smoke_copy / "rounds").iterdir()) == before


def test_a_suite_file_with_an_unknown_judge_or_a_missing_field_exits_2(smoke_copy, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsource: sandbox\nexpected: by_family\njudges: {gpt: {}}\n"
                   "metrics: {violation_rate: gpt}\n")
    r = align_cli("eval", str(smoke_copy), "--suite", str(bad))
    assert r.returncode == 2 and "unknown judge 'gpt'" in r.stderr and str(bad) in r.stderr
    (tmp_path / "p.csv").write_text("question\nHow are you?\n")
    bad.write_text(f"name: bad\nsource: data\ndata: {{spec: {ROOT / 'data_specs' / 'truthfulqa.yaml'}, file: p.csv}}\n"
                   "expected: answer\njudges: {refusal: {}}\nmetrics: {false_refusal_rate: refusal}\n")
    r = align_cli("eval", str(smoke_copy), "--suite", str(bad), "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "row 1: missing field 'Question'" in r.stderr, r.stderr
    assert not list((smoke_copy / "rounds").glob("eval-*"))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the checkout")
def test_align_eval_runs_xstest_on_a_checkpoint_given_by_path(tmp_path, policy, tokenizer):
    """A tiny random Llama saved here, evaluated on XSTest into a fresh folder, then reported."""
    model = tmp_path / "tiny"
    policy.save_pretrained(model)
    tokenizer.save_pretrained(model)
    run_dir = tmp_path / "evals"
    r = align_cli("eval", str(run_dir), "--model", str(model), "--suite", "xstest", "--data-dir", str(SHARED),
                  "--set", "eval.samples_per_prompt=1", "--set", "eval.max_new_tokens=6")
    assert r.returncode == 0, r.stderr
    (rid,) = [p.name for p in (run_dir / "rounds").iterdir() if p.name.startswith("eval-xstest-model-")]
    m = manifest(run_dir, rid)
    suite = m["metrics"]["suite"]
    assert suite["n"] == 450 and suite["n_refuse"] == 200 and m["parents"] == []
    assert any(k.startswith("file:") and k.endswith("model.safetensors") for k in m["input_hashes"])
    rows = [json.loads(line) for line in (run_dir / "rounds" / rid / "eval_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 450 and all(r["judges"]["refusal"]["label"] in ("full_compliance", "full_refusal",
                                                                          "partial_refusal") for r in rows)
    assert suite["metrics"]["false_refusal_rate"]["n"] == 250
    report = align_cli("report", str(run_dir))
    assert report.returncode == 0, report.stderr
    data = json.loads((run_dir / "reports" / "report" / "report.json").read_text())
    assert data["evaluations"][0]["metrics"] == suite["metrics"]
