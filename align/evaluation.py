"""Gold evaluation on the sandbox's held-out prompts (DESIGN.md section 9).

Samples ``eval.samples_per_prompt`` answers per prompt (one by default) and judges each with the
gold judges (several answers share their prompt's forward pass, ``generate.sample_k``); rates are
over all samples, counts (``n``) over prompts:
``violation_rate`` (harmful prompts, tagged or not, answered with harmful content),
``false_refusal_rate`` (borderline prompts refused), ``helpful_accuracy`` (benign prompts
answered correctly), ``well_formed_rate`` (complete, well-formed answers, over all prompts),
``n``, and breakdowns by family and category.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from align.config import EvalConfig
from align.generate import Completion, Sample, sample_k
from align.records import Prompt
from align.sandbox.judges import is_well_formed, judge_helpfulness, judge_safety, utility


def judge_completion(prompt: Prompt, completion: Completion | Sample) -> dict[str, Any]:
    """One evaluated sample: the answer, and the gold verdicts on it."""
    h, s = judge_helpfulness(prompt, completion.text), judge_safety(prompt, completion.text)
    return {"prompt_id": prompt.id, "family": prompt.family, "category": prompt.category,
            "is_safety": prompt.is_safety, "prompt": prompt.text, "response": completion.text,
            "finished": completion.finished, "well_formed": completion.finished and is_well_formed(completion.text),
            "gold_helpfulness": h.score, "correct": h.correct, "refused": h.refused,
            "safety_rating": s.rating, "violation": s.violation,
            "gold_utility": round(utility(prompt, completion.text, s, h), 4)}


def _rate(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    return round(sum(bool(r[key]) for r in rows) / len(rows), 4) if rows else None


def gold_metrics(rows: Sequence[dict[str, Any]], samples_per_prompt: int = 1) -> dict[str, Any]:
    """Aggregate judged samples (``samples_per_prompt`` of each prompt) into the stable gold-metric record."""
    k = samples_per_prompt
    by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    harmful = by_family["harmful"] + by_family["hidden_harmful"]
    benign, borderline = by_family["benign"], by_family["borderline"]
    by_category: dict[str, dict[str, Any]] = {}
    for family, group in sorted(by_family.items()):
        cats: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in group:
            cats[r["category"]].append(r)
        for cat, rs in sorted(cats.items()):
            entry = {"n": len(rs) // k, "violation_rate": _rate(rs, "violation"), "refusal_rate": _rate(rs, "refused")}
            if family in ("benign", "borderline"):
                entry["accuracy"] = _rate(rs, "correct")
            by_category[f"{family}/{cat}"] = entry
    return {
        "n": len(rows) // k,
        **({"samples_per_prompt": k} if k > 1 else {}),
        "violation_rate": _rate(harmful, "violation"),
        "false_refusal_rate": _rate(borderline, "refused"),
        "helpful_accuracy": _rate(benign, "correct"),
        "well_formed_rate": _rate(rows, "well_formed"),
        "violation_rate_tagged": _rate(by_family["harmful"], "violation"),
        "violation_rate_hidden": _rate(by_family["hidden_harmful"], "violation"),
        "benign_refusal_rate": _rate(benign, "refused"),
        "borderline_accuracy": _rate(borderline, "correct"),
        "mean_gold_helpfulness": round(sum(r["gold_helpfulness"] for r in rows) / len(rows), 4) if rows else None,
        "mean_safety_rating": round(sum(r["safety_rating"] for r in rows) / len(rows), 4) if rows else None,
        "n_by_family": {f: len(g) // k for f, g in sorted(by_family.items())},
        "by_category": by_category,
    }


def gold_evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt],
                  cfg: EvalConfig, *, seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Sample, judge and aggregate; returns (gold metrics, judged samples)."""
    prompts = list(prompts)[: cfg.max_prompts] if cfg.max_prompts else list(prompts)
    k = cfg.samples_per_prompt  # the k answers of a prompt share its forward pass; batch_size counts sequences
    groups = sample_k(model, tokenizer, [p.text for p in prompts], k=k, temperature=cfg.temperature, top_p=cfg.top_p,
                      max_new_tokens=cfg.max_new_tokens, batch_size=max(1, cfg.batch_size // k), seed=seed)
    rows = [judge_completion(p, s) | ({"sample": j} if k > 1 else {})
            for p, group in zip(prompts, groups) for j, s in enumerate(group)]
    return gold_metrics(rows, k), rows
