"""The evaluation stage: the newest policy on the sandbox world's held-out prompts, under the gold judges.

Parents: the sandbox world and the newest policy round. Writes: ``eval_samples.jsonl`` (every judged
answer). Metrics: ``gold`` (DESIGN.md section 9, with 95% intervals). Knobs: ``eval:``.
"""

from __future__ import annotations

from typing import Any

from align.config import CampaignConfig, StageSpec
from align.evaluation.policy import evaluate_policy
from align.evaluation.suites import sandbox_heldout
from align.models import load_causal_lm, load_tokenizer
from align.records import write_jsonl
from align.stages import Planned, Stage, StageContext, register


def parents(planned: Planned, cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    return [planned.latest("sandbox"), planned.policy()]


def run(ctx: StageContext) -> dict[str, Any]:
    policy = ctx.parents.policy
    tokenizer = load_tokenizer(policy.model)
    model = load_causal_lm(policy.model, ctx.cfg.model)
    gold, rows = evaluate_policy(model, tokenizer, sandbox_heldout(ctx.parents.sandbox.path), ctx.cfg.eval,
                                 seed=ctx.seed)
    write_jsonl(ctx.out.eval_samples, rows)
    return {"gold": gold}


register(Stage(kind="eval", run=run, parents=parents, doc=__doc__))
