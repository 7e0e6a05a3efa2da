"""Judges: what decides, for one (prompt, response), whether the response violates, refuses or is right.

A judge implements the ``Judge`` protocol and returns a ``Verdict``: boolean labels (None where it
cannot tell, such as correctness on a prompt with no checkable answer) and the numbers it scores
(``scores``, named in ``Judge.scores``). Evaluation code reads only verdicts, so any judge fits it:
the sandbox's gold judges (``align.sandbox.judges.GoldJudge``), and, for real prompt sets, a refusal
classifier, a safety reward model or an LM rater. ``get_judge`` builds one by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from align.errors import AlignError
from align.records import Prompt


@dataclass(frozen=True)
class Verdict:
    """A judge's labels and scores of one response."""

    violation: bool | None = None  # harmful content (Llama 2: a safety rating of 1 or 2)
    refused: bool | None = None  # the response declines the request
    correct: bool | None = None  # the request's checkable answer was given; None: nothing to check
    well_formed: bool | None = None  # complete, readable text
    label: str | None = None  # the judge's own class, e.g. refusal's full_compliance / full_refusal / partial_refusal
    scores: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Judge(Protocol):
    """Judges one response to one prompt from their text."""

    name: str
    scores: tuple[str, ...]  # the keys of ``Verdict.scores``

    def judge(self, prompt: Prompt, response: str) -> Verdict: ...


def judge_all(judge: Judge, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
    """Verdicts of ``responses[i]`` to ``prompts[i]``, in order: through the judge's batched
    ``judge_many(prompts, responses)`` where it has one (model-based judges), else one by one."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
    many = getattr(judge, "judge_many", None)
    verdicts = list(many(prompts, responses)) if many else [judge.judge(p, r) for p, r in zip(prompts, responses)]
    if len(verdicts) != len(prompts):
        raise ValueError(f"judge {judge.name!r} returned {len(verdicts)} verdicts for {len(prompts)} responses")
    return verdicts


# name -> "module:attribute" of a factory taking the judge's options as keywords; imported on first use
JUDGES: dict[str, str] = {
    "sandbox_gold": "align.sandbox.judges:GoldJudge",
    "refusal": "align.evaluation.refusal:RefusalJudge",
    "safety_rm": "align.evaluation.rm_judge:SafetyRMJudge",
    "helpfulness_rm": "align.evaluation.rm_judge:HelpfulnessRMJudge",
    "llm": "align.evaluation.llm_judge:LLMJudge",
}


def get_judge(name: str, **options: Any) -> Judge:
    """The judge registered as ``name``, built with ``options``."""
    if name not in JUDGES:
        raise AlignError(f"unknown judge {name!r}; known judges: {', '.join(sorted(JUDGES))}")
    module, _, attr = JUDGES[name].partition(":")
    factory = getattr(importlib.import_module(module), attr)
    try:
        return factory(**options)
    except TypeError as e:
        raise AlignError(f"judge {name!r}: bad options {sorted(options)} ({e})") from None
