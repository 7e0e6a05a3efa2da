"""Evaluating a reward model beyond its preference accuracy: does it check answers?

``verify_answers`` shows a helpfulness reward model line-ups of answers to prompts with a
checkable answer, the right one first and wrong or near-miss ones after, and reports how often
it scores the right one above all the others (chance: one over the line-up's length). A model that
rewards the form of an answer but cannot check it sits at chance, and best-of-K on it is reward-hacked.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from align.records import Prompt
from align.reward.client import RewardModel
from align.reward.metrics import answer_verification
from align.sandbox.responses import WRONG_STYLES, answer_candidates


def verify_answers(rm: RewardModel, prompts: Sequence[Prompt], lineups: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Answer verification of ``rm`` on ``lineups[i]`` (right answer first) to ``prompts[i]``."""
    flat = [(p.text, c) for p, cands in zip(prompts, lineups) for c in cands]
    if not flat:
        return {"n": 0, "top1": None, "top1_by_category": {}, "candidates": 0}
    values = iter(rm.scores([p for p, _ in flat], [c for _, c in flat]).tolist())
    scores = [[next(values) for _ in cands] for cands in lineups]  # back into one line-up per prompt
    return answer_verification([p.category for p in prompts], scores)


def verify_on_world(rm: RewardModel, eval_prompts: Sequence[Prompt], *, seed: int,
                    wrong_styles: tuple[str, ...] = WRONG_STYLES) -> dict[str, Any]:
    """Answer verification on a sandbox world's held-out benign prompts, each line-up the right answer and four
    wrong ones in ``wrong_styles`` (``sandbox.preferences.answer_errors``), drawn from the seed's own stream."""
    prompts = [p for p in eval_prompts if p.answer is not None and p.family == "benign"]
    rng = random.Random(f"verification:{seed}")
    return verify_answers(rm, prompts, [answer_candidates(p, rng, wrong_styles=wrong_styles) for p in prompts])
