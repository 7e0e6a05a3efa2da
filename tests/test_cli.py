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


def test_run_dir_that_is_a_file_exits_2(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    result = _align("run", str(SMOKE), "--run-dir", str(f))
    assert result.returncode == 2 and "not a directory" in result.stderr
    assert f.read_text() == "x"


def test_missing_config_exits_2(tmp_path):
    result = _align("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "no such config file" in result.stderr


def test_sft_data_jsonl_with_a_bad_row_names_the_line(tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "Hi?", "response": "Hello."}\n{"prompt": "Hi?", "response": ""}\n')
    result = _align("run", str(SMOKE), "--run-dir", str(tmp_path / "run"), "--set", f"sft.data={data}")
    assert result.returncode == 2
    assert f"{data}:2: field 'response' must be a non-empty string" in result.stderr


def test_a_duplicate_yaml_key_is_an_error_naming_its_line(tmp_path):
    bad = tmp_path / "dup.yaml"
    bad.write_text("campaign: x\nsft:\n  epochs: 2\nsft:\n  lr: 1.0\n")
    result = _align("run", str(bad), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "dup.yaml:4" in result.stderr and "duplicate key 'sft'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_run_directory_under_a_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "afile").write_text("")
    result = _align("run", str(SMOKE), "--run-dir", str(tmp_path / "afile" / "sub"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "a part of its path is a file" in result.stderr


def test_a_run_that_fails_before_building_leaves_campaign_yaml_unchanged(smoke_copy):
    before = (smoke_copy / "campaign.yaml").read_bytes()
    result = _align("run", str(SMOKE), "--run-dir", str(smoke_copy), "--set", "sft.data=/nonexistent/sft.jsonl")
    assert result.returncode == 2 and "/nonexistent/sft.jsonl" in result.stderr
    assert (smoke_copy / "campaign.yaml").read_bytes() == before
