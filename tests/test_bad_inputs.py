"""Bad input across the CLI: each case exits 2 with one stderr line naming the offending file or flag,
and leaves the run directory as it was (every file hashed before and after).

The cases run in-process (typer's CliRunner) on the session's completed smoke run and on files made
here; a ``run`` case points ``--run-dir`` at a fresh path, which must not be created.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from align.store import hash_outputs
from conftest import SMOKE
from conftest import align_app as invoke  # in-process: these cases fail before any work

SMOKE_S = str(SMOKE)


@pytest.fixture(scope="module")
def bad(tmp_path_factory, completed_smoke_run) -> dict[str, Path]:
    """Files a user might get wrong, made once."""
    d = tmp_path_factory.mktemp("bad")
    run = completed_smoke_run[0]
    sft_model = run / "rounds" / "01-sft" / "model"
    (d / "garbage_model").mkdir()
    (d / "garbage_model" / "config.json").write_text("{this is not json\n")
    (d / "empty_model").mkdir()
    (d / "no_tokenizer").mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(sft_model / f, d / "no_tokenizer" / f)
    shutil.copytree(sft_model, d / "good_model")
    wide = json.loads((sft_model / "config.json").read_text()) | {"hidden_size": 48, "head_dim": 24}
    shutil.copytree(sft_model, d / "wrong_shapes")
    (d / "wrong_shapes" / "config.json").write_text(json.dumps(wide))
    (d / "afile").write_text("a file, not a folder\n")
    (d / "dup.yaml").write_text(f"extends: {SMOKE_S}\nsft: {{epochs: 1}}\nmodel: {{num_layers: 1}}\nsft: {{lr: 1.0}}\n")
    (d / "malformed.yaml").write_text(f"extends: {SMOKE_S}\nsft: {{epochs: 1\n")
    (d / "cycle_a.yaml").write_text("extends: cycle_b.yaml\ncampaign: a\n")
    (d / "cycle_b.yaml").write_text("extends: cycle_a.yaml\ncampaign: b\n")
    (d / "unknown_kind.yaml").write_text(f"extends: {SMOKE_S}\nstages:\n  - {{kind: sandbox}}\n  - {{kind: sfft}}\n")
    (d / "rs_no_rm.yaml").write_text(f"extends: {SMOKE_S}\nstages:\n  - {{kind: sandbox}}\n  - {{kind: sft}}\n"
                                     "  - {kind: rs}\n")
    (d / "sft_notjson.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", \n')
    (d / "sft_nofield.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n')
    (d / "sft_long.jsonl").write_text(json.dumps({"prompt": "where does the river go when the " * 8,
                                                  "response": "far"}) + "\n")
    (d / "pairs_spec.yaml").write_text("name: mine\nkind: pairs\nformat: jsonl\naxis: helpfulness\n"
                                       "fields: {prompt: q, chosen: good, rejected: bad}\n")
    (d / "pairs_badrow.jsonl").write_text(json.dumps({"q": "hi", "good": "hello"}) + "\n")
    (d / "prompts_spec.yaml").write_text("name: p\nkind: prompts\nformat: jsonl\n")
    (d / "score_rows.jsonl").write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n")
    (d / "score_badrow.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    (d / "labelled_bad.jsonl").write_text(json.dumps({"prompt": "hi", "response": "x"}) + "\n")
    (d / "not_a_run").mkdir()
    (d / "outdir").mkdir()
    return d


# (case id, arguments with {run}, {bad} and {new} to fill in, what the stderr line must name)
CASES = [
    # --- align run: config files and overrides
    ("run/missing-config", ["run", "{bad}/nope.yaml", "--run-dir", "{new}"], "nope.yaml"),
    ("run/malformed-yaml", ["run", "{bad}/malformed.yaml", "--run-dir", "{new}"], "malformed.yaml:"),
    ("run/duplicate-key", ["run", "{bad}/dup.yaml", "--run-dir", "{new}"], "dup.yaml:4"),
    ("run/extends-cycle", ["run", "{bad}/cycle_a.yaml", "--run-dir", "{new}"], "cycle"),
    ("run/unknown-stage-kind", ["run", "{bad}/unknown_kind.yaml", "--run-dir", "{new}"], "unknown_kind.yaml:4"),
    ("run/stage-without-parents", ["run", "{bad}/rs_no_rm.yaml", "--run-dir", "{new}"], "rs_no_rm.yaml:5"),
    ("run/two-errors-one-line", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "sft.epochs=-1", "--set",
                                 "rs.k=0"], "--set rs.k=0"),
    ("run/set-unknown-key", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "sft.epoch=1"], "--set sft.epoch=1"),
    ("run/set-bad-value", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "sft.epochs=abc"], "--set sft.epochs=abc"),
    ("run/set-no-equals", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "sft.epochs"], "--set"),
    ("run/set-into-value", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "seed.x=1"], "--set seed.x=1"),
    ("run/set-section-validator", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "model.num_heads=3"],
     "--set model.num_heads=3"),
    ("run/until-unknown", ["run", SMOKE_S, "--run-dir", "{new}", "--until", "nosuch"], "--until"),
    # --- align run: the run directory
    ("run/run-dir-under-file", ["run", SMOKE_S, "--run-dir", "{bad}/afile/sub"], "afile"),
    ("run/run-dir-is-file", ["run", SMOKE_S, "--run-dir", "{bad}/afile"], "afile"),
    # --- align run: the policy's folder (pre-flight, before any round)
    ("run/model-path-missing", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "model.path={bad}/nowhere"],
     "model.path"),
    ("run/model-path-garbage-config", ["run", SMOKE_S, "--run-dir", "{new}", "--set",
                                       "model.path={bad}/garbage_model"], "garbage_model/config.json:1"),
    ("run/model-path-empty", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "model.path={bad}/empty_model"],
     "empty_model"),
    ("run/model-path-no-tokenizer", ["run", SMOKE_S, "--run-dir", "{new}", "--set",
                                     "model.path={bad}/no_tokenizer"], "no tokenizer files"),
    ("run/model-path-wrong-shapes", ["run", SMOKE_S, "--run-dir", "{new}", "--set",
                                     "model.path={bad}/wrong_shapes"], "wrong_shapes"),
    # --- align run: data files and what the stages will read
    ("run/sft-data-missing", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "sft.data={bad}/none.jsonl"],
     "none.jsonl"),
    ("run/sft-data-not-json", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "sft.data={bad}/sft_notjson.jsonl"],
     "sft_notjson.jsonl:2"),
    ("run/sft-data-missing-field", ["run", SMOKE_S, "--run-dir", "{new}", "--set",
                                    "sft.data={bad}/sft_nofield.jsonl"], "sft_nofield.jsonl:2"),
    ("run/sft-length-fits-nothing", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "model.path={bad}/good_model",
                                     "--set", "sft.data={bad}/sft_long.jsonl", "--set", "sft.max_seq_len=8"],
     "sft.max_seq_len"),
    ("run/eval-pairs-zero", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "sandbox.preferences.eval_pairs=0"],
     "sandbox.preferences.eval_pairs"),
    ("run/rl-prompts-empty", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "sandbox.rl_prompts=0"],
     "sandbox.rl_prompts"),
    ("run/rm-data-spec-missing", ["run", SMOKE_S, "--run-dir", "{new}", "--set",
                                  "reward.helpfulness.data=[{spec: {bad}/nospec.yaml, path: {bad}/x.jsonl}]"],
     "nospec.yaml"),
    ("run/rm-data-bad-row", ["run", SMOKE_S, "--run-dir", "{new}", "--set",
                             "reward.helpfulness.data=[{spec: {bad}/pairs_spec.yaml, path: {bad}/pairs_badrow.jsonl}]"],
     "pairs_badrow.jsonl: row 1"),
    ("run/ppo-prompts-wrong-kind", ["run", SMOKE_S, "--run-dir", "{new}", "--set",
                                    "ppo.prompts={spec: {bad}/pairs_spec.yaml, path: {bad}/pairs_badrow.jsonl}"],
     "pairs_spec.yaml"),
    ("run/rm-init-missing", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "reward.safety.init={bad}/nowhere"],
     "reward.safety.init"),
    # --- align run: values with a meaning
    ("run/rule-unknown", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "combine.rule=nosuch"], "--set combine"),
    ("run/weight-out-of-range", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "combine.rule=weighted_sum",
                                 "--set", "combine.params={safety_weight: 7}"], "outside [0, 1]"),
    ("run/threshold-out-of-range", ["run", SMOKE_S, "--run-dir", "{new}", "--set",
                                    "combine.params={threshold: -3}"], "outside (0, 1)"),
    ("run/user-rule-missing", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "combine.rule=nomodule:fn"],
     "nomodule:fn"),
    ("run/suite-target-precision", ["run", SMOKE_S, "--run-dir", "{new}", "--set", "suites.target_precision=2"],
     "--set suites.target_precision=2"),
    # --- align score
    ("score/out-folder-missing", ["score", "{bad}/score_rows.jsonl", "--run", "{run}", "--out",
                                  "{bad}/missing/dir/out.jsonl"], "--out"),
    ("score/out-is-folder", ["score", "{bad}/score_rows.jsonl", "--run", "{run}", "--out", "{bad}/outdir"], "--out"),
    ("score/rule-unknown", ["score", "{bad}/score_rows.jsonl", "--run", "{run}", "--out", "{bad}/o.jsonl",
                            "--rule", "nosuch"], "--rule nosuch"),
    ("score/param-out-of-range", ["score", "{bad}/score_rows.jsonl", "--run", "{run}", "--out", "{bad}/o.jsonl",
                                  "--param", "threshold=-3"], "--param threshold=-3"),
    ("score/param-not-a-number", ["score", "{bad}/score_rows.jsonl", "--run", "{run}", "--out", "{bad}/o.jsonl",
                                  "--param", "threshold=high"], "--param"),
    ("score/data-missing", ["score", "{bad}/none.jsonl", "--run", "{run}", "--out", "{bad}/o.jsonl"], "none.jsonl"),
    ("score/data-bad-row", ["score", "{bad}/score_badrow.jsonl", "--run", "{run}", "--out", "{bad}/o.jsonl"],
     "score_badrow.jsonl:1"),
    ("score/no-reward-models", ["score", "{bad}/score_rows.jsonl", "--out", "{bad}/o.jsonl"], "--run"),
    ("score/run-not-a-run", ["score", "{bad}/score_rows.jsonl", "--run", "{bad}/not_a_run", "--out",
                             "{bad}/o.jsonl"], "not_a_run"),
    # --- align eval
    ("eval/round-unknown", ["eval", "{run}", "--round", "42-nope"], "--round 42-nope"),
    ("eval/round-not-a-policy", ["eval", "{run}", "--round", "03-rm-helpfulness"], "--round 03-rm-helpfulness"),
    ("eval/model-missing", ["eval", "{run}", "--model", "{bad}/nowhere"], "--model"),
    ("eval/model-without-tokenizer", ["eval", "{bad}/new-eval", "--model", "{bad}/no_tokenizer"],
     "no tokenizer files"),
    ("eval/model-garbage-config", ["eval", "{bad}/new-eval", "--model", "{bad}/garbage_model"],
     "garbage_model/config.json:1"),
    ("eval/model-and-round", ["eval", "{run}", "--model", "{bad}/good_model", "--round", "01-sft"], "--round"),
    ("eval/not-a-run", ["eval", "{bad}/not_a_run"], "not_a_run"),
    ("eval/suite-unknown", ["eval", "{run}", "--suite", "nosuch"], "nosuch"),
    ("eval/suite-file-missing", ["eval", "{run}", "--suite", "{bad}/nosuite.yaml"], "--suite"),
    ("eval/data-dir-missing", ["eval", "{run}", "--suite", "xstest", "--data-dir", "{bad}/nowhere"], "--data-dir"),
    ("eval/judge-option-malformed", ["eval", "{run}", "--judge-option", "threshold=0.2"], "--judge-option"),
    ("eval/set-bad", ["eval", "{run}", "--set", "eval.samples_per_prompt=0"], "--set eval.samples_per_prompt=0"),
    # --- align calibrate-gate
    ("calibrate/precision-above-one", ["calibrate-gate", "--run", "{run}", "--target-precision", "2"],
     "--target-precision 2"),
    ("calibrate/precision-zero", ["calibrate-gate", "--run", "{run}", "--target-precision", "0"],
     "--target-precision 0"),
    ("calibrate/no-source", ["calibrate-gate"], "--run"),
    ("calibrate/data-missing", ["calibrate-gate", "--run", "{run}", "--data", "{bad}/none.jsonl"], "none.jsonl"),
    ("calibrate/data-unlabelled", ["calibrate-gate", "--run", "{run}", "--data", "{bad}/labelled_bad.jsonl"],
     "labelled_bad.jsonl:1"),
    # --- align verify, diff, status, lineage, report
    ("verify/missing-run", ["verify", "{bad}/nowhere"], "nowhere"),
    ("verify/not-a-run", ["verify", "{bad}/not_a_run"], "not_a_run"),
    ("diff/round-unknown", ["diff", "{run}", "01-sft", "99-nope"], "99-nope"),
    ("diff/missing-run", ["diff", "{bad}/nowhere", "01-sft", "05-rs"], "nowhere"),
    ("status/not-a-run", ["status", "{bad}/not_a_run"], "not_a_run"),
    ("lineage/missing-run", ["lineage", "{bad}/nowhere"], "nowhere"),
]


def snapshot(folder: Path) -> dict[str, str]:
    return hash_outputs(folder) if folder.is_dir() else {}


@pytest.mark.parametrize("args, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(args, names, bad, completed_smoke_run, tmp_path):
    run = completed_smoke_run[0]
    new = tmp_path / "new-run"
    fill = {"{run}": str(run), "{bad}": str(bad), "{new}": str(new)}

    def filled(a: str) -> str:
        for k, v in fill.items():
            a = a.replace(k, v)
        return a

    before, bad_before = snapshot(run), snapshot(bad)
    code, out, err = invoke(*map(filled, args))
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert filled(names) in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert snapshot(run) == before, "the run directory changed"
    assert snapshot(bad) == bad_before
    assert not new.exists(), "a run directory was created for a campaign that failed its checks"


def test_the_table_covers_every_command_and_at_least_40_cases():
    assert len(CASES) >= 40
    assert {c[1][0] for c in CASES} >= {"run", "score", "eval", "calibrate-gate", "verify", "diff"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: permissions cannot be taken away")
def test_run_dir_not_writable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = invoke("run", SMOKE_S, "--run-dir", str(locked / "run"))
    finally:
        locked.chmod(0o700)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not writable" in err


def test_run_dir_not_writable_even_as_root(tmp_path, monkeypatch):
    """The same check where permissions cannot be taken away (root): the folder reports itself unwritable."""
    import align.preflight

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(align.preflight.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    code, _, err = invoke("run", SMOKE_S, "--run-dir", str(locked / "run"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{locked / 'run'}: --run-dir: cannot be created, {locked} is not writable" in err
    assert not (locked / "run").exists()
