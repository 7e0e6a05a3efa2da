"""Reward combination: rules of (R_h, R_s, is_safety), the whiten(logit(.)) post-transform, and gate
calibration. ``combine_rewards`` is what the stages call."""

from align.combine.calibrate import calibrate_threshold
from align.combine.rules import RULES, Rule, gate_branch, resolve_rule
from align.combine.transform import combine_rewards, logit, whiten

__all__ = ["RULES", "Rule", "calibrate_threshold", "combine_rewards", "gate_branch", "logit", "resolve_rule",
           "whiten"]
