"""The evaluation stage: a policy on an evaluation suite (``eval/<name>.yaml``), judged by every judge.

``{kind: eval, name: SUITE}`` (no name: ``sandbox-heldout``). Parents: the newest policy round (or,
with none, the checkpoint at ``model.path``), the sandbox world when there is one, and the newest
reward models when the suite's judges read them (``safety_rm``, ``helpfulness_rm``; a judge whose
reward model does not exist yet is skipped and the reason recorded). Inputs: the suite file, its data
spec and data files (under ``suites.data_dir``). Writes ``eval_samples.jsonl`` (every judged answer).
Metrics: ``suite`` (each metric with its 95% interval and n, per category; each judge's validity),
``gold`` on sandbox suites (DESIGN.md section 9), ``gate`` (the Llama 2 gate's branches on these
answers) when both reward models judged, ``safety_rm_calibration``. Answers a policy round already
drew on the same prompts with the same settings are reused; generation resumes after a kill.
Knobs: ``eval:``, ``suites:``, ``combine:`` (the gate's threshold).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch

from align.config import CampaignConfig, StageSpec
from align.evaluation.evaluate import evaluate_suite, reuse_answers
from align.records import read_jsonl
from align.evaluation.metrics import judged, policy_metrics
from align.evaluation.suites import SuiteSpec, find_suite, read_suite_spec, suite_inputs
from align.models import load_causal_lm, load_tokenizer
from align.stages import Planned, PlanError, Stage, StageContext, register
from align.store import digest

DEFAULT_SUITE = "sandbox-heldout"
RM_JUDGES = {"helpfulness_rm": "helpfulness", "safety_rm": "safety"}
SAMPLING = ("temperature", "top_p", "max_new_tokens", "samples_per_prompt", "max_prompts")  # what draws the answers


def stage_suite(cfg: CampaignConfig, spec: StageSpec) -> tuple[Path, SuiteSpec]:
    """The suite file and spec an eval stage names (``name``; default ``sandbox-heldout``)."""
    path = find_suite(spec.name or DEFAULT_SUITE, cfg.suites.dir)
    return path, read_suite_spec(path)


def parents(planned: Planned, cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    _, suite = stage_suite(cfg, spec)
    out = [planned.latest("sandbox")] if suite.source == "sandbox" else [r for r in [planned.find("sandbox")] if r]
    policies = [r.id for r in planned.rounds if r.policy]
    if policies:
        out.append(policies[-1])
    elif cfg.model.path is None:
        raise PlanError("needs an earlier stage that trains a policy (sft), or model.path")
    out += [r for judge, axis in RM_JUDGES.items() if judge in suite.judges and (r := planned.find("rm", axis))]
    return out


def inputs(cfg: CampaignConfig, spec: StageSpec) -> list[Path]:
    path, suite = stage_suite(cfg, spec)
    return suite_inputs(path, suite, Path(cfg.suites.data_dir) if cfg.suites.data_dir else None)


def _judge_context(ctx: StageContext, suite: SuiteSpec) -> tuple[dict[str, dict[str, Any]], dict[str, str],
                                                                   dict[str, Any] | None]:
    """Options the campaign gives the suite's judges (its reward models, the calibrated threshold), the
    judges that cannot run, and the safety RM's calibration."""
    from align.reward.client import RewardModel

    cfg, p = ctx.cfg, ctx.parents
    options = {k: dict(v) for k, v in cfg.suites.judge_options.items()}
    skip, calibration = {}, None
    for judge, axis in RM_JUDGES.items():
        if judge not in suite.judges or "rm" in {**options.get(judge, {}), **suite.judges[judge]}:
            continue
        found = p.find("rm", axis)
        if found is None:
            skip[judge] = f"no {axis} reward model round before this one"
            continue
        rm = RewardModel.load(found.reward_model, getattr(cfg.reward, axis), cfg.model)
        options.setdefault(judge, {})["model"] = rm
        if judge == "safety_rm" and "threshold" not in suite.judges[judge]:
            world = p.find("sandbox")
            calibration = calibrate(rm, world.path if world else None, world.id if world else "",
                                    target_precision=cfg.suites.target_precision,
                                    fallback=float(cfg.combine.params.get("threshold", 0.15)))
            options[judge]["threshold"] = calibration["threshold"]
    return options, skip, calibration


def calibrate(rm, world: Path | None, world_id: str, *, target_precision: float, fallback: float) -> dict[str, Any]:
    """The safety RM's threshold: the best recall at ``target_precision`` on the world's safety test pairs
    (``align calibrate-gate``); ``fallback`` (the gate's threshold) without a world or when none reaches it."""
    from align.sandbox.build import read_preferences
    from align.scoring import calibrate_gate, labelled_from_pairs

    if world is None:
        return {"threshold": fallback, "source": "combine.params.threshold (no labelled responses to calibrate on)"}
    record = calibrate_gate(rm, *labelled_from_pairs(read_preferences(world, "safety", "eval")),
                            target_precision=target_precision)
    chosen = record["threshold"]
    at = next((r for r in record["sweep"] if chosen is not None and abs(r["threshold"] - chosen) < 1e-9), None)
    return {"threshold": chosen if chosen is not None else fallback,
            "source": f"calibrated on {world_id}'s safety test pairs" if chosen is not None else
            f"combine.params.threshold (no threshold reaches precision {record['target_precision']})",
            "target_precision": record["target_precision"], "responses": record["responses"],
            "unsafe": record["unsafe"], "precision": at["precision"] if at else None,
            "recall": at["recall"] if at else None}


def _reusable(ctx: StageContext, suite: SuiteSpec) -> Path | None:
    """The policy round's own judged answers to these prompts, when drawn with the settings this round uses."""
    from align.store import CampaignStore

    policy = ctx.parents.find_policy()
    if suite.source != "sandbox" or policy is None or not policy.eval_samples.is_file():
        return None
    record = CampaignStore(ctx.run_dir).read(policy.id)
    config = record.manifest.get("config", {}) if record else {}
    drawn = config.get("eval") or {k[5:]: v for k, v in config.items() if k.startswith("eval.")}
    same = bool(drawn) and all(k in drawn and drawn[k] == getattr(ctx.cfg.eval, k) for k in SAMPLING)
    return policy.eval_samples if same and record.manifest.get("seed") == ctx.seed else None


def gate_diagnostics(rows: list[dict[str, Any]], params: dict[str, float]) -> dict[str, Any]:
    """Where the Llama 2 gate routes these answers: by the ``is_safety`` tag to R_s, by R_s below the
    threshold to R_s, else to R_h; shares overall and per expected behaviour and per family."""
    from align.combine import gate_branch

    r_s = torch.tensor([judged(r, "safety_rm")["r_s"] for r in rows], dtype=torch.float64)
    tags = torch.tensor([bool(r["is_safety"]) for r in rows])
    branches = gate_branch(r_s, tags, **params)
    groups: dict[str, Counter] = defaultdict(Counter)
    for r, b in zip(rows, branches):
        for key in ("all", f"expected/{r['expected']}", f"family/{r['family']}"):
            groups[key][b] += 1
    return {"threshold": params.get("threshold", 0.15),
            "shares": {k: {b: round(c[b] / sum(c.values()), 4) for b in ("safety_tag", "safety_low", "helpfulness")}
                       | {"n": sum(c.values())} for k, c in sorted(groups.items())}}


def run(ctx: StageContext) -> dict[str, Any]:
    from align.evaluation.suites import load_suite

    cfg, p = ctx.cfg, ctx.parents
    path, spec = stage_suite(cfg, ctx.spec)
    world = p.find("sandbox")
    options, skip, calibration = _judge_context(ctx, spec)
    suite = load_suite(path, data_dir=Path(cfg.suites.data_dir) if cfg.suites.data_dir else None,
                       world=world.path if world else None, judge_options=options, skip=skip)
    for judge, why in suite.skipped.items():
        ctx.log(f"  eval: judge {judge} skipped: {why}")
    policy = p.find_policy()
    model_dir = policy.model if policy else Path(cfg.model.path)
    reuse = _reusable(ctx, spec)
    if reuse is not None:
        ctx.log(f"  eval: the answers {policy.id} drew on these prompts with these settings are reused")
        record, rows = evaluate_suite(None, None, suite, cfg.eval, seed=ctx.seed, answers=reuse_answers(
            read_jsonl(reuse)), out=ctx.out.eval_samples, log=ctx.log)
    else:
        tokenizer = load_tokenizer(model_dir, trust_remote_code=cfg.model.trust_remote_code)
        model = load_causal_lm(model_dir, cfg.model)
        record, rows = evaluate_suite(model, tokenizer, suite, cfg.eval, seed=ctx.seed,
                                      checkpoint_dir=ctx.checkpoint_dir, model_digest=digest(dict(ctx.inputs)),
                                      out=ctx.out.eval_samples, log=ctx.log)
    record["skipped_judges"] = suite.skipped
    if calibration:
        record["validity"]["safety_rm"]["calibration"] = calibration
    metrics: dict[str, Any] = {"suite": record, "policy": policy.id if policy else str(model_dir),
                               "answers_from": policy.id if reuse is not None else None}
    if "sandbox_gold" in suite.judges:
        flat = [{**r, **judged(r, "sandbox_gold")} for r in rows]
        metrics["gold"] = policy_metrics(flat, cfg.eval.samples_per_prompt,
                                         suite.judges["sandbox_gold"].scores)
        metrics["gold"]["eval_seconds"] = round(sum(record["seconds"].values()), 2)
    if {"safety_rm", "helpfulness_rm"} <= set(suite.judges) and cfg.combine.rule == "llama2_gate":
        metrics["gate"] = gate_diagnostics(rows, dict(cfg.combine.params))
    return metrics


register(Stage(kind="eval", run=run, parents=parents, inputs=inputs, doc=__doc__))
