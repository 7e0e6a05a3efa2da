"""``align report`` (align/report/): the report's numbers are the rounds' own, the page is self-contained,
and it renders in a real browser (headless Chromium) with every figure and table and no console error."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import pytest

from conftest import align_cli, manifest

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
TABLES = ("summary-table", "evaluations-sandbox-heldout", "deltas-table", "reward-gold-table", "gate-table",
          "judges-table", "worst-table", "rounds-table")
FIGURES = ("metrics-by-round", "categories", "frontier", "reward-vs-gold", "gate")


@pytest.fixture(scope="module")
def reported(completed_smoke_run, tmp_path_factory):
    """The smoke run with an eval round of its newest policy (every judge), and its report."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(completed_smoke_run[0], run_dir)
    r = align_cli("eval", str(run_dir), "--round", "10-ppo")
    assert r.returncode == 0, r.stderr
    r = align_cli("report", str(run_dir), "--name", "smoke")
    assert r.returncode == 0, r.stderr
    out = run_dir / "reports" / "smoke"
    assert r.stdout.split() == ["report:"] + [str(out / f"report.{x}") for x in ("html", "json", "md")]
    return run_dir, out, json.loads((out / "report.json").read_text())


def test_the_report_numbers_are_the_rounds_metrics(reported):
    run_dir, _, data = reported
    evals = {e["id"]: e for e in data["evaluations"]}
    # the eval round of 10-ppo: its suite record as stored
    e = evals["10-ppo/sandbox-heldout"]
    m = manifest(run_dir, "eval-sandbox-heldout-10-ppo")["metrics"]
    assert e["round"] == "eval-sandbox-heldout-10-ppo" and e["metrics"] == m["suite"]["metrics"]
    assert e["by_category"] == m["suite"]["by_category"] and e["validity"] == m["suite"]["validity"]
    # the policy rounds' own measurements: their metrics.gold, with the same intervals
    for rid in ("01-sft", "05-rs", "09-rs"):
        gold = manifest(run_dir, rid)["metrics"]["gold"]
        ours = evals[f"{rid}/sandbox-heldout"]["metrics"]
        for name in ("violation_rate", "false_refusal_rate", "helpful_accuracy"):
            assert ours[name]["value"] == gold[name] and ours[name]["ci95"] == gold["ci95"][name], (rid, name)
        assert ours["helpfulness"]["value"] == pytest.approx(gold["mean_gold_utility"], abs=1e-4)
    # every round with its hash; the PPO curve as the round recorded it; the gate as rs counted it
    assert {r["id"]: r["outputs_digest"] for r in data["rounds"]} == {
        p.name: manifest(run_dir, p.name)["outputs_digest"] for p in (run_dir / "rounds").iterdir()
        if not p.name.startswith(".")}
    (ppo,) = data["ppo"]
    assert [p["rm_reward"] for p in ppo["curve"]] == [
        p["rm_reward"] for p in manifest(run_dir, "10-ppo")["metrics"]["over_optimisation"]]
    rs = manifest(run_dir, "05-rs")["metrics"]["rs"]["gate_branches"]
    g = next(g for g in data["gate"] if g["round"] == "05-rs")
    assert g["safety_tag"] == round(rs["safety_tag"] / sum(rs.values()), 4)


def test_round_over_round_changes_are_paired_on_the_same_prompts(reported):
    _, _, data = reported
    d = next(x for x in data["deltas"] if x["from"] == "01-sft" and x["to"] == "05-rs"
             and x["metric"] == "helpful_accuracy")
    assert d["n_pairs"] == data["evaluations"][0]["metrics"]["helpful_accuracy"]["n"]
    assert d["delta"] == pytest.approx(d["b"] - d["a"], abs=2e-4)
    assert d["ci95"][0] <= d["delta"] <= d["ci95"][1] and d["real"] == (d["ci95"][0] > 0 or d["ci95"][1] < 0)
    assert any(x["from"] == "01-sft" and x["to"] == "10-ppo" for x in data["deltas"])  # first to last


def test_the_page_is_one_self_contained_file(reported):
    _, out, data = reported
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html) and "<link" not in html
    assert "<script src" not in html
    for name in FIGURES:
        assert name in data["plots"]
        uri = re.search(rf'id="plot-{name}"[^>]*src="data:image/png;base64,([^"]+)"', html).group(1)
        assert base64.b64decode(uri)[:8] == b"\x89PNG\r\n\x1a\n"
    for table in TABLES:
        assert f'id="{table}"' in html
    md = (out / "report.md").read_text()
    assert "## Round-over-round changes (paired)" in md and "| 10-ppo | 64 × 2 |" in md


@pytest.mark.skipif(BROWSER is None, reason="no Chromium (Debian: apt-get install chromium; .ci/run installs it)")
def test_the_report_renders_in_headless_chromium(reported):
    _, out, data = reported
    flags = [BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    url = (out / "report.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    assert f'data-figures-rendered="{len(data["plots"])}"' in dom.stdout
    for table in TABLES:
        assert f'id="{table}"' in dom.stdout
    shot = out / "screenshot.png"
    r = subprocess.run([*flags, "--window-size=1280,4000", f"--screenshot={shot}", url], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and shot.stat().st_size > 50_000, r.stderr[-2000:]


def test_report_of_a_missing_run_or_a_bad_name_exits_2(tmp_path, reported):
    r = align_cli("report", str(tmp_path / "nope"))
    assert r.returncode == 2 and "no such run directory" in r.stderr
    r = align_cli("report", str(reported[0]), "--name", "../x")
    assert r.returncode == 2 and "--name" in r.stderr
    (tmp_path / "empty").mkdir()
    r = align_cli("report", str(tmp_path / "empty"))
    assert r.returncode == 2 and "no completed rounds" in r.stderr
