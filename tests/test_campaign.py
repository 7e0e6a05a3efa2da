"""Versioned rounds: atomic, immutable, resumable after SIGKILL, verified, one writer at a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import ROOT, SMOKE, align_cli

from align.campaign import campaign_status
from align.store import CampaignStore, hash_outputs, sha256_file

ROUNDS = ("00-sandbox", "01-sft", "02-eval", "03-rm-helpfulness", "04-rm-safety", "05-rs", "06-prefs",
          "07-rm-helpfulness", "08-rm-safety", "09-rs", "10-ppo")


def _files(round_dir: Path) -> dict[str, str]:
    """Every file of a round, manifest included, by sha256."""
    return {p.relative_to(round_dir).as_posix(): sha256_file(p) for p in sorted(round_dir.rglob("*")) if p.is_file()}


def _check_rounds(run_dir: Path, snapshots: dict[str, dict[str, str]]) -> None:
    """Each round folder is absent or complete and verifying; earlier completed rounds are unchanged."""
    store = CampaignStore(run_dir)
    for round_id in store.round_ids():
        assert store.verify(round_id) == [], round_id
        if round_id in snapshots:
            assert _files(run_dir / "rounds" / round_id) == snapshots[round_id], f"{round_id} changed"
        else:
            snapshots[round_id] = _files(run_dir / "rounds" / round_id)


def test_sigkill_at_five_moments_then_resume_completes_and_keeps_completed_rounds(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "align.cli", "run", str(SMOKE), "--run-dir", str(run_dir)]
    snapshots: dict[str, dict[str, str]] = {}

    # 1. from outside, in the middle of a round: once SFT is building in its temporary folder
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((run_dir / "rounds").glob(".tmp-01-sft-*")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (run_dir / "rounds" / "01-sft").exists()
    _check_rounds(run_dir, snapshots)
    assert set(snapshots) == {"00-sandbox"}

    # 2-5. SIGKILL at named moments: half-written manifest, before and after the rename, during the next round
    for moment in ("manifest:01-sft", "before-rename:01-sft", "after-rename:01-sft", "files-written:02-eval"):
        result = align_cli("run", str(SMOKE), "--run-dir", str(run_dir), env={"ALIGN_CRASH_AT": moment})
        assert result.returncode == -signal.SIGKILL, (moment, result.stderr)
        _check_rounds(run_dir, snapshots)
        if moment.startswith("after-rename"):
            assert "01-sft" in snapshots  # the kill came between rounds: 01-sft is complete
        else:
            assert moment.split(":")[1] not in CampaignStore(run_dir).round_ids()

    result = align_cli("run", str(SMOKE), "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "[00-sandbox] completed earlier: reused" in result.stderr
    assert "[01-sft] completed earlier: reused" in result.stderr
    _check_rounds(run_dir, snapshots)
    assert [r["status"] for r in campaign_status(run_dir)["rounds"]] == ["completed"] * len(ROUNDS)
    assert not list((run_dir / "rounds").glob(".tmp-*"))  # stale temporaries were cleaned up


def test_changing_one_stage_reruns_that_round_and_its_descendants_only(smoke_copy):
    run_dir = smoke_copy
    before = {r: _files(run_dir / "rounds" / r) for r in ROUNDS}
    result = align_cli("run", str(SMOKE), "--run-dir", str(run_dir), "--set", "sft.lr=0.001")
    assert result.returncode == 0, result.stderr
    assert "[00-sandbox] completed earlier: reused" in result.stderr
    assert "[01-sft] running sft (inputs or config changed)" in result.stderr
    for descendant in ("02-eval", "03-rm-helpfulness", "04-rm-safety"):  # all built on 01-sft
        assert f"[{descendant}] running" in result.stderr
    after = {r: _files(run_dir / "rounds" / r) for r in ROUNDS}
    assert after["00-sandbox"] == before["00-sandbox"]
    assert all(after[r] != before[r] for r in ROUNDS[1:])
    manifest = json.loads((run_dir / "rounds" / "01-sft" / "manifest.json").read_text())
    assert manifest["config"]["sft"]["lr"] == 0.001
    # the replaced rounds are kept, untouched, out of the way
    superseded = sorted((run_dir / "rounds" / ".superseded").iterdir())
    assert [p.name.rsplit("-", 3)[0] for p in superseded] == list(ROUNDS[1:])
    assert _files(superseded[0]) == before["01-sft"]


def test_changing_a_leaf_stage_reruns_only_that_round(smoke_copy):
    run_dir = smoke_copy
    before = {r: _files(run_dir / "rounds" / r) for r in ROUNDS}
    stages = yaml.safe_load(SMOKE.read_text())["stages"]
    stages[-1]["seed"] = 7  # a new seed for the last round only
    result = align_cli("run", str(SMOKE), "--run-dir", str(run_dir), "--set", f"stages={json.dumps(stages)}")
    assert result.returncode == 0, result.stderr
    after = {r: _files(run_dir / "rounds" / r) for r in ROUNDS}
    assert [r for r in ROUNDS if after[r] != before[r]] == ["10-ppo"]
    assert json.loads((run_dir / "rounds" / "10-ppo" / "manifest.json").read_text())["seed"] == 7


def test_changing_a_middle_stage_keeps_the_rounds_it_does_not_feed(smoke_copy):
    run_dir = smoke_copy
    before = {r: _files(run_dir / "rounds" / r) for r in ROUNDS}
    result = align_cli("run", str(SMOKE), "--run-dir", str(run_dir), "--set", "reward.safety.lr=0.001",
                       "--until", "04-rm-safety")
    assert result.returncode == 0, result.stderr
    after = {r: _files(run_dir / "rounds" / r) for r in ROUNDS}
    assert [r for r in ROUNDS if after[r] != before[r]] == ["04-rm-safety"]  # 03 and earlier reused


def test_manifest_records_hashes_lineage_and_versions(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    m = json.loads((run_dir / "rounds" / "02-eval" / "manifest.json").read_text())
    assert m["id"] == "02-eval" and m["kind"] == "eval" and m["parents"] == ["00-sandbox", "01-sft"]
    assert m["status"] == "completed" and m["seed"] == 0 and m["ended"] >= m["started"]
    sft = json.loads((run_dir / "rounds" / "01-sft" / "manifest.json").read_text())
    assert m["input_hashes"]["round:01-sft"] == sft["outputs_digest"]
    assert m["outputs"] == hash_outputs(run_dir / "rounds" / "02-eval")
    assert {"python", "torch", "transformers"} <= set(m["library_versions"])
    assert m["code_version"].startswith("0.1.0")


def test_status_json_lineage_and_diff(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    status = json.loads(align_cli("status", str(run_dir), "--json").stdout)
    assert status["campaign"] == "smoke"
    assert [(r["id"], r["kind"], r["status"]) for r in status["rounds"]] == [
        (r, r.split("-")[1], "completed") for r in ROUNDS]
    assert set(status["rounds"][1]) >= {"id", "kind", "status", "parents", "config_hash", "metrics"}
    assert "gold" in status["rounds"][1]["metrics"]
    table = align_cli("status", str(run_dir)).stdout
    assert "01-sft" in table and "violation_rate=" in table
    assert f"accuracy={status['rounds'][4]['metrics']['accuracy']}" in table  # rm rounds show their accuracy
    cross = status["rounds"][4]["metrics"]["cross_axis"]  # 04-rm-safety on both test sets, as Table 7
    assert "reward models: accuracy on each test set" in table
    assert f"{cross['helpfulness']:.3f}" in table and f"{cross['safety']:.3f} *" in table
    lineage = align_cli("lineage", str(run_dir), env={"COLUMNS": "400"}).stdout
    assert lineage.index("00-sandbox") < lineage.index("01-sft") < lineage.index("02-eval")
    assert all(lineage.count(f"{r['id']} (") == 1 for r in status["rounds"])  # each round printed once
    assert "10-ppo (completed)  ← also 00-sandbox" in lineage
    diff = align_cli("diff", str(run_dir), "01-sft", "02-eval")
    assert diff.returncode == 0 and 'kind: "sft" -> "eval"' in diff.stdout
    assert align_cli("diff", str(run_dir), "01-sft", "09-nope").returncode == 2


def test_second_writer_is_refused_naming_the_holder(smoke_copy):
    store = CampaignStore(smoke_copy)
    with store.lock():
        result = align_cli("run", str(SMOKE), "--run-dir", str(smoke_copy))
    assert result.returncode == 2
    assert f"campaign is locked by another align run (pid {os.getpid()}" in result.stderr


def test_round_name_with_path_separator_is_rejected_and_nothing_written(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("campaign: x\nstages:\n  - {kind: sandbox, name: ../evil}\n")
    result = align_cli("run", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "stages.0.name" in result.stderr
    assert not (tmp_path / "run").exists()


def test_empty_stages_list_is_rejected(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("campaign: x\nstages: []\n")
    result = align_cli("run", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "c.yaml:2: stages:" in result.stderr and "empty" in result.stderr
    assert not (tmp_path / "run").exists()


def test_corrupted_manifest_is_a_clear_error_and_nothing_is_written(smoke_copy):
    manifest = smoke_copy / "rounds" / "01-sft" / "manifest.json"
    manifest.write_text('{"id": "01-sft", "outp')
    before = {p: p.stat().st_mtime_ns for p in smoke_copy.rglob("*")}
    for args in (("run", str(SMOKE), "--run-dir", str(smoke_copy)), ("verify", str(smoke_copy))):
        result = align_cli(*args)
        assert result.returncode == 2
        assert f"{manifest}: corrupted manifest" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in smoke_copy.rglob("*")} == before


def test_commands_on_a_folder_that_is_not_a_run_exit_2(tmp_path):
    for command in ("status", "verify", "lineage"):
        result = align_cli(command, str(tmp_path))
        assert result.returncode == 2 and "not a run directory" in result.stderr


def test_tensorboard_tracking_logs_sft_steps_outside_the_rounds(tmp_path):
    import pytest

    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "run"
    result = align_cli("run", str(SMOKE), "--run-dir", str(run_dir), "--until", "sft",
                       "--set", "tracking.backend=tensorboard")
    assert result.returncode == 0, result.stderr
    events = list((run_dir / "tracking" / "01-sft").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "losses/sft" in acc.Tags()["scalars"]
    assert CampaignStore(run_dir).verify("01-sft") == []  # tracker files are not round outputs
