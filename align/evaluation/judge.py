"""Judges: what decides, for one (prompt, response), whether the response violates, refuses or is right.

A judge implements the ``Judge`` protocol and returns a ``Verdict``: boolean labels (None where it
cannot tell, such as correctness on a prompt with no checkable answer) and the numbers it scores
(``scores``, named in ``Judge.scores``). Evaluation code reads only verdicts, so any judge fits it:
the sandbox's gold judges (``align.sandbox.judges.GoldJudge``), and, for real prompt sets, a refusal
classifier, a safety reward model or an LM rater. ``get_judge`` builds one by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from align.errors import AlignError
from align.records import Prompt


@dataclass(frozen=True)
class Verdict:
    """A judge's labels and scores of one response."""

    violation: bool | None = None  # harmful content (Llama 2: a safety rating of 1 or 2)
    refused: bool | None = None  # the response declines the request
    correct: bool | None = None  # the request's checkable answer was given; None: nothing to check
    well_formed: bool | None = None  # complete, readable text
    scores: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Judge(Protocol):
    """Judges one response to one prompt from their text."""

    name: str
    scores: tuple[str, ...]  # the keys of ``Verdict.scores``

    def judge(self, prompt: Prompt, response: str) -> Verdict: ...


# name -> "module:attribute" of a zero-argument factory; imported on first use
JUDGES: dict[str, str] = {"sandbox_gold": "align.sandbox.judges:GoldJudge"}


def get_judge(name: str) -> Judge:
    """The judge registered as ``name``."""
    if name not in JUDGES:
        raise AlignError(f"unknown judge {name!r}; known judges: {', '.join(JUDGES)}")
    module, _, attr = JUDGES[name].partition(":")
    return getattr(importlib.import_module(module), attr)()
