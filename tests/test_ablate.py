"""``align ablate``: shared rounds reused through hard links, arms per rule and seed, the report."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import ROOT, SMOKE, align_cli

from align.ablate import summarize


def test_summarize_ranks_by_gold_score():
    run = lambda v, f, h: {"violation_rate": v, "false_refusal_rate": f, "helpful_accuracy": h,  # noqa: E731
                           "mean_reward": 0.5, "kl": 1.0}
    rows = summarize({"a": [run(0.3, 0.0, 0.8), run(0.3, 0.0, 0.8)],  # 0.5
                      "b": [run(0.0, 0.1, 0.7), run(0.0, 0.1, 0.9)]})  # 0.7
    assert [(r["rule"], r["rank"], r["gold_score"]) for r in rows] == [("b", 1, 0.7), ("a", 2, 0.5)]
    assert rows[0]["helpful_accuracy"]["mean"] == 0.8
    # 0.7, 0.9: sample sd 0.1414, standard error 0.1, t(0.975, 1) = 12.7062
    assert rows[0]["helpful_accuracy"]["ci95"] == pytest.approx(12.7062 * 0.1, abs=1e-3)


def _ablation_config(tmp_path, rules):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["extends"] = str(ROOT / "configs" / "sandbox.yaml")
    cfg["stages"] = cfg["stages"][:5] + [{"kind": "rs"}]  # sandbox, sft, eval, rm x2 shared; rs per arm
    cfg["ablation"] = {"rules": rules, "seeds": [0, 1], "workers": 2}
    path = tmp_path / "ablate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_ablate_reuses_shared_rounds_and_reports_every_rule(smoke_copy, tmp_path):
    run_dir = smoke_copy
    shared = run_dir / "rounds" / "01-sft" / "manifest.json"
    before = json.loads(shared.read_text())["ended"]
    campaign = (run_dir / "campaign.yaml").read_text()
    config = _ablation_config(tmp_path, [{"name": "gate", "rule": "llama2_gate"},
                                         {"name": "helpful", "rule": "helpfulness_only"},
                                         {"name": "mix", "rule": "weighted_sum", "params": {"safety_weight": 0.7}}])
    result = align_cli("ablate", str(config), "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert json.loads(shared.read_text())["ended"] == before  # the shared rounds were not rebuilt
    assert (run_dir / "campaign.yaml").read_text() == campaign  # the run is still the smoke campaign
    assert "ablation:" in (run_dir / "ablation" / "campaign.yaml").read_text()
    arm = run_dir / "ablation" / "gate-s1"
    assert (arm / "rounds" / "01-sft" / "manifest.json").stat().st_ino == shared.stat().st_ino  # a hard link
    arm_rs = json.loads((arm / "rounds" / "05-rs" / "manifest.json").read_text())
    assert arm_rs["seed"] == 1 and arm_rs["config"]["combine.rule"] == "llama2_gate"
    mix_rs = json.loads((run_dir / "ablation" / "mix-s0" / "rounds" / "05-rs" / "manifest.json").read_text())
    assert mix_rs["config"]["combine.params"] == {"safety_weight": 0.7}
    report = json.loads((run_dir / "ablation" / "report.json").read_text())
    assert sorted(r["rule"] for r in report["rules"]) == ["gate", "helpful", "mix"]
    assert [r["rank"] for r in report["rules"]] == [1, 2, 3]
    assert report["shared_rounds"] == ["00-sandbox", "01-sft", "02-eval", "03-rm-helpfulness", "04-rm-safety"]
    assert len(report["arms"]) == 6 and all(r["seeds"] == 2 for r in report["rules"])
    gate = next(r for r in report["rules"] if r["rule"] == "gate")
    runs = [report["arms"][f"gate-s{s}"]["violation_rate"] for s in (0, 1)]
    assert gate["violation_rate"]["mean"] == pytest.approx(sum(runs) / 2, abs=1e-4)
    md = (run_dir / "ablation" / "report.md").read_text()
    assert "| rank | rule |" in md and "Ranking by the gold score" in md
    assert (run_dir / "ablation" / "frontier.png").stat().st_size > 1000
    assert "ranking:" in result.stdout


def test_ablate_needs_a_rule_dependent_stage_and_valid_rules(tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["extends"] = str(ROOT / "configs" / "sandbox.yaml")
    cfg["stages"] = cfg["stages"][:5]
    cfg["ablation"] = {"rules": [{"name": "gate", "rule": "llama2_gate"}]}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    result = align_cli("ablate", str(tmp_path / "a.yaml"), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "nothing to ablate" in result.stderr
    cfg["ablation"] = {"rules": [{"name": "gate", "rule": "gate_llama"}]}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    result = align_cli("ablate", str(tmp_path / "b.yaml"), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "unknown combination rule 'gate_llama'" in result.stderr
    assert "llama2_gate" in result.stderr and not (tmp_path / "run").exists()
