"""The user's entry points: `align run` on the smoke config, `align eval`, `--help`, bad input."""

from __future__ import annotations


import pytest
from conftest import SMOKE
from conftest import align_cli as _align
from typer.testing import CliRunner

from align.cli import app

runner = CliRunner()


@pytest.fixture
def smoke_run(completed_smoke_run):
    return completed_smoke_run


def test_help_documents_every_command():
    out = runner.invoke(app, ["--help"]).output
    commands = ("run", "status", "verify", "lineage", "diff", "eval", "judge", "report", "sandbox")
    for command in commands:
        assert command in out
    for command in commands:
        assert runner.invoke(app, [command, "--help"]).exit_code == 0


def test_run_prints_each_policy_rounds_gold_line_and_the_run_directory(smoke_run):
    run_dir, output = smoke_run
    assert (run_dir / "campaign.yaml").is_file()
    for round_id in ("01-sft", "02-eval", "05-rs", "09-rs", "10-ppo"):
        assert f"{round_id}: violation_rate=" in output
    assert f"run directory: {run_dir}" in output


def test_rerun_reuses_completed_rounds(smoke_copy):
    run_dir = smoke_copy
    before = (run_dir / "rounds" / "01-sft" / "manifest.json").read_bytes()
    result = _align("run", str(SMOKE), "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "[01-sft] completed earlier: reused" in result.stderr
    assert (run_dir / "rounds" / "01-sft" / "manifest.json").read_bytes() == before


def test_bad_config_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("campaign: x\nsft:\n  epochz: 3\n")
    result = _align("run", str(bad), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "bad.yaml:3: sft.epochz" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written
