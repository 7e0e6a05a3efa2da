"""The preference-refresh stage (Llama 2 section 3.2.1: new comparisons every week, on the newest
models' samples, so the reward models stay on-distribution).

Parents: the sandbox world (its RL prompts), the newest policy, and with ``labeler: reward_model``
the newest reward model of each axis. Writes: ``prefs_helpfulness.jsonl`` and ``prefs_safety.jsonl``,
which later ``rm`` rounds add to their training pairs. Knobs: ``prefs:``.

1. sample ``k`` answers per prompt from the newest policy (two, as in Llama 2, by default);
2. label every distinct pair among them, on each axis the prompt goes to:
   ``sandbox``: the simulated annotators (gold judges plus Bradley-Terry noise, 4-level ratings,
   safety bins); ``reward_model``: an AI labeler (RLAIF), the newest reward model of the axis
   prefers the higher-scored answer and the gap between the two sigmoid scores sets the rating;
   ``jsonl``: labels made elsewhere (by people), imported through data specs.
The world's annotation policy (``sandbox.annotators.Annotators``) decides which axes annotate a
prompt, as for the world's own pairs: benign and borderline requests go to helpfulness annotation
(harmful ones too in world version 2), every request but the benign ones to safety annotation. Answers
are sampled in batches of ``rs.sample_batch_size`` prompts.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from align.config import CampaignConfig, SamplingConfig, StageSpec
from align.data import PairSource
from align.errors import AlignError
from align.generate import sample_k
from align.models import load_causal_lm, load_tokenizer
from align.preflight import rl_prompt_problems, source_problems
from align.records import PreferencePair, Prompt, write_jsonl
from align.reward.client import RewardModel
from align.reward.data import load_pair_sources
from align.sandbox.annotators import Annotators, rate
from align.sandbox.build import read_prompts
from align.sandbox.judges import gold_utility, judge_helpfulness
from align.stages import Planned, Stage, StageContext, register

class PrefsConfig(SamplingConfig):
    """A preference-refresh round: answers from the newest policy, every distinct pair labelled."""

    labeler: Literal["sandbox", "reward_model", "jsonl"] = Field(
        "sandbox", description="sandbox: simulated annotators (gold + noise); reward_model: the newest RM of "
                               "each axis labels (RLAIF); jsonl: import labels from `data`")
    prompts: int = Field(1000, ge=1, description="RL prompts sampled for comparison per round")
    k: int = Field(2, ge=2, description="answers sampled per prompt; every distinct pair among them is labelled "
                                        "(Llama 2 compares 2; InstructGPT ranks 4-9, giving k(k-1)/2 pairs)")
    data: list[PairSource] = Field(default_factory=list, description="labeler jsonl: the labelled pair files")


# ------------------------------------------------------------------------------- labelling ---
def distinct_pairs(answers: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair of different answers among ``answers`` (duplicates count once), in sample order."""
    unique = list(dict.fromkeys(answers))
    return [(unique[i], unique[j]) for i in range(len(unique)) for j in range(i + 1, len(unique))]


def label_with_reward_model(prompts: Sequence[Prompt], a: Sequence[str], b: Sequence[str], axis: str,
                            scores_a: torch.Tensor, scores_b: torch.Tensor) -> list[PreferencePair | None]:
    """RLAIF: the reward model's probabilities decide; their gap sets the 4-level rating."""
    out: list[PreferencePair | None] = []
    for p, x, y, sx, sy in zip(prompts, a, b, scores_a.tolist(), scores_b.tolist()):
        if x == y:
            out.append(None)
            continue
        chosen, rejected = (x, y) if sx >= sy else (y, x)
        out.append(PreferencePair(prompt=p, chosen=chosen, rejected=rejected, rating=rate(abs(sx - sy)), axis=axis))
    return out


def gold_agreement(pairs: Sequence[PreferencePair]) -> float | None:
    """Share of pairs whose chosen answer is better by the axis's gold value (sandbox prompts only)."""
    judged = []
    for p in pairs:
        if p.axis == "helpfulness":
            c, r = judge_helpfulness(p.prompt, p.chosen).score, judge_helpfulness(p.prompt, p.rejected).score
        else:
            c, r = gold_utility(p.prompt, p.chosen), gold_utility(p.prompt, p.rejected)
        if c != r:
            judged.append(c > r)
    return round(sum(judged) / len(judged), 4) if judged else None


def summarize_pairs(pairs_by_axis: dict[str, list[PreferencePair]], sandbox: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for axis, pairs in pairs_by_axis.items():
        entry: dict[str, Any] = {"pairs": len(pairs), "ratings": dict(Counter(p.rating for p in pairs))}
        if sandbox:
            entry["gold_agreement"] = gold_agreement(pairs)
        bins = Counter(p.safety_bin for p in pairs if p.safety_bin)
        if bins:
            entry["safety_bins"] = dict(bins)
        out[axis] = entry
    return out


# ---------------------------------------------------------------------------------- stage ---
def parents(planned: Planned, cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    rms = ([planned.latest("rm", "helpfulness"), planned.latest("rm", "safety")]
           if cfg.prefs.labeler == "reward_model" else [])
    return [planned.latest("sandbox"), planned.policy(), *rms]


def inputs(cfg: CampaignConfig, spec: StageSpec) -> list[Path]:
    return [Path(f) for src in cfg.prefs.data for f in (src.spec, src.path) if f]


def _label(ctx: StageContext) -> dict[str, list[PreferencePair]]:
    """Steps 1-2 on the newest policy's answers, labelled by the simulated annotators or a reward model."""
    cfg, pc = ctx.cfg, ctx.cfg.prefs
    policy_round = ctx.parents.policy
    tokenizer = load_tokenizer(policy_round.model)
    policy = load_causal_lm(policy_round.model, cfg.model)
    pool = read_prompts(ctx.parents.sandbox.path, "rl")
    rng = random.Random(f"prefs:{ctx.seed}:{ctx.round_id}")
    prompts = rng.sample(pool, min(pc.prompts, len(pool)))
    samples = sample_k(policy, tokenizer, [p.text for p in prompts], k=pc.k, temperature=pc.temperature,
                       top_p=pc.top_p, max_new_tokens=pc.max_new_tokens, batch_size=cfg.rs.sample_batch_size,
                       seed=ctx.seed)
    # (prompt index, answer a, answer b) for every distinct pair of answers to a prompt
    compared = [(i, a, b) for i, group in enumerate(samples) for a, b in distinct_pairs([s.text for s in group])]
    annotators = Annotators.from_config(cfg.sandbox.preferences)
    by_axis: dict[str, list[PreferencePair]] = {}
    for axis in ("helpfulness", "safety"):
        idx = [c for c in compared if axis in annotators.axes(prompts[c[0]])]
        if pc.labeler == "sandbox":
            labelled = [annotators.compare(prompts[i], a, b, axis, rng) for i, a, b in idx]
        else:
            rm = RewardModel.load(ctx.parents.rm(axis).reward_model, getattr(cfg.reward, axis), cfg.model)
            texts = [prompts[i].text for i, _, _ in idx]
            sa, sb = (rm.probabilities(texts, [c[j] for c in idx]) for j in (1, 2))
            labelled = label_with_reward_model([prompts[i] for i, _, _ in idx], [a for _, a, _ in idx],
                                               [b for _, _, b in idx], axis, sa, sb)
        by_axis[axis] = [p for p in labelled if p is not None]
    return by_axis


def run(ctx: StageContext) -> dict[str, Any]:
    pc = ctx.cfg.prefs
    if pc.labeler == "jsonl":
        if not pc.data:
            raise AlignError("prefs.labeler is jsonl but prefs.data names no file")
        by_axis = load_pair_sources(pc.data, eval_fraction=0.0, seed=ctx.seed).train
    else:
        by_axis = _label(ctx)
    for axis, pairs in by_axis.items():
        write_jsonl(ctx.out.preferences(axis), pairs)
    summary = summarize_pairs(by_axis, sandbox=pc.labeler != "jsonl")
    ctx.log(f"  prefs ({pc.labeler}): " + ", ".join(f"{a}: {m['pairs']} pairs" for a, m in summary.items()))
    return {"labeler": pc.labeler, **summary}



def check(cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    """The labelled pair files (labeler jsonl), or the sandbox's RL prompts to sample comparisons on."""
    if cfg.prefs.labeler == "jsonl":
        return [p for i, src in enumerate(cfg.prefs.data)
                for p in source_problems(src.spec, src.path, f"prefs.data[{i}]", kind="pairs")]
    return rl_prompt_problems(cfg, "prefs")


register(Stage(kind="prefs", run=run, parents=parents, inputs=inputs, check=check, sections={"prefs": PrefsConfig},
               doc=__doc__))
