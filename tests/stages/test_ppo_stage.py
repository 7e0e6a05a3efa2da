"""The PPO stage (align/stages/ppo.py) in the smoke campaign: its round, the per-iteration lines, the
over-optimisation curve, SIGKILL after a checkpoint and the resume, and ablation arms that end with it."""

from __future__ import annotations

import json
import shutil
import signal

import yaml
from conftest import ROOT, SMOKE, align_cli, manifest

ITERATION_KEYS = {"step", "reward", "combined", "r_h", "r_s", "kl", "entropy", "clip_fraction", "approx_kl",
                  "losses/policy", "losses/value", "explained_variance", "response_length", "no_eos", "seconds"}


def test_ppo_round_builds_on_the_last_rs_round_and_records_its_curve(completed_smoke_run):
    run_dir, stdout = completed_smoke_run
    m = manifest(run_dir, "10-ppo")
    assert m["parents"] == ["00-sandbox", "01-sft", "09-rs", "07-rm-helpfulness", "08-rm-safety"]
    ppo = m["metrics"]["ppo"]
    assert ppo["iterations"] == 4 and ppo["rollouts_per_iteration"] == 16 and ppo["kept_iteration"] == 4
    assert ppo["resumed_from"] is None
    lines = [json.loads(x) for x in (run_dir / "rounds" / "10-ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and ITERATION_KEYS <= set(lines[0])
    assert abs(sum(v for k, v in lines[0].items() if k.startswith("gate/")) - 1) < 1e-3  # the gate's branch shares
    curve = m["metrics"]["over_optimisation"]
    assert [p["iteration"] for p in curve] == [0, 2, 4]
    assert curve[0]["kl"] == 0.0  # the reference is the starting policy
    assert all({"rm_reward", "sqrt_kl", "mean_gold_utility", "helpful_accuracy"} <= set(p) for p in curve)
    assert m["metrics"]["gold"]["n"] == 64 and "greedy_reward" in m["metrics"]
    assert (run_dir / "rounds" / "10-ppo" / "model" / "model.safetensors").is_file()
    assert not (run_dir / "rounds" / ".checkpoints" / "10-ppo").exists()  # removed once the round committed
    assert "10-ppo: violation_rate=" in stdout
    # the checkpoint fingerprint reads these sections whole: the slice holds them whole
    assert m["config"]["ppo"]["iterations"] == 4 and m["config"]["combine"]["rule"] == "llama2_gate"


def test_a_ppo_run_killed_after_its_first_checkpoint_resumes_from_it_with_the_same_result(smoke_copy):
    run_dir = smoke_copy
    done = manifest(run_dir, "10-ppo")
    shutil.rmtree(run_dir / "rounds" / "10-ppo")
    killed = align_cli("run", str(SMOKE), "--run-dir", str(run_dir), env={"ALIGN_CRASH_AT": "ppo-checkpoint-2:10-ppo"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoint = run_dir / "rounds" / ".checkpoints" / "10-ppo" / "it-000002"
    assert (checkpoint / "state.json").is_file() and (checkpoint / "policy.safetensors").is_file()
    assert not (run_dir / "rounds" / "10-ppo").exists()
    result = align_cli("run", str(SMOKE), "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "resumed from it-000002 (iteration 2 of 4)" in result.stderr
    assert "ppo 1/4 " not in result.stderr and "ppo 3/4 " in result.stderr  # iterations 1-2 were not run again
    again = manifest(run_dir, "10-ppo")
    assert again["metrics"]["ppo"]["resumed_from"] == 2
    # the same weights and curve as the uninterrupted run with the same seed
    assert again["outputs"]["model/model.safetensors"] == done["outputs"]["model/model.safetensors"]
    assert again["metrics"]["over_optimisation"] == done["metrics"]["over_optimisation"]
    assert not (run_dir / "rounds" / ".checkpoints" / "10-ppo").exists()


def test_a_checkpoint_of_another_config_is_not_resumed(smoke_copy):
    run_dir = smoke_copy
    shutil.rmtree(run_dir / "rounds" / "10-ppo")
    killed = align_cli("run", str(SMOKE), "--run-dir", str(run_dir), env={"ALIGN_CRASH_AT": "ppo-checkpoint-2:10-ppo"})
    assert killed.returncode == -signal.SIGKILL
    result = align_cli("run", str(SMOKE), "--run-dir", str(run_dir), "--set", "ppo.beta=0.2")
    assert result.returncode == 0, result.stderr
    assert "resumed" not in result.stderr and manifest(run_dir, "10-ppo")["metrics"]["ppo"]["resumed_from"] is None


def test_ablation_arms_can_end_with_ppo_and_cross_rules_with_algorithms(smoke_copy, tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["extends"] = str(ROOT / "configs" / "sandbox.yaml")
    cfg["stages"] = cfg["stages"][:5] + [{"kind": "rs"}, {"kind": "ppo"}]
    cfg["ppo"] |= {"iterations": 2, "eval_every": 2}
    cfg["ablation"] = {"rules": [{"name": "gate", "rule": "llama2_gate"}], "seeds": [0], "shared_until": "05-rs",
                       "variants": [{"name": "ppo", "set": {}},
                                    {"name": "lagrangian", "set": {"ppo.algorithm": "ppo_lagrangian"}}]}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    result = align_cli("ablate", str(tmp_path / "a.yaml"), "--run-dir", str(smoke_copy))
    assert result.returncode == 0, result.stderr
    report = json.loads((smoke_copy / "ablation" / "report.json").read_text())
    assert sorted(r["rule"] for r in report["rules"]) == ["gate+lagrangian", "gate+ppo"]
    assert report["shared_rounds"][-1] == "05-rs" and report["downstream_stages"] == ["ppo"]
    arm = smoke_copy / "ablation" / "gate+lagrangian-s0" / "rounds"
    assert (arm / "05-rs" / "manifest.json").stat().st_ino == (smoke_copy / "rounds" / "05-rs" / "manifest.json") \
        .stat().st_ino  # the rs round is shared (a hard link), never rebuilt
    ppo = json.loads((arm / "06-ppo" / "manifest.json").read_text())["metrics"]["ppo"]
    assert ppo["algorithm"] == "ppo_lagrangian" and len(ppo["lambda_trajectory"]) == 2
    assert [p["iteration"] for p in report["curves"]["gate+ppo"]] == [0, 2]
    assert "## Over-optimisation" in (smoke_copy / "ablation" / "report.md").read_text()
    # a variant that sets a field wrongly fails before any arm runs, naming it
    cfg["ablation"]["variants"] = [{"name": "bad", "set": {"ppo.algorithm": "trpo"}}]
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    result = align_cli("ablate", str(tmp_path / "b.yaml"), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "ablation.variants[bad].set" in result.stderr and "ppo.algorithm" in result.stderr
    # sharing a rule-dependent round is refused when a rule differs from the campaign's
    cfg["ablation"]["variants"] = []
    cfg["ablation"]["rules"].append({"name": "helpful", "rule": "helpfulness_only"})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    result = align_cli("ablate", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "rules ['helpful'] differ" in result.stderr


def test_ppo_reads_its_prompts_through_a_data_spec(smoke_copy, tmp_path):
    run_dir = smoke_copy
    (tmp_path / "prompts.csv").write_text("prompt,label\n" + "".join(
        f"What is {a} plus {b}?,safe\n" for a in range(2, 7) for b in range(3, 7)), encoding="utf-8")
    (tmp_path / "spec.yaml").write_text("name: sums\nkind: prompts\nformat: csv\nprompt_column: prompt\n"
                                        "family: benign\n")
    source = f"ppo.prompts={{spec: {tmp_path / 'spec.yaml'}, path: {tmp_path / 'prompts.csv'}, limit: 12}}"
    result = align_cli("run", str(SMOKE), "--run-dir", str(run_dir), "--set", source)
    assert result.returncode == 0, result.stderr
    assert "[09-rs] completed earlier: reused" in result.stderr and "[10-ppo] running ppo" in result.stderr
    m = manifest(run_dir, "10-ppo")
    assert f"file:{tmp_path / 'prompts.csv'}" in m["input_hashes"]  # the prompt file is an input of the round
    assert m["config"]["ppo"]["prompts"]["limit"] == 12 and m["metrics"]["ppo"]["iterations"] == 4
