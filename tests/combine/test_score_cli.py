"""``align score`` and ``align calibrate-gate`` on the smoke run's reward models."""

from __future__ import annotations

import json
import statistics

from conftest import align_cli

ROWS = [{"prompt": "How do I build a weapon to hurt people?", "response": "I can't help with that.",
         "is_safety": True},
        {"prompt": "What is 3 plus 4?", "response": "The answer is 7."},
        {"prompt": "What is 3 plus 4?", "response": "The answer is 9."},
        {"prompt": "Where does Kesjor live? Kesjor lives in Lunia.", "response": "Lunia"}]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_writes_both_scores_the_branch_and_the_reward(completed_smoke_run, tmp_path):
    run_dir, _ = completed_smoke_run
    out = tmp_path / "scored.jsonl"
    result = align_cli("score", str(_write(tmp_path / "in.jsonl", ROWS)), "--out", str(out), "--run", str(run_dir))
    assert result.returncode == 0, result.stderr
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(scored) == 4 and scored[1]["prompt"] == ROWS[1]["prompt"]
    for r in scored:
        gated = r["R_s"] if r.get("is_safety") or r["R_s"] < 0.15 else r["R_h"]
        assert r["combined"] == gated and 0 < r["R_h"] < 1 and 0 < r["R_s"] < 1
        assert r["branch"] == ("safety_tag" if r.get("is_safety") else
                               "safety_low" if r["R_s"] < 0.15 else "helpfulness")
    rewards = [r["reward"] for r in scored]  # whiten(logit(.)) over the file
    assert abs(statistics.fmean(rewards)) < 1e-5 and abs(statistics.pstdev(rewards) - 1) < 1e-3

    other = tmp_path / "min.jsonl"
    result = align_cli("score", str(tmp_path / "in.jsonl"), "--out", str(other), "--run", str(run_dir),
                       "--rule", "min")
    assert result.returncode == 0, result.stderr
    for r in map(json.loads, other.read_text().splitlines()):
        assert r["combined"] == min(r["R_h"], r["R_s"]) and "branch" not in r


def test_score_bad_input(completed_smoke_run, tmp_path):
    run_dir, _ = completed_smoke_run
    bad = _write(tmp_path / "bad.jsonl", [ROWS[0], {"prompt": "hi"}])
    result = align_cli("score", str(bad), "--out", str(tmp_path / "o.jsonl"), "--run", str(run_dir))
    assert result.returncode == 2 and "bad.jsonl:2: missing text field 'response'" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()
    result = align_cli("score", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--run",
                       str(run_dir), "--rule", "nope")
    assert result.returncode == 2 and "known rules: llama2_gate" in result.stderr


def test_calibrate_gate_on_the_sandbox_safety_test_set(completed_smoke_run, tmp_path):
    run_dir, _ = completed_smoke_run
    result = align_cli("calibrate-gate", "--run", str(run_dir), "--target-precision", "0.3", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["responses"] > 0 and 0 < record["unsafe"] < record["responses"]
    sweep = {r["threshold"]: r for r in record["sweep"]}
    assert 0.15 in sweep and [r["recall"] for r in record["sweep"]] == sorted(r["recall"] for r in record["sweep"])
    if record["threshold"] is not None:
        assert sweep[record["threshold"]]["precision"] >= 0.3

    labelled = _write(tmp_path / "lab.jsonl", [{"prompt": "p", "response": "I can't help.", "safe": True},
                                                {"prompt": "p", "response": "Step 1: harm.", "safe": False}])
    result = align_cli("calibrate-gate", "--run", str(run_dir), "--data", str(labelled))
    assert result.returncode == 0, result.stderr
    assert "threshold for precision >= 0.89" in result.stdout and "  0.15 " in result.stdout
    bad = _write(tmp_path / "nolabel.jsonl", [{"prompt": "p", "response": "r"}])
    result = align_cli("calibrate-gate", "--run", str(run_dir), "--data", str(bad))
    assert result.returncode == 2 and "nolabel.jsonl:1: 'safe' must be true or false" in result.stderr
