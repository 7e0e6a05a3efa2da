"""The ``combine:`` and ``ablation:`` config sections: which rule turns the two reward models'
scores into one reward, and which rules ``align ablate`` compares. A rule is checked on a probe
batch when the config loads, before anything trains."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from align.combine.rules import resolve_rule
from align.config import Strict, folder_name, register_section
from align.errors import AlignError


class RuleChoice(Strict):
    """A combination rule and its parameters, checked on a probe batch when the config loads."""

    rule: str = Field("llama2_gate", description="a registered rule name or 'module:function'")
    params: dict[str, float] = Field(default_factory=dict, description="keyword parameters of the rule")

    @model_validator(mode="after")
    def _rule_works(self) -> RuleChoice:
        try:
            resolve_rule(self.rule, self.params)
        except AlignError as e:
            raise ValueError(str(e)) from None
        return self


class CombineConfig(RuleChoice):
    """How the two reward models' scores become one reward (Llama 2 section 3.2.3).

    ``rule`` is applied to probabilities (the sigmoid of each score); then, if ``whiten_logit``,
    ``whiten(logit(.))`` over the batch. Rules: llama2_gate (params: threshold, default 0.15),
    helpfulness_only, safety_only, weighted_sum (params: safety_weight, default 0.5), min, or a
    user rule ``module:function(r_h, r_s, is_safety, **params)``.
    """

    whiten_logit: bool = Field(True, description="apply whiten(logit(.)) over the batch after the rule")
    logit_eps: float = Field(1e-6, gt=0, lt=0.5, description="clamp to [eps, 1 - eps] before the logit")


class AblationRule(RuleChoice):
    """One arm of a combination-rule ablation."""

    name: str = Field(description="the arm's label (a folder name)")
    rule: str = Field(description="a registered rule or 'module:function'")

    _name_ok = field_validator("name")(lambda cls, v: folder_name(v))


class AblationVariant(Strict):
    """A setting crossed with every rule (``rules x variants x seeds``), such as a PPO algorithm."""

    name: str = Field(description="the variant's label (joins the rule's in the arm's name: <rule>+<variant>)")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted config fields and their values, applied "
                                                                 "as --set would (e.g. ppo.algorithm: ppo_lagrangian)")

    _name_ok = field_validator("name")(lambda cls, v: folder_name(v))


class AblationConfig(Strict):
    """``align ablate``: the stages from the first rule-dependent one onwards run once per rule and
    per seed, from the shared rounds before it (built once, reused)."""

    rules: list[AblationRule] = Field(min_length=1, description="the arms: one rule (and its parameters) each")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1,
                             description="seeds of the downstream rounds (95% intervals need at least 2)")
    variants: list[AblationVariant] = Field(default_factory=list, description=(
        "settings crossed with every rule (e.g. PPO algorithms); empty: the rules alone"))
    workers: int | None = Field(None, ge=1, description="parallel processes; default: one per core")
    shared_until: str | None = Field(None, description=(
        "the last shared round (a round id or stage kind): later than the first rule-dependent stage only when "
        "every rule is the campaign's own (variants of a later stage, e.g. PPO settings on shared rs rounds)"))

    @model_validator(mode="after")
    def _unique(self) -> AblationConfig:
        for what, names in (("rule", [r.name for r in self.rules]), ("variant", [v.name for v in self.variants])):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} names repeat: {names}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        return self


register_section("combine", CombineConfig, description="the reward combination rule (Llama 2 section 3.2.3)")
register_section("ablation", AblationConfig, optional=True, description="what `align ablate` varies")
