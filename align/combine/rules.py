"""Combination rules: pure, vectorised functions of (R_h, R_s, is_safety) -> combined reward.

Inputs are probabilities in [0, 1] (the sigmoid of each reward model's score), one entry per
(prompt, response); ``is_safety`` is the prompt's tag. Llama 2 (section 3.2.2, eq. 1)::

    R_c = R_s  if is_safety(prompt) or R_s < 0.15  else  R_h

Its two parts can be ablated: ``use_threshold: 0`` is the tag alone, ``use_tag: 0`` the threshold alone.
``safe_rlhf`` is Safe RLHF's Lagrangian reward with a fixed multiplier.

A user rule is any ``module:function`` with the same signature (the module on the import path or
beside the config, see ``align.config``) or ``path/to/file.py:function``; it is probed on a small
batch (shape and NaN checks) when the config is loaded, before anything trains. The built-in rules'
parameters are range-checked (``PARAMS``): a weight outside [0, 1] or a threshold outside (0, 1) is
an error, not a reward of 0 everywhere.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from align.combine.transform import logit
from align.errors import AlignError

Rule = Callable[..., torch.Tensor]  # (r_h, r_s, is_safety, **params) -> (N,) combined reward

LLAMA2_THRESHOLD = 0.15  # Llama 2: precision 0.89, recall 0.55 on Meta Safety test set


def llama2_gate(r_h: torch.Tensor, r_s: torch.Tensor, is_safety: torch.Tensor, *,
                threshold: float = LLAMA2_THRESHOLD, use_tag: float = 1.0, use_threshold: float = 1.0) -> torch.Tensor:
    """The safety score on tagged prompts or when it flags the response as unsafe; else helpfulness
    (Llama 2 eq. 1, page 14). ``use_tag: 0`` ignores the prompt's tag (the threshold alone);
    ``use_threshold: 0`` ignores the score's threshold (the tag alone)."""
    return torch.where(_gated(r_s, is_safety, threshold, use_tag, use_threshold), r_s, r_h)


def _gated(r_s: torch.Tensor, is_safety: torch.Tensor, threshold: float, use_tag: float,
           use_threshold: float) -> torch.Tensor:
    """Where the gate reads the safety score: a tagged prompt (when the tag is used), or ``R_s < threshold``
    (when the threshold is used)."""
    return (is_safety & bool(use_tag)) | ((r_s < threshold) & bool(use_threshold))


def helpfulness_only(r_h: torch.Tensor, r_s: torch.Tensor, is_safety: torch.Tensor) -> torch.Tensor:
    return r_h


def safety_only(r_h: torch.Tensor, r_s: torch.Tensor, is_safety: torch.Tensor) -> torch.Tensor:
    return r_s


def weighted_sum(r_h: torch.Tensor, r_s: torch.Tensor, is_safety: torch.Tensor, *,
                 safety_weight: float = 0.5) -> torch.Tensor:
    """``(1 - w) R_h + w R_s``: a fixed trade-off, blind to the prompt's tag."""
    return (1.0 - safety_weight) * r_h + safety_weight * r_s


def safe_rlhf(r_h: torch.Tensor, r_s: torch.Tensor, is_safety: torch.Tensor, *,
               cost_weight: float = 1.0) -> torch.Tensor:
    """Safe RLHF's reward ``r - lambda * c`` (Dai et al. 2023, eq. 12) with the safety RM's score as the
    negative cost (``c = -logit(R_s)``) and a fixed ``lambda`` (``cost_weight``): on the score scale
    ``logit(R_h) + lambda * logit(R_s)``, returned as a probability. Blind to the prompt's tag."""
    return torch.sigmoid(logit(r_h) + cost_weight * logit(r_s))


def minimum(r_h: torch.Tensor, r_s: torch.Tensor, is_safety: torch.Tensor) -> torch.Tensor:
    """The worse of the two: a response must be both helpful and safe to score high."""
    return torch.minimum(r_h, r_s)


RULES: dict[str, Rule] = {"llama2_gate": llama2_gate, "helpfulness_only": helpfulness_only,
                          "safety_only": safety_only, "weighted_sum": weighted_sum, "min": minimum,
                          "safe_rlhf": safe_rlhf}


def gate_branch(r_s: torch.Tensor, is_safety: torch.Tensor, threshold: float = LLAMA2_THRESHOLD,
                use_tag: float = 1.0, use_threshold: float = 1.0) -> list[str]:
    """Which branch of the Llama 2 gate each entry took: ``safety_tag``, ``safety_low`` or ``helpfulness``."""
    return ["safety_tag" if t and use_tag else "safety_low" if s < threshold and use_threshold else "helpfulness"
            for s, t in zip(r_s.tolist(), is_safety.tolist())]


@dataclass(frozen=True)
class Range:
    """The values a built-in rule's parameter may take: an interval, or the flags 0 and 1."""

    low: float
    high: float
    open_low: bool = False
    open_high: bool = False
    flag: bool = False

    def __contains__(self, v: float) -> bool:
        if self.flag:
            return v in (0, 1)
        return ((v > self.low if self.open_low else v >= self.low)
                and (v < self.high if self.open_high else v <= self.high))

    def __str__(self) -> str:
        if self.flag:
            return "0 or 1"
        high = "inf" if math.isinf(self.high) else f"{self.high:g}"
        return f"{'(' if self.open_low else '['}{self.low:g}, {high}{')' if self.open_high else ']'}"


UNIT_INTERVAL, OPEN_UNIT, FLAG = Range(0, 1), Range(0, 1, True, True), Range(0, 1, flag=True)
PARAMS: dict[str, Range] = {  # the built-in rules' parameters, by name
    "threshold": OPEN_UNIT,  # a probability the safety score is compared with
    "safety_weight": UNIT_INTERVAL,  # a convex weight
    "use_tag": FLAG, "use_threshold": FLAG,
    "cost_weight": Range(0, math.inf, open_high=True),  # Safe RLHF's lambda >= 0
}


def _import(spec: str) -> Rule:
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):  # a file: the form a rule beside the config is resolved to
            module = sys.modules.get(f"align_user_rule:{module_name}")
            if module is None:
                where = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
                if where is None or not Path(module_name).is_file():
                    raise ImportError(f"no such file {module_name}")
                module = importlib.util.module_from_spec(where)
                where.loader.exec_module(module)  # type: ignore[union-attr]
                sys.modules[f"align_user_rule:{module_name}"] = module
        else:
            module = importlib.import_module(module_name)
        fn = getattr(module, attr)
    except (ImportError, AttributeError) as e:
        raise AlignError(f"combination rule {spec!r}: cannot import ({e}; a rule is 'module:function' on the "
                         "import path or beside the config, or 'file.py:function')") from None
    if not callable(fn):
        raise AlignError(f"combination rule {spec!r} is not callable")
    return fn


def _probe(name: str, fn: Rule, params: Mapping[str, Any]) -> None:
    """Call the rule on a small batch covering the edges; it must return N finite values."""
    r_h = torch.tensor([0.0, 1.0, 0.5, 0.9, 0.1, 0.15, 0.3, 0.7], dtype=torch.float64)
    r_s = torch.tensor([1.0, 0.0, 0.15, 0.1, 0.9, 0.5, 0.7, 0.3], dtype=torch.float64)
    tags = torch.tensor([False, True, False, True, False, False, True, False])
    try:
        out = torch.as_tensor(fn(r_h, r_s, tags, **params))
    except Exception as e:  # a user's rule: report whatever it raised, with the rule's name
        raise AlignError(f"combination rule {name!r} failed on a probe batch: {type(e).__name__}: {e}") from None
    if out.shape != r_h.shape:
        raise AlignError(f"combination rule {name!r} returned shape {tuple(out.shape)} for {len(r_h)} inputs; "
                         f"it must return one reward per input, shape ({len(r_h)},)")
    if not torch.isfinite(out.double()).all():
        raise AlignError(f"combination rule {name!r} returned NaN or infinite rewards on a probe batch "
                         f"(R_h={r_h.tolist()}, R_s={r_s.tolist()}): got {out.tolist()}")


def resolve_rule(name: str, params: Mapping[str, Any] | None = None) -> Rule:
    """The rule called ``name`` (registry name or ``module:function``), checked on a probe batch,
    with ``params`` bound."""
    params = dict(params or {})
    if ":" in name:
        fn = _import(name)
    elif name in RULES:
        fn = RULES[name]
    else:
        raise AlignError(f"unknown combination rule {name!r}; known rules: {', '.join(RULES)}, "
                         "or a user rule as 'module:function'")
    accepted = inspect.signature(fn).parameters
    unknown = [k for k in params if k not in accepted and not any(
        p.kind is p.VAR_KEYWORD for p in accepted.values())]
    if unknown:
        keyword = [k for k, p in accepted.items() if p.kind is p.KEYWORD_ONLY]
        raise AlignError(f"combination rule {name!r} takes no parameter {', '.join(map(repr, unknown))}; "
                         f"its parameters: {', '.join(keyword) or 'none'}")
    if name in RULES:
        for key, value in params.items():
            if key in PARAMS and value not in PARAMS[key]:
                where = f"is not {PARAMS[key]}" if PARAMS[key].flag else f"is outside {PARAMS[key]}"
                raise AlignError(f"combination rule {name!r}: {key} = {value:g} {where}")
    _probe(name, fn, params)
    return lambda r_h, r_s, is_safety: fn(r_h, r_s, is_safety, **params)
