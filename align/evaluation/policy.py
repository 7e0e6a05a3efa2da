"""Evaluating a policy: sample answers to a suite's prompts, judge them, aggregate; and the
round-over-round measures (gold win rate, KL to a reference, the reward of greedy answers).

``evaluate_policy`` samples ``eval.samples_per_prompt`` answers per prompt (they share the prompt's
forward pass, ``generate.sample_k``), judges each with the suite's judge and returns the metric
record of ``metrics.policy_metrics`` with the judged rows (``eval_samples.jsonl``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TYPE_CHECKING


from align.combine.config import CombineConfig
from align.config import ModelConfig
from align.evaluation.config import EvalConfig
from align.evaluation.judge import Judge, Verdict
from align.evaluation.metrics import policy_metrics
from align.evaluation.suites import Suite
from align.generate import Completion, Sample, sample_completions, sample_k, sequence_logprobs
from align.models import load_causal_lm, load_tokenizer
from align.records import Prompt
from align.reward.client import RewardModels, score_responses

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def judged_row(prompt: Prompt, completion: Completion | Sample, verdict: Verdict) -> dict[str, Any]:
    """One evaluated sample: the prompt, the answer, and the judge's labels and scores."""
    return {"prompt_id": prompt.id, "family": prompt.family, "category": prompt.category,
            "is_safety": prompt.is_safety, "prompt": prompt.text, "response": completion.text,
            "finished": completion.finished, "well_formed": completion.finished and bool(verdict.well_formed),
            "correct": verdict.correct, "refused": verdict.refused, "violation": verdict.violation,
            **verdict.scores}


def judge_rows(prompts: Sequence[Prompt], groups: Sequence[Sequence[Completion | Sample]],
               judge: Judge) -> list[dict[str, Any]]:
    """Judged rows of the answers ``groups[i]`` to ``prompts[i]`` (a ``sample`` index when several)."""
    several = any(len(g) > 1 for g in groups)
    return [judged_row(p, s, judge.judge(p, s.text)) | ({"sample": j} if several else {})
            for p, group in zip(prompts, groups) for j, s in enumerate(group)]


def evaluate_policy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, suite: Suite, cfg: EvalConfig, *,
                    seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Sample, judge and aggregate; returns (metrics, judged rows)."""
    t0 = time.perf_counter()
    prompts = list(suite.prompts)[: cfg.max_prompts] if cfg.max_prompts else list(suite.prompts)
    k = cfg.samples_per_prompt  # the k answers of a prompt share its forward pass; batch_size counts sequences
    groups = sample_k(model, tokenizer, [p.text for p in prompts], k=k, temperature=cfg.temperature, top_p=cfg.top_p,
                      max_new_tokens=cfg.max_new_tokens, batch_size=max(1, cfg.batch_size // k), seed=seed)
    rows = judge_rows(prompts, groups, suite.judge)
    metrics = policy_metrics(rows, k, suite.judge.scores)
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 2)
    return metrics, rows


def evaluate_checkpoint(model_dir: Path, suite: Suite, cfg: EvalConfig, model_cfg: ModelConfig, *,
                        seed: int) -> dict[str, Any]:
    """Evaluate any local checkpoint on a suite; writes nothing."""
    tokenizer = load_tokenizer(model_dir, trust_remote_code=model_cfg.trust_remote_code)
    model = load_causal_lm(model_dir, model_cfg)
    return evaluate_policy(model, tokenizer, suite, cfg, seed=seed)[0]


def win_rate(new_rows: Sequence[dict[str, Any]], old_rows: Sequence[dict[str, Any]], *,
             score: str = "gold_utility") -> float | None:
    """Share of answers whose ``score`` beats the old policy's answer to the same prompt (the same
    sample index where several were drawn per prompt); ties count half."""
    old = {(r["prompt_id"], r.get("sample", 0)): r[score] for r in old_rows if score in r}
    keys = [((r["prompt_id"], r.get("sample", 0)), r[score]) for r in new_rows]
    pairs = [(u, old[key]) for key, u in keys if key in old]
    if not pairs:
        return None
    return round(sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs), 4)


def kl_to_reference(policy: PreTrainedModel, reference: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    prompts: Sequence[str], *, max_new_tokens: int, batch_size: int, seed: int) -> float:
    """Monte-Carlo ``KL(policy || reference)`` per answer: mean of ``sum log pi - log ref`` over
    answers sampled from the policy at temperature 1."""
    samples = [g[0] for g in sample_k(policy, tokenizer, prompts, k=1, temperature=1.0, top_p=1.0,
                                      max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)]
    ref = sequence_logprobs(reference, tokenizer, prompts, [s.token_ids for s in samples], batch_size=batch_size)
    return round(sum(s.logprob - math.fsum(r) for s, r in zip(samples, ref)) / len(samples), 4)


def greedy_reward(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt],
                  rms: RewardModels, combine: CombineConfig, *, max_new_tokens: int, batch_size: int) -> float:
    """Mean rule value of the policy's greedy answers."""
    answers = sample_completions(policy, tokenizer, [p.text for p in prompts], temperature=0.0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, batch_size=batch_size, seed=0)
    return round(float(score_responses(rms, combine, prompts, [a.text for a in answers]).combined.mean()), 4)
