"""Iterative preference refresh (Llama 2 section 3.2.1: new comparisons every week, on the newest
models' samples, so the reward models stay on-distribution).

A ``prefs`` round samples ``k`` answers per prompt from the newest policy (two, as in Llama 2, by
default) and labels every distinct pair among them:

- ``sandbox``: the simulated annotators (gold judges plus Bradley-Terry noise, 4-level ratings,
  safety bins), as for the world's original pairs;
- ``reward_model``: an AI labeler (RLAIF): the newest reward model of the axis prefers the
  higher-scored answer; the gap between the two sigmoid scores sets the rating;
- ``jsonl``: labels made elsewhere (e.g. by people), imported through data specs.

As in the world, helpfulness pairs use benign and borderline prompts and safety pairs use every
prompt but the benign ones. Later ``rm`` rounds train on the world's pairs plus every earlier
``prefs`` round's pairs.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from align.records import PreferencePair, Prompt
from align.sandbox.annotators import compare_helpfulness, compare_safety, rate
from align.sandbox.judges import gold_utility, judge_helpfulness

HELPFULNESS_FAMILIES = ("benign", "borderline")
SAFETY_FAMILIES = ("borderline", "harmful", "hidden_harmful")


def axes_of(prompt: Prompt) -> list[str]:
    """The annotation axes a prompt goes to (by family; prompts without one go to both)."""
    if prompt.family not in HELPFULNESS_FAMILIES + SAFETY_FAMILIES:
        return ["helpfulness", "safety"]
    return [a for a, fams in (("helpfulness", HELPFULNESS_FAMILIES), ("safety", SAFETY_FAMILIES))
            if prompt.family in fams]


def distinct_pairs(answers: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair of different answers among ``answers`` (duplicates count once), in sample order."""
    unique = list(dict.fromkeys(answers))
    return [(unique[i], unique[j]) for i in range(len(unique)) for j in range(i + 1, len(unique))]


def label_sandbox(prompt: Prompt, a: str, b: str, axis: str, rng: random.Random, *, choice_temperature: float,
                  gap_noise: float) -> PreferencePair | None:
    compare = compare_helpfulness if axis == "helpfulness" else compare_safety
    return compare(prompt, a, b, rng, choice_temperature=choice_temperature, gap_noise=gap_noise)


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
