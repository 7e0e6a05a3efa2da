"""Simulated annotators: SFT demonstrations with a noise mix, and preference pairs.

DESIGN.md section 3; Llama 2 sections 3.1 (demonstrations) and 3.2.1 (4-level preference
ratings, the three safety bins, pairs with a safe rejected and an unsafe chosen answer dropped).
Preferences come from the gold judges plus annotator noise: a Bradley-Terry choice with
temperature ``choice_temperature`` and a noisy perceived gap that sets the rating.

``Annotators`` is the annotation policy of a world (which requests each axis annotates, and the
safety annotators' caution on borderline requests): the world's pairs and every ``prefs`` round
use the same one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

from dataclasses import dataclass

from align.records import Demonstration, PreferencePair, Prompt
from align.sandbox.judges import HelpfulnessVerdict, SafetyVerdict, is_well_formed, judge_helpfulness, judge_safety, \
    utility
from align.sandbox.responses import WRONG_STYLES, render_response


# Perceived gold gap (in [0, 1]) at or above which each rating is given.
RATING_THRESHOLDS = (("significantly_better", 0.5), ("better", 0.3), ("slightly_better", 0.12))

# Styles a pair is drawn from, per family (annotators compare two model samples).
PAIR_STYLES = {
    "benign": ("correct", "wrong", "verbose", "refusal", "off_topic", "malformed"),
    "borderline": ("correct", "wrong", "verbose", "refusal", "redirect", "off_topic"),
    "harmful": ("refusal", "redirect", "harmful", "harmful_partial", "off_topic", "malformed"),
    "hidden_harmful": ("refusal", "redirect", "harmful", "harmful_partial", "off_topic", "malformed"),
}


def demonstrate(prompt: Prompt, mix: Mapping[str, float], rng: random.Random) -> Demonstration:
    """An annotator's written answer: a style drawn from ``mix`` (style -> probability)."""
    styles = sorted(mix)
    style = rng.choices(styles, weights=[mix[s] for s in styles])[0]
    return Demonstration(prompt=prompt, response=render_response(prompt, style, rng), style=style)


def rate(gap: float) -> str:
    """The 4-level rating for a perceived gap between two answers."""
    for rating, threshold in RATING_THRESHOLDS:
        if gap >= threshold:
            return rating
    return "negligibly_better"


def compare_helpfulness(prompt: Prompt, a: str, b: str, rng: random.Random, *,
                        choice_temperature: float, gap_noise: float) -> PreferencePair | None:
    """A helpfulness annotator's comparison of two answers; None when they are the same text."""
    if a == b:
        return None
    ha, hb = judge_helpfulness(prompt, a).score, judge_helpfulness(prompt, b).score
    return _choose(prompt, a, b, ha, hb, rng, axis="helpfulness", choice_temperature=choice_temperature,
                   gap_noise=gap_noise)


ANSWERING_RISK = 1.5  # what a cautious safety annotator charges for answering a borderline request


def cautious_utility(prompt: Prompt, response: str, safety: SafetyVerdict, helpfulness: HelpfulnessVerdict) -> float:
    """A cautious safety annotator's value of a response to a borderline request: the safety
    annotators' value (``judges.utility``) less ``ANSWERING_RISK`` for answering at all, so a refusal
    (4 + 0.1) beats the right answer (4 + 1.0 - 1.5) by a "significantly better" gap of 0.6."""
    value = utility(prompt, response, safety, helpfulness)
    return value - ANSWERING_RISK if not helpfulness.refused and is_well_formed(response) else value


def compare_safety(prompt: Prompt, a: str, b: str, rng: random.Random, *, choice_temperature: float,
                   gap_noise: float, caution: float = 0.0) -> PreferencePair | None:
    """A safety annotator's comparison: safer first, then more helpful, and a risk note on a
    borderline request counts for it (``judges.gold_utility``); with the safety bin. On a borderline
    request, with probability ``caution`` the annotator is cautious (``cautious_utility``).

    Returns None when the texts are equal or when the annotator chose an unsafe answer over a
    safe one (Llama 2 drops those pairs).
    """
    if a == b:
        return None
    sa, sb = judge_safety(prompt, a), judge_safety(prompt, b)
    # Lexicographic: one step of the 5-point safety rating outweighs any helpfulness gap;
    # between equally safe answers, the helpfulness gap (and a risk note) decides.
    value = cautious_utility if caution and prompt.family == "borderline" and rng.random() < caution else utility
    va, vb = value(prompt, a, sa, judge_helpfulness(prompt, a)), value(prompt, b, sb, judge_helpfulness(prompt, b))
    pair = _choose(prompt, a, b, va, vb, rng, axis="safety", choice_temperature=choice_temperature,
                   gap_noise=gap_noise)
    chosen_safe = not (sa if pair.chosen == a else sb).violation
    rejected_safe = not (sb if pair.chosen == a else sa).violation
    if rejected_safe and not chosen_safe:
        return None
    bin_ = "both_safe" if chosen_safe and rejected_safe else ("safe_vs_unsafe" if chosen_safe else "both_unsafe")
    return PreferencePair(prompt=pair.prompt, chosen=pair.chosen, rejected=pair.rejected, rating=pair.rating,
                          axis="safety", safety_bin=bin_, chosen_safe=chosen_safe, rejected_safe=rejected_safe)


def _choose(prompt: Prompt, a: str, b: str, va: float, vb: float, rng: random.Random, *, axis: str,
            choice_temperature: float, gap_noise: float) -> PreferencePair:
    z = max(-50.0, min(50.0, (va - vb) / choice_temperature))  # clamp: exp overflows past ~709
    p_a = 1.0 / (1.0 + math.exp(-z))
    chosen, rejected = (a, b) if rng.random() < p_a else (b, a)
    gap = max(0.0, abs(va - vb) + rng.gauss(0.0, gap_noise))
    # An annotator who picked the worse answer perceives at most a slight difference.
    if (chosen == a) != (va >= vb):
        gap = min(gap, RATING_THRESHOLDS[-1][1])
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, rating=rate(gap), axis=axis)


def sample_pair_responses(prompt: Prompt, rng: random.Random, answer_pairs: float = 0.0,
                          wrong_styles: tuple[str, ...] = WRONG_STYLES) -> tuple[str, str]:
    """Two answers in different styles, as if sampled from two model variants.

    With probability ``answer_pairs`` (prompts with a checkable answer only) the pair is what two
    samples of a model that has learned the format mostly differ in: a right answer (concise or
    verbose) against a wrong one, in one of ``wrong_styles``.
    """
    if answer_pairs and prompt.answer is not None and rng.random() < answer_pairs:
        right = "correct" if rng.random() < 0.8 else "verbose"
        wrong = rng.choice(wrong_styles)
        s1, s2 = (right, wrong) if rng.random() < 0.5 else (wrong, right)
        return render_response(prompt, s1, rng), render_response(prompt, s2, rng)
    s1, s2 = rng.sample(PAIR_STYLES[prompt.family], 2)
    return render_response(prompt, s1, rng), render_response(prompt, s2, rng)


def risk_note_responses(prompt: Prompt, rng: random.Random) -> tuple[str, str]:
    """The right answer with and without its risk note, in random order: the comparison on which
    safety and helpfulness annotators disagree (``judges.gold_utility``)."""
    styles = ("correct", "cautious") if rng.random() < 0.5 else ("cautious", "correct")
    return render_response(prompt, styles[0], rng), render_response(prompt, styles[1], rng)


HELPFULNESS_FAMILIES = ("benign", "borderline")  # annotated for helpfulness in every version
SAFETY_FAMILIES = ("borderline", "harmful", "hidden_harmful")


@dataclass(frozen=True)
class Annotators:
    """A world's annotation policy: the requests each axis annotates and how its annotators judge.

    Helpfulness annotation covers benign and borderline requests and, scaled by ``harmful_weight`` and
    ``hidden_weight``, harmful ones (judged from the requester's view); safety annotation covers
    borderline (scaled by ``borderline_weight``), harmful and hidden harmful (scaled by
    ``safety_hidden_weight``) requests, with ``caution`` on borderline ones.
    """

    choice_temperature: float
    gap_noise: float
    harmful_weight: float = 0.0
    hidden_weight: float = 0.0
    borderline_weight: float = 1.0
    safety_hidden_weight: float = 1.0
    caution: float = 0.0

    @classmethod
    def from_config(cls, cfg) -> Annotators:
        """From a ``sandbox.preferences`` config (``PreferenceConfig``)."""
        return cls(cfg.choice_temperature, cfg.gap_noise, cfg.helpfulness_harmful_weight,
                   cfg.helpfulness_hidden_weight, cfg.safety_borderline_weight, cfg.safety_hidden_weight,
                   cfg.borderline_caution)

    def family_weights(self, axis: str, mix: Mapping[str, float]) -> dict[str, float]:
        """The weight of each prompt family among the prompts ``axis`` annotates, from a family mix."""
        scale = ({"benign": 1.0, "borderline": 1.0, "harmful": self.harmful_weight, "hidden_harmful": self.hidden_weight}
                 if axis == "helpfulness" else
                 {"benign": 0.0, "borderline": self.borderline_weight, "harmful": 1.0,
                  "hidden_harmful": self.safety_hidden_weight})
        return {f: w * scale[f] for f, w in mix.items()}

    def axes(self, prompt: Prompt) -> list[str]:
        """The axes that annotate ``prompt`` (by family; a prompt of no known family goes to both)."""
        helpful = HELPFULNESS_FAMILIES + (("harmful",) if self.harmful_weight else ()) + (
            ("hidden_harmful",) if self.hidden_weight else ())
        if prompt.family not in HELPFULNESS_FAMILIES + SAFETY_FAMILIES:
            return ["helpfulness", "safety"]
        return [a for a, fams in (("helpfulness", helpful), ("safety", SAFETY_FAMILIES)) if prompt.family in fams]

    def compare(self, prompt: Prompt, a: str, b: str, axis: str, rng: random.Random) -> PreferencePair | None:
        """The ``axis`` annotators' comparison of two answers (None: no pair)."""
        if axis == "helpfulness":
            return compare_helpfulness(prompt, a, b, rng, choice_temperature=self.choice_temperature,
                                       gap_noise=self.gap_noise)
        return compare_safety(prompt, a, b, rng, choice_temperature=self.choice_temperature, gap_noise=self.gap_noise,
                              caution=self.caution)
