"""The ``sandbox:`` config section: the synthetic world's knobs (DESIGN.md section 3).

Version 3 (the default) is version 2 with an ordering task in place of the list task and half of the
answer comparisons right against wrong, the wrong ones mostly the tiny policy's own kind of slip: a
world where a reward model can check answers better than the policy writes them (docs/sandbox.md).
Version 2 is the world where helpfulness and safety pull apart as in Llama 2:
helpfulness annotators judge harmful requests too, from the requester's view; safety annotators are
cautious on borderline requests; the safety tag misses hidden harmful requests and marks some
look-alikes. Version 1 is the first world, where the two axes mostly agree: ``version: 1`` fills in
its defaults (every version-2 knob off) and builds it byte for byte; ``version: 2`` builds the second
byte for byte.
"""

from __future__ import annotations

import math

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from align.config import Strict, register_section
from align.sandbox.responses import STYLES, WRONG_STYLES, WRONG_STYLES_V3
from align.sandbox.world import SANDBOX_VERSION

HARMFUL_STYLES = ("refusal", "redirect", "harmful", "harmful_partial", "off_topic", "malformed")


class FamilyMix(Strict):
    """Share of each prompt family (normalised; 0 drops a family)."""

    benign: float = Field(0.50, ge=0, description="benign tasks with checkable answers")
    borderline: float = Field(0.20, ge=0, description="benign requests in harmful-looking words (XSTest-style)")
    harmful: float = Field(0.18, ge=0, description="harmful requests tagged is_safety")
    hidden_harmful: float = Field(0.12, ge=0, description="harmful requests whose wording carries no tag")

    @model_validator(mode="after")
    def _some_weight(self) -> FamilyMix:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("at least one family needs a positive weight")
        return self


def styles_for(family: str) -> tuple[str, ...]:
    """The response styles a demonstration of ``family`` may take."""
    if family in ("benign", "borderline"):
        return tuple(s for s in STYLES if s != "harmful_partial")
    return HARMFUL_STYLES


class DemonstrationNoise(Strict):
    """Per family, the probability of each response style in SFT demonstrations.

    The defaults leave the SFT policy real headroom (some unsafe compliance, some over-refusal,
    some wrong answers), like the vendor data the paper's SFT started from.
    """

    benign: dict[str, float] = Field(default_factory=lambda: {
        "correct": 0.78, "wrong": 0.10, "verbose": 0.06, "refusal": 0.04, "off_topic": 0.02},
        description="styles of benign demonstrations")
    borderline: dict[str, float] = Field(default_factory=lambda: {
        "correct": 0.52, "refusal": 0.40, "wrong": 0.05, "verbose": 0.03},
        description="styles of borderline demonstrations (the over-refusal that alignment removes)")
    harmful: dict[str, float] = Field(default_factory=lambda: {"refusal": 0.33, "redirect": 0.25, "harmful": 0.42},
                                      description="styles of demonstrations on tagged harmful requests")
    hidden_harmful: dict[str, float] = Field(default_factory=lambda: {
        "harmful": 0.75, "refusal": 0.14, "redirect": 0.11},
        description="styles on harmful requests whose wording hides the intent (annotators miss it)")

    @model_validator(mode="after")
    def _valid_mix(self) -> DemonstrationNoise:
        for family, mix in self.model_dump().items():
            unknown = sorted(set(mix) - set(styles_for(family)))
            if unknown:
                raise ValueError(f"{family}: unknown style(s) {unknown}; known: {', '.join(styles_for(family))}")
            if any(p < 0 for p in mix.values()) or not math.isclose(sum(mix.values()), 1.0, abs_tol=1e-6):
                raise ValueError(f"{family}: probabilities must be >= 0 and sum to 1 (got {sum(mix.values()):.4f})")
        return self


class PreferenceConfig(Strict):
    """Simulated preference annotation (Llama 2 section 3.2.1). Defaults are version 2's; ``version: 1``
    sets the version-2 knobs off and ``risk_note_pairs`` 0, ``safety_borderline_weight`` 1."""

    helpfulness_pairs: int = Field(4000, ge=0, description="training pairs on the helpfulness axis")
    safety_pairs: int = Field(6000, ge=0, description="training pairs on the safety axis (more than the "
                                                      "helpfulness RM samples, as in the paper)")
    eval_pairs: int = Field(1000, ge=0, description="held-out pairs per axis")
    choice_temperature: float = Field(0.05, gt=0, description="Bradley-Terry noise of the annotator's choice")
    gap_noise: float = Field(0.05, ge=0, description="std of the noise on the perceived gap that sets the rating")
    answer_pairs: float = Field(0.0, ge=0, le=1, description=(
        "share of pairs on prompts with a checkable answer that compare a right answer with a wrong or near-miss "
        "one (what two samples of a trained model mostly differ in); the rest pair two styles at random. A reward "
        "model learns to verify answers only from thousands of these"))
    answer_errors: tuple[Literal["slip", "wrong", "near_miss"], ...] = Field(WRONG_STYLES, min_length=1, description=(
        "the wrong answers of those pairs and of the helpfulness RM's verification line-ups, by turns: slip (the tiny "
        "policy's own errors: a number one off, an ordering with a number not in the prompt, an entity with a syllable "
        "of another one of the prompt), wrong (another entity of the prompt, a number 1-3 off), near_miss (one "
        "syllable swapped for any other). Version 3: slip, wrong, near_miss"))
    risk_note_pairs: float = Field(0.3, ge=0, le=1, description=(
        "per borderline request, the chance that the annotators also compare the right answer with the same answer "
        "plus a risk note: safety annotators prefer the note, helpfulness annotators the concise answer (the two "
        "axes' tension on one pair)"))
    safety_borderline_weight: float = Field(0.25, ge=0, description=(
        "scales the borderline family's weight among the prompts of safety annotation (the rest are harmful and "
        "hidden-harmful requests): 0.25 makes borderline requests 14% of safety annotation, as adversarial prompt "
        "collection would"))
    helpfulness_harmful_weight: float = Field(0.5, ge=0, description=(
        "version 2: scales the tagged harmful family's weight among the prompts of helpfulness annotation. "
        "Helpfulness annotators judge how well any request is fulfilled (Llama 2's guideline), so these pairs "
        "prefer compliance; 0 (version 1): helpfulness annotation sees benign and borderline requests only"))
    helpfulness_hidden_weight: float = Field(6.0, ge=0, description=(
        "version 2: the same for harmful requests whose wording hides the intent: most of all these reach "
        "helpfulness annotation unflagged, so a helpfulness RM rewards compliance on them even with its share of "
        "safety pairs"))
    safety_hidden_weight: float = Field(0.25, ge=0, description=(
        "version 2: scales the hidden harmful family's weight among the prompts of safety annotation: adversarial "
        "prompts are collected to look adversarial, so few hidden ones reach safety annotation (1: the family mix's "
        "own weight, versions 1 and 3)"))
    borderline_caution: float = Field(0.85, ge=0, le=1, description=(
        "version 2: the share of safety comparisons on borderline requests made by cautious annotators, who prefer "
        "a refusal or a redirect to a correct answer (Llama 2: false refusal on the borderline set rises from 15% "
        "to 27% as safety data grows); above one half, a safety RM alone pushes toward over-refusal"))


DEFAULT_VERSION = SANDBOX_VERSION  # 3
# Each version's defaults, where they differ from the Field defaults (version 2's).
VERSION_DEFAULTS: dict[int, dict[str, Any]] = {
    # safety_hidden_weight 1: with a helpfulness RM that checks answers, best-of-K finds compliant answers to
    # hidden harmful requests; at 0.25 the safety RM left half of them above the gate's 0.15 (seed 1: 12% violations
    # after one rs round, 0.2% at 1.0; docs/sandbox.md item 9)
    3: {"preferences": {"answer_pairs": 0.5, "answer_errors": WRONG_STYLES_V3, "safety_hidden_weight": 1.0}},
    1: {"borderline_tagged": 0.0,
        "preferences": {"risk_note_pairs": 0.0, "safety_borderline_weight": 1.0,
                        "helpfulness_harmful_weight": 0.0, "helpfulness_hidden_weight": 0.0,
                        "safety_hidden_weight": 1.0, "borderline_caution": 0.0}},
}
VERSION_2_ONLY = ("borderline_tagged", "preferences.helpfulness_harmful_weight", "preferences.helpfulness_hidden_weight",
                  "preferences.borderline_caution")


class SandboxConfig(Strict):
    """The synthetic world (DESIGN.md section 3)."""

    version: int = Field(DEFAULT_VERSION, description="sandbox_version: results are comparable within one version; "
                                                       "1: the first world (its defaults filled in), 2: the axes "
                                                       "pull apart, 3 (the default): version 2 with an ordering "
                                                       "task and right-vs-wrong answer pairs (its defaults filled in)")
    heldout_fraction: float = Field(0.25, gt=0, lt=1, description="share of each entity pool kept for eval")
    train_mix: FamilyMix = Field(default_factory=FamilyMix, description="prompt families of SFT and RL prompts")
    eval_mix: FamilyMix = Field(default_factory=lambda: FamilyMix(benign=0.4, borderline=0.3, harmful=0.2,
                                                                   hidden_harmful=0.1),
                                description="prompt families of the held-out evaluation prompts")
    borderline_tagged: float = Field(0.05, ge=0, le=1, description=(
        "version 2: the share of borderline requests that carry the is_safety tag, in every split (real safety "
        "prompt sets hold look-alikes); with hidden harmful requests untagged, the tag is wrong both ways, so the "
        "gate's R_s < threshold branch and its calibration decide outcomes. 0 in version 1"))
    sft_demonstrations: int = Field(10000, ge=1, description="demonstrations written for SFT")
    rl_prompts: int = Field(2000, ge=0, description="training prompts for rejection sampling and PPO")
    eval_prompts: int = Field(1200, ge=1, description="held-out prompts for gold evaluation")
    demonstrations: DemonstrationNoise = Field(default_factory=DemonstrationNoise,
                                               description="annotator noise of the SFT demonstrations")
    preferences: PreferenceConfig = Field(default_factory=PreferenceConfig,
                                          description="simulated preference annotation")
    tokenizer_vocab_size: int = Field(1024, ge=300, description="BPE vocabulary size")

    @model_validator(mode="before")
    @classmethod
    def _version_defaults(cls, data: Any) -> Any:
        """Another ``version`` fills in that version's defaults for the keys it does not set."""
        version = data.get("version", DEFAULT_VERSION) if isinstance(data, dict) else None
        if version not in VERSION_DEFAULTS:
            return data
        defaults = VERSION_DEFAULTS[version]
        prefs = data.get("preferences") or {}
        prefs = prefs.model_dump() if isinstance(prefs, PreferenceConfig) else prefs
        if not isinstance(prefs, dict):
            return data
        top = {k: v for k, v in defaults.items() if k != "preferences"}
        return {**top, **data, "preferences": {**defaults["preferences"], **prefs}}

    @field_validator("version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v not in (1, 2, SANDBOX_VERSION):
            raise ValueError(f"this align builds sandbox versions 1, 2 and {SANDBOX_VERSION}, not {v}")
        return v

    @model_validator(mode="after")
    def _version_1_has_no_version_2_knobs(self) -> SandboxConfig:
        if self.version == 1:
            on = [k for k in VERSION_2_ONLY if _get(self, k)]
            if on:
                raise ValueError(f"version 1 has no {', '.join(on)}: set them to 0 or use version 2")
        return self


def _get(model: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        model = getattr(model, part)
    return model


register_section("sandbox", SandboxConfig, description="the synthetic world (DESIGN.md section 3)")
