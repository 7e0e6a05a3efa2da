"""The rs stage on a prompt data spec (``rs.prompts``): what a real model's campaign samples from, with no
sandbox world needed to plan it."""

from __future__ import annotations

import json

import pytest

from conftest import SMOKE, align_cli, manifest


def test_rs_reads_its_prompts_through_a_data_spec(smoke_copy, tmp_path):
    run_dir = smoke_copy
    sums = [f"What is {a} plus {b}?" for a in range(2, 7) for b in range(3, 7)]
    (tmp_path / "prompts.csv").write_text("prompt\n" + "".join(f"{s}\n" for s in sums), encoding="utf-8")
    (tmp_path / "spec.yaml").write_text("name: sums\nkind: prompts\nformat: csv\nprompt_column: prompt\n"
                                        "family: benign\n")
    source = f"rs.prompts={{spec: {tmp_path / 'spec.yaml'}, path: {tmp_path / 'prompts.csv'}, limit: 12}}"
    result = align_cli("run", str(SMOKE), "--run-dir", str(run_dir), "--until", "05-rs", "--set", source)
    assert result.returncode == 0, result.stderr
    assert "[04-rm-safety] completed earlier: reused" in result.stderr and "[05-rs] running rs" in result.stderr
    m = manifest(run_dir, "05-rs")
    assert f"file:{tmp_path / 'prompts.csv'}" in m["input_hashes"]  # the prompt file is an input of the round
    rows = [json.loads(line) for line in (run_dir / "rounds" / "05-rs" / "samples.jsonl").read_text().splitlines()]
    assert {r["prompt"] for r in rows} <= set(sums[:12]) and len({r["prompt"] for r in rows}) == 12
    assert m["metrics"]["rs"]["prompts"] == 12 and "gold" in m["metrics"]  # the world is there: gold still measured


def test_rs_without_a_world_needs_a_prompt_source(tmp_path):
    from align.config import load_config
    from align.errors import AlignError

    text = ("campaign: real\nmodel: {path: /models/x}\nsft: {data: sft.jsonl}\n"
            "reward:\n  helpfulness: {data: [{spec: data_specs/hh_rlhf_helpful.yaml, path: h.jsonl}]}\n"
            "  safety: {data: [{spec: data_specs/hh_rlhf_harmless.yaml, path: s.jsonl}]}\n"
            "stages: [{kind: sft}, {kind: rm, name: helpfulness}, {kind: rm, name: safety}, {kind: rs}]\n")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(AlignError, match=r"stages\[3\] \(rs\): needs an earlier sandbox stage or rs.prompts"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text(text + "rs: {prompts: {spec: data_specs/refusal_direction_harmless.yaml, "
                                            "path: p.json}}\n")
    cfg = load_config(tmp_path / "c.yaml")
    from align.stages import plan_rounds

    assert [p.id for p in plan_rounds(cfg)][-1] == "03-rs"
