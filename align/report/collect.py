"""Everything a safety evaluation report shows, read from a run's rounds (nothing is generated or judged).

Evaluations are the (policy round x suite) measurements the run holds: each policy round's own
evaluation on the sandbox's held-out prompts (``metrics.gold`` and its ``eval_samples.jsonl``) and
every eval round (``metrics.suite``). From their judged rows come the numbers per category, the
round-over-round paired differences and the worst responses; from the rounds' metrics, the reward
models' reward against gold utility across rounds and inside PPO, and the gate's routing.

``paired_delta`` compares two evaluations of one suite on the prompts both answered: the difference
of the per-prompt means, with a 95% paired bootstrap interval (prompts resampled together, so the
prompt-to-prompt spread cancels; ``BOOTSTRAP`` resamples, seed 0), and whether the interval excludes 0.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from align.errors import AlignError
from align.evaluation.metrics import family_category, judged, per_prompt, suite_metrics
from align.evaluation.suites import METRICS, MetricSpec, find_suite, read_suite_spec
from align.records import read_jsonl
from align.store import CampaignStore, RoundRecord

BOOTSTRAP = 2000
SANDBOX_SUITE = "sandbox-heldout"
POLICY_KINDS = ("sft", "rs", "ppo")
WORST = 5


def _sandbox_metrics() -> dict[str, MetricSpec]:
    """The sandbox suite's gold metrics: what an in-round evaluation is read with."""
    spec = read_suite_spec(find_suite(SANDBOX_SUITE))
    return {k: m for k, m in spec.metric_specs().items() if m.judge == "sandbox_gold"}


def paired_delta(a: dict[str, float], b: dict[str, float], *, seed: int = 0) -> dict[str, Any] | None:
    """``mean(b) - mean(a)`` over the prompts in both, with a 95% paired bootstrap interval."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    d = np.array([b[k] - a[k] for k in common], dtype=np.float64)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(BOOTSTRAP, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"delta": round(float(d.mean()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "n_pairs": len(common), "real": bool(lo > 0 or hi < 0)}


def _evaluation(record: RoundRecord, suite: str, policy: str, rows: list[dict[str, Any]], measured: dict[str, Any],
                extra: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"{policy}/{suite}", "round": record.id, "round_digest": record.manifest.get("outputs_digest"),
            "policy": policy, "suite": suite, **extra, "metrics": measured["overall"],
            "by_category": measured["by_category"], "_rows": rows}


def evaluations(store: CampaignStore, records: Sequence[RoundRecord]) -> list[dict[str, Any]]:
    """Every (policy x suite) evaluation the run holds, policies in campaign order."""
    out = []
    order = {r.id: i for i, r in enumerate(records)}
    sandbox_metrics = None
    for r in records:
        kind = r.manifest.get("kind")
        if kind in POLICY_KINDS and "gold" in r.metrics and r.round.eval_samples.is_file():
            sandbox_metrics = sandbox_metrics or _sandbox_metrics()
            rows = read_jsonl(r.round.eval_samples)
            measured = suite_metrics(rows, sandbox_metrics, METRICS, family_category)
            out.append(_evaluation(r, SANDBOX_SUITE, r.id, rows, measured, {
                "source": "in-round", "judges": ["sandbox_gold"], "n": r.metrics["gold"]["n"],
                "samples_per_prompt": r.metrics["gold"].get("samples_per_prompt", 1), "validity": {
                    "sandbox_gold": {"reference": "ground truth: the sandbox's gold judges define the labels"}}}))
        elif kind == "eval" and "suite" in r.metrics and r.round.eval_samples.is_file():
            s = r.metrics["suite"]
            rows = read_jsonl(r.round.eval_samples)
            policy = r.metrics.get("policy") or r.id
            out.append(_evaluation(r, s["suite"], policy, rows, {"overall": s["metrics"],
                                                                   "by_category": s["by_category"]},
                                   {"source": "eval round", "judges": s["judges"], "n": s["n"],
                                    "samples_per_prompt": s["samples_per_prompt"], "validity": s["validity"],
                                    "skipped_judges": s.get("skipped_judges", {})}))
    # one evaluation per (policy, suite): an eval round over the in-round one (it has every judge)
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for e in out:
        key = (e["policy"], e["suite"])
        if key not in chosen or e["source"] == "eval round":
            chosen[key] = e
    return sorted(chosen.values(), key=lambda e: (e["suite"] != SANDBOX_SUITE, e["suite"],
                                                  order.get(e["policy"], len(order)), e["policy"]))


def deltas(evals: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired differences between consecutive evaluations of each suite, and first to last."""
    out = []
    by_suite: dict[str, list[dict[str, Any]]] = {}
    for e in evals:
        by_suite.setdefault(e["suite"], []).append(e)
    for suite, es in by_suite.items():
        pairs = list(zip(es, es[1:])) + ([(es[0], es[-1])] if len(es) > 2 else [])
        for a, b in pairs:
            for name, m in b["metrics"].items():
                if name not in a["metrics"] or a["metrics"][name]["judge"] != m["judge"]:
                    continue
                label, _ = METRICS[m.get("metric") or name]
                key = label if label is not None else m.get("score")
                d = paired_delta(per_prompt(a["_rows"], m["judge"], key, m["over"]),
                                 per_prompt(b["_rows"], m["judge"], key, m["over"]))
                if d is not None:
                    out.append({"suite": suite, "from": a["policy"], "to": b["policy"], "metric": name,
                                "judge": m["judge"], "a": a["metrics"][name]["value"], "b": m["value"], **d})
    return out


def _severity(r: dict[str, Any]) -> tuple[str, float] | None:
    """Why a judged answer is bad and how bad (higher: worse), or None."""
    for judge in ("sandbox_gold", "llm", "safety_rm"):
        v = judged(r, judge)
        if v.get("violation"):
            score = {"sandbox_gold": 5 - v.get("safety_rating", 5), "llm": v.get("p_violation", 1),
                     "safety_rm": 1 - v.get("r_s", 0)}[judge]
            return f"violation ({judge})", 10 + float(score)
    for judge in ("sandbox_gold", "refusal"):
        v = judged(r, judge)
        if r.get("expected") == "answer" or (not r.get("expected") and r.get("family") in ("benign", "borderline")):
            if v.get("refused"):
                return f"refused a prompt to answer ({judge})", 5 + float(1 - v.get("p_full_compliance", 0))
        elif v.get("refused") is False and judge == "refusal":
            return "complied with a prompt to refuse (refusal)", 1 + float(v.get("p_full_compliance", 0))
    return None


def worst(e: dict[str, Any], k: int = WORST) -> list[dict[str, Any]]:
    """The ``k`` worst answers of an evaluation, worst first, with every judge's scores."""
    bad = []
    for r in e["_rows"]:
        found = _severity(r)
        if found is not None:
            bad.append((found[1], found[0], r))
    bad.sort(key=lambda x: -x[0])
    seen, out = set(), []
    for _, why, r in bad:
        if r["prompt_id"] in seen:
            continue
        seen.add(r["prompt_id"])
        scores = r["judges"] if "judges" in r else {"sandbox_gold": judged(r, "sandbox_gold")}
        out.append({"evaluation": e["id"], "why": why, "category": r.get("category"), "prompt": r["prompt"],
                    "response": r["response"], "judges": scores})
        if len(out) == k:
            break
    return out


def reward_vs_gold(records: Sequence[RoundRecord], evals: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per policy round: the reward models' reward of its answers and their gold utility."""
    by_policy = {e["policy"]: e for e in evals if e["suite"] == SANDBOX_SUITE}
    out = []
    for r in records:
        if r.manifest.get("kind") not in POLICY_KINDS or "gold" not in r.metrics:
            continue
        gold = r.metrics["gold"]
        greedy = (r.metrics.get("greedy_reward") or {}).get("policy")
        e = by_policy.get(r.id)
        r_h = [judged(x, "helpfulness_rm").get("r_h") for x in e["_rows"]] if e else []
        r_h = [x for x in r_h if x is not None]
        out.append({"round": r.id, "kind": r.manifest["kind"], "gold_utility": gold.get("mean_gold_utility"),
                    "helpful_accuracy": gold.get("helpful_accuracy"),
                    "rm_reward_greedy": greedy, "rm_r_h_newest": round(statistics.fmean(r_h), 4) if r_h else None})
    return out


def ppo_curves(records: Sequence[RoundRecord]) -> list[dict[str, Any]]:
    """Each PPO round's evaluation points: RM reward and gold against sqrt(KL)."""
    out = []
    for r in records:
        curve = r.metrics.get("over_optimisation") or (r.metrics.get("ppo") or {}).get("curve")
        if r.manifest.get("kind") == "ppo" and curve:
            out.append({"round": r.id, "kept_iteration": (r.metrics.get("ppo") or {}).get("kept_iteration"),
                        "curve": [{k: p.get(k) for k in ("iteration", "kl", "sqrt_kl", "rm_reward",
                                                          "mean_gold_utility", "helpful_accuracy", "violation_rate",
                                                          "false_refusal_rate")} for p in curve]})
    return out


def gate(records: Sequence[RoundRecord]) -> list[dict[str, Any]]:
    """The Llama 2 gate's routing: rejection-sampling rounds' samples (by tag, by threshold, to R_h) and
    eval rounds' answers."""
    out = []
    for r in records:
        branches = (r.metrics.get("rs") or {}).get("gate_branches")
        if branches:
            n = sum(branches.values())
            out.append({"round": r.id, "source": "rejection-sampling samples (training prompts)", "n": n,
                        **{b: round(branches.get(b, 0) / n, 4) for b in ("safety_tag", "safety_low", "helpfulness")}})
        g = r.metrics.get("gate")
        if g:
            s = g["shares"]["all"]
            out.append({"round": r.id, "source": f"answers to {r.metrics['suite']['suite']} (of {r.metrics['policy']})",
                        **{k: s[k] for k in ("n", "safety_tag", "safety_low", "helpfulness")},
                        "threshold": g.get("threshold")})
    return out


def judges_validity(evals: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each judge's validity: its own record (human-label agreement, calibration) and its agreement with
    gold in every evaluation where the gold judges also ran."""
    out: dict[str, dict[str, Any]] = {}
    for e in evals:
        for judge, v in (e.get("validity") or {}).items():
            entry = out.setdefault(judge, {"measured": []})
            for k, val in v.items():
                if k == "agreement_with_gold":
                    for label, a in val.items():
                        entry["measured"].append({"evaluation": e["id"], **a})
                else:
                    entry[k] = val
    return out


def collect(run_dir: Path) -> dict[str, Any]:
    """The report's data (``report.json`` without the plots)."""
    store = CampaignStore(run_dir)
    ids = store.round_ids()
    if not ids:
        raise AlignError(f"{run_dir}: no completed rounds to report on")
    records = [r for r in map(store.read, ids) if r is not None]
    evals = evaluations(store, records)
    rounds = [{"id": r.id, "kind": r.manifest.get("kind"), "name": r.manifest.get("name"),
               "parents": r.manifest.get("parents", []), "outputs_digest": r.manifest.get("outputs_digest"),
               "config_hash": r.manifest.get("config_hash"), "code_version": r.manifest.get("code_version"),
               "seed": r.manifest.get("seed"), "duration_s": r.manifest.get("duration_s")} for r in records]
    campaign = next((r.manifest.get("campaign") for r in records if r.manifest.get("campaign")), run_dir.name)
    newest = {}
    for e in evals:
        newest[e["suite"]] = e
    return {"run": str(run_dir), "campaign": campaign, "rounds": rounds,
            "evaluations": evals, "deltas": deltas(evals), "reward_vs_gold": reward_vs_gold(records, evals),
            "ppo": ppo_curves(records), "gate": gate(records), "judges": judges_validity(evals),
            "worst": [w for e in newest.values() for w in worst(e)]}
