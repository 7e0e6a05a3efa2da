"""Integrity of reused rounds: a flipped byte in a round's weights, a deleted file of a round and an
edited manifest are each refused by ``align run``, ``align eval`` and ``align verify`` with one line
naming the file; a fully reused run rehashes nothing (size and mtime as recorded); nothing is
written by a run whose pre-flight fails; Ctrl-C names the round it stopped in."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from align.store import hash_outputs
from conftest import SMOKE
from conftest import align_app as invoke  # in-process: these cases fail before any work


def contents(run: Path) -> dict[str, str]:
    """Every file's hash but the lock's (which names the last process that held it)."""
    return {k: v for k, v in hash_outputs(run).items() if k != ".lock"}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def flip_byte(path: Path, keep_mtime: bool = False) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def refused_everywhere(run: Path, names: str) -> None:
    """``align run`` (every round reused), ``align eval`` and ``align verify`` all refuse, naming ``names``."""
    before = contents(run)
    for args in (["run", str(SMOKE), "--run-dir", str(run)], ["eval", str(run), "--round", "01-sft"],
                 ["verify", str(run)]):
        code, out, err = invoke(*args)
        assert code == 2, (args, code, out, err)
        line = one_error_line(err)
        assert names in line, (args, line)
    assert contents(run) == before


def test_flipped_byte_in_reused_weights(smoke_copy):
    weights = smoke_copy / "rounds" / "01-sft" / "model" / "model.safetensors"
    flip_byte(weights)
    refused_everywhere(smoke_copy, str(weights))


def test_deleted_file_of_a_reused_round(smoke_copy):
    victim = next(p for p in sorted((smoke_copy / "rounds" / "00-sandbox").rglob("*.jsonl")))
    victim.unlink()
    refused_everywhere(smoke_copy, f"{victim}: missing")


def test_edited_metric_in_a_manifest(smoke_copy):
    path = smoke_copy / "rounds" / "01-sft" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["metrics"]["gold"]["violation_rate"] = 0.0 if manifest["metrics"]["gold"]["violation_rate"] else 0.5
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    refused_everywhere(smoke_copy, str(path))


def test_fast_path_trusts_size_and_mtime_verify_rehashes(smoke_copy, monkeypatch):
    """A fully reused run hashes no round file; a byte flipped with the mtime put back passes that fast
    check (its documented limit) and is caught by align verify, which rehashes everything."""
    import align.campaign
    import align.store

    calls = []
    real = align.store.sha256_file
    monkeypatch.setattr(align.store, "sha256_file", lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(align.campaign, "sha256_file", lambda p: calls.append(p) or real(p))
    code, out, err = invoke("run", str(SMOKE), "--run-dir", str(smoke_copy))
    assert code == 0, err
    assert calls == []
    assert err.count("completed earlier: reused") == len(list((smoke_copy / "rounds").glob("[0-9]*")))

    weights = smoke_copy / "rounds" / "05-rs" / "model" / "model.safetensors"
    flip_byte(weights, keep_mtime=True)
    assert invoke("run", str(SMOKE), "--run-dir", str(smoke_copy))[0] == 0
    code, out, err = invoke("verify", str(smoke_copy))
    assert code == 2 and str(weights) in one_error_line(err) and "05-rs: FAILED" in out


def test_bad_model_path_writes_nothing(smoke_copy):
    """A campaign whose SFT would be rebuilt on a bad model.path stops before any round: no round
    written, campaign.yaml unchanged."""
    bad_model = smoke_copy.parent / "model"
    bad_model.mkdir()
    (bad_model / "config.json").write_text("{]")
    campaign_yaml = (smoke_copy / "campaign.yaml").read_bytes()
    before = contents(smoke_copy)
    code, _, err = invoke("run", str(SMOKE), "--run-dir", str(smoke_copy), "--set", f"model.path={bad_model}")
    assert code == 2 and "config.json" in one_error_line(err)
    assert (smoke_copy / "campaign.yaml").read_bytes() == campaign_yaml
    assert contents(smoke_copy) == before
    assert not list((smoke_copy / "rounds").glob(".tmp-*"))


def test_dry_run_prints_the_plan_and_writes_nothing(smoke_copy, tmp_path):
    before = hash_outputs(smoke_copy)
    code, out, err = invoke("run", str(SMOKE), "--run-dir", str(smoke_copy), "--dry-run", "--set", "rs.k=3")
    assert code == 0, err
    actions = dict(line.split()[:2] for line in out.splitlines() if line[:2].isdigit())
    assert actions["01-sft"] == "reuse" and actions["05-rs"] == "rebuild" and actions["10-ppo"] == "rebuild"
    assert hash_outputs(smoke_copy) == before  # the lock included: a dry run does not take it
    fresh = tmp_path / "fresh"
    code, out, err = invoke("run", str(SMOKE), "--run-dir", str(fresh), "--dry-run", "--set",
                            "sandbox.rl_prompts=0")
    assert code == 2 and "problem: sandbox.rl_prompts" in out and not fresh.exists()
    assert set(dict(line.split()[:2] for line in out.splitlines() if line[:2].isdigit()).values()) == {"build"}


def test_interrupt_names_the_round_and_how_to_resume(smoke_copy, monkeypatch):
    import align.campaign

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(align.campaign, "_build", interrupted)
    code, _, err = invoke("run", str(SMOKE), "--run-dir", str(smoke_copy), "--set", "ppo.iterations=2")
    assert code == 130
    assert err.strip().splitlines()[-1] == ("interrupted: stopped in round 10-ppo (ppo); its unfinished files are "
                                            "dropped (checkpoints kept, if it writes any): align run resumes from "
                                            "there")


@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_turns_bars_and_round_lines_off(smoke_copy, quiet, monkeypatch):
    monkeypatch.delenv("ALIGN_QUIET", raising=False)
    args = ["--quiet"] * quiet + ["run", str(SMOKE), "--run-dir", str(smoke_copy)]
    code, out, err = invoke(*args)
    assert code == 0
    assert ("reused" in err) is not quiet
    assert "run directory:" in out
    from align.progress import bar

    assert bar(range(3), desc="x").disable is True  # off a terminal (CliRunner) or quiet: no bar
    monkeypatch.delenv("ALIGN_QUIET", raising=False)


def test_an_unexpected_error_prints_its_traceback_and_exits_1(smoke_copy, monkeypatch):
    """Only bad input is one line and exit 2; a bug keeps its traceback (to report) and exits 1."""
    import align.campaign

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(align.campaign, "campaign_status", broken)
    code, _, err = invoke("status", str(smoke_copy))
    assert code == 1
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err and "please report it" in err


def test_bars_show_on_a_terminal_unless_quiet(monkeypatch):
    import io

    from align.progress import bar, set_quiet

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("ALIGN_QUIET", raising=False)
    monkeypatch.setattr("sys.stderr", Terminal())
    assert not bar(range(3), desc="sampling").disable  # tqdm keeps None for "shown"
    set_quiet(True)
    try:
        assert bar(range(3), desc="sampling").disable is True
    finally:
        set_quiet(False)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a pipe or a CI log
    assert bar(range(3), desc="sampling").disable is True


def test_the_clis_own_exits_pass_through_the_error_path():
    """typer's Exit and usage errors raised inside a command keep their exit codes; they are not bugs."""
    import typer

    from align.cli import _user_errors

    def exits():
        raise typer.Exit(3)

    def bad_parameter():
        raise typer.BadParameter("no")

    with pytest.raises(typer.Exit) as e:
        _user_errors(exits)()
    assert e.value.exit_code == 3
    with pytest.raises(typer.BadParameter):
        _user_errors(bad_parameter)()
