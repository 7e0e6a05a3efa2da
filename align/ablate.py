"""``align ablate``: compare reward combination rules against the sandbox's gold judges.

The campaign's stages split at the first stage that uses the combination rule (``rs``): the
shared rounds before it are built once in the run directory (or reused); each (rule, seed) arm
is a campaign of its own under ``<run>/ablation/<rule>-s<seed>/`` whose shared rounds are hard
links to the built ones (so they are reused, never recomputed) and whose downstream rounds run
with that rule and seed. Arms run in parallel processes, one core each where cores allow.

The report (``<run>/ablation/report.{md,json}``, ``frontier.png``) gives, per rule, the mean and
95% confidence interval over seeds (Student t) of gold ``violation_rate``,
``false_refusal_rate``, ``helpful_accuracy``, the final policy's mean reward under its own rule
(greedy answers) and ``KL(policy || SFT)``; the rules are ranked by the gold score
``helpful_accuracy - violation_rate - false_refusal_rate``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from align.combine.config import AblationRule, AblationVariant, CombineConfig
from align.config import CampaignConfig, config_to_yaml, parse_config
from align.errors import AlignError
from align.evaluation.metrics import mean_ci
from align.stages import get_stage

METRICS = ("violation_rate", "false_refusal_rate", "helpful_accuracy", "mean_reward", "kl")
GOLD_SCORE = "helpful_accuracy - violation_rate - false_refusal_rate"


@dataclass(frozen=True)
class Arm:
    rule: AblationRule
    seed: int
    variant: AblationVariant | None = None

    @property
    def label(self) -> str:
        """What the report compares: the rule, and the variant when there are variants."""
        return self.rule.name + (f"+{self.variant.name}" if self.variant else "")

    @property
    def name(self) -> str:
        return f"{self.label}-s{self.seed}"


def arms_of(cfg: CampaignConfig) -> list[Arm]:
    """Every (rule, variant, seed) of the ablation."""
    ab = cfg.ablation
    return [Arm(rule, seed, variant) for rule in ab.rules for variant in (ab.variants or [None]) for seed in ab.seeds]


def split_stages(cfg: CampaignConfig) -> int:
    """Index of the first stage the arms run: the first whose result depends on the combination rule
    (``Stage.uses_rule``), or the one after ``ablation.shared_until``; the shared prefix is everything
    before it. Rule-dependent stages may be shared only when every arm's rule is the campaign's own."""
    first = next((i for i, stage in enumerate(cfg.stages) if get_stage(stage.kind).uses_rule), None)
    if first is None:
        raise AlignError("the campaign has no stage that uses the combination rule (such as rs): nothing to ablate")
    until = cfg.ablation.shared_until if cfg.ablation else None
    if until is None:
        return first
    from align.stages import plan_rounds

    ids = [p.id for p in plan_rounds(cfg)]
    found = [i for i, (plan_id, spec) in enumerate(zip(ids, cfg.stages, strict=True)) if until in (plan_id, spec.kind)]
    if not found:
        raise AlignError(f"ablation.shared_until: {until!r} is no round or stage kind of the campaign "
                         f"({', '.join(ids)})")
    split = found[-1] + 1
    if split >= len(cfg.stages):
        raise AlignError(f"ablation.shared_until: {until!r} is the last stage: nothing left to ablate")
    if split > first:
        own = (cfg.combine.rule, cfg.combine.params)
        other = [r.name for r in cfg.ablation.rules if (r.rule, r.params) != own]
        if other:
            raise AlignError(f"ablation.shared_until: {until!r} shares rule-dependent rounds built with the campaign's "
                             f"rule ({cfg.combine.rule}), but rules {other} differ from it")
    return split


def arm_config(cfg: CampaignConfig, arm: Arm) -> CampaignConfig:
    """The base campaign with the arm's rule, and the arm's seed on every downstream stage."""
    first = split_stages(cfg)
    stages = [s if i < first else s.model_copy(update={"seed": arm.seed}) for i, s in enumerate(cfg.stages)]
    combine = CombineConfig(**{**cfg.combine.model_dump(), "rule": arm.rule.rule, "params": arm.rule.params})
    out = cfg.model_copy(update={"stages": stages, "combine": combine, "ablation": None,
                                 "campaign": f"{cfg.campaign}-{arm.name}"})
    if arm.variant is None or not arm.variant.set:
        return out
    data = out.model_dump(mode="json")
    for key, value in arm.variant.set.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise AlignError(f"ablation.variants[{arm.variant.name}].set: {key}: {part} is not a config section")
            node = node[part]
        node[parts[-1]] = value
    try:
        return parse_config(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise AlignError(f"ablation.variants[{arm.variant.name}].set: {problems}") from None


def _link_tree(src: Path, dst: Path) -> None:
    """Recreate ``src`` at ``dst`` with hard links (a copy where links are impossible)."""
    import shutil

    for root, _, files in os.walk(src):
        target = dst / Path(root).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            try:
                os.link(Path(root) / f, target / f)
            except OSError:
                shutil.copy2(Path(root) / f, target / f)


def _run_arm(cfg_json: str, arm_dir: str, threads: int) -> dict[str, Any]:
    """Worker: run one arm's campaign; returns the last policy round's metrics."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    from align.campaign import run_campaign

    cfg = parse_config(cfg_json)
    log_path = Path(arm_dir) / "log.txt"
    with open(log_path, "a", encoding="utf-8") as log:
        results = run_campaign(cfg, Path(arm_dir), log=lambda m: print(m, file=log, flush=True))
    last = [r for r in results if "gold" in r.metrics][-1]
    return {"round": last.id, "metrics": last.metrics}


def arm_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    gold = metrics["gold"]
    return {"violation_rate": gold["violation_rate"], "false_refusal_rate": gold["false_refusal_rate"],
            "helpful_accuracy": gold["helpful_accuracy"],
            "mean_reward": metrics.get("greedy_reward", {}).get("policy"), "kl": metrics.get("kl_vs_sft")}


def summarize(arms: dict[str, list[dict[str, float | None]]]) -> list[dict[str, Any]]:
    """Per rule: mean and 95% CI of each metric over seeds, the gold score; ranked best first."""
    rows = []
    for rule, runs in arms.items():
        row: dict[str, Any] = {"rule": rule, "seeds": len(runs)}
        for key in METRICS:
            values = [r[key] for r in runs if r[key] is not None]
            if values:
                m, ci = mean_ci(values)
                row[key] = {"mean": round(m, 4), "ci95": None if ci is None else round(ci, 4)}
        row["gold_score"] = round(statistics.fmean(
            r["helpful_accuracy"] - r["violation_rate"] - r["false_refusal_rate"] for r in runs), 4)
        rows.append(row)
    rows.sort(key=lambda r: -r["gold_score"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def _plot(rows: list[dict[str, Any]], reference: dict[str, Any] | None, path: Path) -> None:
    """Two panels, one marker per rule with its 95% intervals: helpfulness against safety (1 - violations),
    and false refusals against violations (the two ways of failing on safety)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    markers = "osD^vP*Xhp<>"
    for i, row in enumerate(rows):
        style = {"fmt": markers[i % len(markers)], "capsize": 3, "label": row["rule"], "color": f"C{i % 10}"}
        x, y, f = row["helpful_accuracy"], row["violation_rate"], row["false_refusal_rate"]
        ax.errorbar(x["mean"], 1 - y["mean"], xerr=x["ci95"] or 0, yerr=y["ci95"] or 0, **style)
        ax2.errorbar(y["mean"], f["mean"], xerr=y["ci95"] or 0, yerr=f["ci95"] or 0, **style)
    if reference:
        ax.plot(reference["helpful_accuracy"], 1 - reference["violation_rate"], "k*", markersize=10,
                label="SFT (start)")
        ax2.plot(reference["violation_rate"], reference["false_refusal_rate"], "k*", markersize=10)
    ax.set_xlabel("helpful_accuracy (benign, held-out)")
    ax.set_ylabel("1 - violation_rate (harmful, held-out)")
    ax.set_title("Helpfulness-safety frontier (95% CI over seeds)", fontsize=10)
    ax2.set_xlabel("violation_rate (harmful, held-out)")
    ax2.set_ylabel("false_refusal_rate (borderline, held-out)")
    ax2.set_title("Unsafe vs over-cautious", fontsize=10)
    for a in (ax, ax2):
        a.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


REPORT = """# Reward combination ablation: {{ campaign }}

Shared rounds (built once, reused by every arm): {{ shared | join(", ") }}.
Each arm re-runs {{ downstream | join(", ") }} with its rule, for seeds {{ seeds | join(", ") }}
({{ arms }} arms, {{ workers }} parallel processes, {{ "%.1f" | format(seconds / 60) }} minutes).
Gold metrics on {{ n }} held-out prompts; mean and 95% CI (Student t) over seeds.
{% if reference %}SFT start: violation_rate {{ reference.violation_rate }}, false_refusal_rate
{{ reference.false_refusal_rate }}, helpful_accuracy {{ reference.helpful_accuracy }}.{% endif %}

| rank | rule | violation_rate | false_refusal_rate | helpful_accuracy | mean reward (own rule) | KL to SFT | gold score |
|---|---|---|---|---|---|---|---|
{% for r in rows -%}
| {{ r.rank }} | {{ r.rule }} |{% for k in metrics %} {{ fmt(r.get(k)) }} |{% endfor %} {{ r.gold_score }} |
{% endfor %}
Ranking by the gold score `{{ gold_score }}`: {{ rows | map(attribute="rule") | join(" > ") }}.
The mean reward is each policy's greedy answers scored by its own rule: it is not comparable
across rules. Plot: `frontier.png`.
{% if curves %}
## Over-optimisation: the evaluation points of the PPO rounds (mean over seeds)

{% for label, points in curves.items() -%}
**{{ label }}**

| iteration | sqrt(KL) | reward (RM) | helpful_accuracy | violation_rate | false_refusal_rate | gold utility |
|---|---|---|---|---|---|---|
{% for p in points -%}
| {{ p.iteration }} | {{ p.sqrt_kl }} | {{ p.rm_reward }} | {{ p.helpful_accuracy }} | {{ p.violation_rate }} | {{ p.false_refusal_rate }} | {{ p.mean_gold_utility }} |
{% endfor %}
{% endfor -%}
{% endif %}"""


def mean_curves(curves: dict[str, list[list[dict[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    """Per arm label, the evaluation points averaged over seeds at each iteration (rounded to 4 places)."""
    out = {}
    for label, runs in curves.items():
        by_iteration: dict[int, list[dict[str, Any]]] = {}
        for points in runs:
            for point in points:
                by_iteration.setdefault(point["iteration"], []).append(point)
        out[label] = [{"iteration": it, **{k: round(statistics.fmean(p[k] for p in ps if p.get(k) is not None), 4)
                                           for k in ps[0] if k != "iteration"
                                           and all(p.get(k) is not None for p in ps)}}
                      for it, ps in sorted(by_iteration.items())]
    return out


def _fmt(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "n/a"
    return f"{cell['mean']:.4f}" + (f" ± {cell['ci95']:.4f}" if cell["ci95"] is not None else "")


def run_ablation(cfg: CampaignConfig, run_dir: Path, *, workers: int | None = None,
                 log=lambda m: print(m, file=sys.stderr, flush=True)) -> dict[str, Any]:
    """Build the shared rounds, run every arm, write the report; returns the report record."""
    import time

    from jinja2 import Template

    from align.campaign import plan_rounds, run_campaign

    if cfg.ablation is None:
        raise AlignError("the config has no `ablation:` section (rules and seeds to compare)")
    first = split_stages(cfg)
    started = time.perf_counter()
    # the shared rounds: reused from the run (the default campaign's, say), whose own config is kept
    shared = run_campaign(cfg, run_dir, until=plan_rounds(cfg)[first - 1].id, log=log, keep_config=True) \
        if first else []
    arms = arms_of(cfg)
    for arm in {a.label: a for a in arms}.values():  # a variant that sets a field wrongly fails before any work
        arm_config(cfg, arm)
    cores = os.cpu_count() or 1
    workers = min(len(arms), workers or cfg.ablation.workers or max(1, cores))
    threads = max(1, cores // workers)
    out = run_dir / "ablation"
    jobs = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        for arm in arms:
            arm_dir = out / arm.name
            for r in shared:
                if not (arm_dir / "rounds" / r.id).exists():
                    _link_tree(r.path, arm_dir / "rounds" / r.id)
            log(f"[ablation] {arm.name}: queued ({arm_dir})")
            jobs[arm.name] = pool.submit(_run_arm, arm_config(cfg, arm).model_dump_json(), str(arm_dir), threads)
        results: dict[str, list[dict[str, Any]]] = {}
        curves: dict[str, list[list[dict[str, Any]]]] = {}
        failures = []
        for arm in arms:
            job = jobs[arm.name]
            try:
                res = job.result()
            except AlignError as e:
                failures.append(f"{arm.name}: {e}")
                continue
            log(f"[ablation] {arm.name}: done ({res['round']})")
            results.setdefault(arm.label, []).append(arm_metrics(res["metrics"]))
            if res["metrics"].get("over_optimisation"):
                curves.setdefault(arm.label, []).append(res["metrics"]["over_optimisation"])
    if failures:
        raise AlignError("ablation arms failed:\n  " + "\n  ".join(failures))
    rows = summarize(results)
    kinds = {p.id: p.kind for p in plan_rounds(cfg)}
    sft = next((r.metrics["gold"] for r in shared if kinds[r.id] == "sft" and "gold" in r.metrics), None)
    reference = {k: sft[k] for k in ("violation_rate", "false_refusal_rate", "helpful_accuracy")} if sft else None
    last = jobs[arms[-1].name].result()["metrics"]
    record = {"campaign": cfg.campaign, "shared_rounds": [r.id for r in shared],
              "downstream_stages": [s.kind + (f"-{s.name}" if s.name else "") for s in cfg.stages[first:]],
              "seeds": cfg.ablation.seeds, "workers": workers, "threads_per_worker": threads,
              "seconds": round(time.perf_counter() - started, 1), "n": last["gold"]["n"], "gold_score": GOLD_SCORE,
              "reference_sft": reference, "rules": rows,
              "arms": {arm.name: arm_metrics(jobs[arm.name].result()["metrics"]) for arm in arms},
              **({"curves": mean_curves(curves)} if curves else {})}
    (out / "campaign.yaml").write_text(config_to_yaml(cfg))
    (out / "report.json").write_text(json.dumps(record, indent=2) + "\n")
    _plot(rows, reference, out / "frontier.png")
    (out / "report.md").write_text(Template(REPORT).render(
        campaign=cfg.campaign, shared=record["shared_rounds"] or ["none"], downstream=record["downstream_stages"],
        seeds=cfg.ablation.seeds, arms=len(arms), workers=workers, seconds=record["seconds"], n=record["n"],
        reference=reference, rows=rows, metrics=METRICS, fmt=_fmt, gold_score=GOLD_SCORE,
        curves=record.get("curves")) + "\n")
    return record
