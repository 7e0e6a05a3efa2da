"""Evaluation suites: a prompt set and the judge that reads the answers to it.

The built-in suite is the sandbox world's held-out prompts under the gold judges, what every
policy round of a sandbox campaign reports as ``metrics.gold``. Suites over real prompt sets plug in
here with their own judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from align.evaluation.judge import Judge, get_judge
from align.records import Prompt


@dataclass(frozen=True)
class Suite:
    """Prompts to answer and the judge of the answers."""

    name: str
    prompts: list[Prompt]
    judge: Judge


def sandbox_heldout(world: Path) -> Suite:
    """The held-out prompts of the sandbox world in ``world`` (unseen entities and templates), judged by
    the gold judges."""
    from align.sandbox.build import read_prompts

    return Suite("sandbox-heldout", read_prompts(world, "eval"), get_judge("sandbox_gold"))
