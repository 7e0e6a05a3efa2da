"""Evaluating a reward model beyond its preference accuracy: does it check answers?

``verify_answers`` shows a helpfulness reward model line-ups of answers to prompts with a
checkable answer, the right one first and wrong or near-miss ones after, and reports how often
it scores the right one above all the others (chance: one over the line-up's length). A model that
rewards the form of an answer but cannot check it sits at chance, and best-of-K on it is reward-hacked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from align.records import Prompt
from align.reward.client import RewardModel
from align.reward.metrics import answer_verification


def verify_answers(rm: RewardModel, prompts: Sequence[Prompt], lineups: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Answer verification of ``rm`` on ``lineups[i]`` (right answer first) to ``prompts[i]``."""
    flat = [(p.text, c) for p, cands in zip(prompts, lineups) for c in cands]
    if not flat:
        return {"n": 0, "top1": None, "top1_by_category": {}, "candidates": 0}
    values = iter(rm.scores([p for p, _ in flat], [c for _, c in flat]).tolist())
    scores = [[next(values) for _ in cands] for cands in lineups]  # back into one line-up per prompt
    return answer_verification([p.category for p in prompts], scores)
