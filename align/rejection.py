"""Rejection-sampling fine-tuning (Llama 2 section 3.2.3, RLHF-V1 to V4).

One round:
1. sample K answers per prompt from the newest policy (``generate.sample_k``);
2. score every sample with both reward models and the combination rule;
3. keep the best per prompt (top-n), and pool it with the best samples of all prior rounds:
   per prompt, the best-scored under the *current* reward models (``pool: all_prior``, the
   paper's fix after RLHF-V3 regressed on samples of the previous round only);
4. fine-tune with the answer-only loss from the newest policy (or the SFT checkpoint).

The round writes ``samples.jsonl`` (every sample, its scores, whether it was the best of its
prompt in this round and whether it was kept for training), the fine-tuned ``model/``, and
metrics: the best-of-K reward curve (the paper's Figure 7), gold metrics on held-out prompts,
the gold win rate against the parent policy, reward by category, KL to the SFT policy.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from align.chat import answer_ids
from align.combine import combine_rewards, gate_branch, resolve_rule
from align.combine.transform import logit, post_transform
from align.config import CombineConfig, ModelConfig, RejectionConfig
from align.errors import AlignError
from align.generate import sample_completions, sample_k, sequence_logprobs
from align.records import Prompt
from align.reward.train import load_reward_model, score


@dataclass
class RewardModels:
    """The helpfulness and safety reward models, each with its own tokenizer: responses are scored
    from their text, so a reward model need not share the policy's tokenizer."""

    helpfulness: tuple[PreTrainedModel, PreTrainedTokenizerBase]
    safety: tuple[PreTrainedModel, PreTrainedTokenizerBase]
    max_seq_len: tuple[int, int] = (128, 128)
    batch_size: int = 128

    @classmethod
    def load(cls, helpfulness_dir: Path, safety_dir: Path, model_cfg: ModelConfig | None = None, *,
             max_seq_len: tuple[int, int] = (128, 128)) -> RewardModels:
        return cls(load_reward_model(helpfulness_dir, model_cfg), load_reward_model(safety_dir, model_cfg),
                   max_seq_len)

    def probabilities(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(R_h, R_s)``: the sigmoid of each model's score, one entry per (prompt, response)."""
        out = []
        for (model, tok), max_len in zip((self.helpfulness, self.safety), self.max_seq_len):
            raw = score(model, tok, prompts, responses, max_seq_len=max_len, batch_size=self.batch_size)
            out.append(torch.sigmoid(torch.as_tensor(raw, dtype=torch.float64)))
        return out[0], out[1]


@dataclass(frozen=True)
class Scored:
    """Scores of a batch of (prompt, response): both models, the rule's value, the transformed reward."""

    r_h: torch.Tensor
    r_s: torch.Tensor
    combined: torch.Tensor  # the rule's value, on the probability scale
    reward: torch.Tensor  # whiten(logit(combined)) when configured, else combined
    branch: list[str] | None  # the gate's branch per entry (llama2_gate only)


def distinct(keys: Sequence[Any]) -> tuple[list[int], list[int]]:
    """``(first, where)``: the index of each distinct key's first occurrence, and for every key the
    position of its key in ``first`` (the K samples of a sharp policy repeat: each is scored once)."""
    seen: dict[Any, int] = {}
    first, where = [], []
    for i, key in enumerate(keys):
        if key not in seen:
            seen[key] = len(first)
            first.append(i)
        where.append(seen[key])
    return first, where


def score_responses(rms: RewardModels, combine: CombineConfig, prompts: Sequence[Prompt],
                    responses: Sequence[str]) -> Scored:
    first, where = distinct([(p.text, r) for p, r in zip(prompts, responses)])
    r_h, r_s = rms.probabilities([prompts[i].text for i in first], [responses[i] for i in first])
    r_h, r_s = r_h[where], r_s[where]
    tags = torch.tensor([p.is_safety for p in prompts], dtype=torch.bool)
    combined = combine_rewards(resolve_rule(combine.rule, combine.params), r_h, r_s, tags, whiten_logit=False).double()
    reward = post_transform(combined, whiten_logit=combine.whiten_logit, eps=combine.logit_eps)
    branch = gate_branch(r_s, tags, combine.params.get("threshold", 0.15)) if combine.rule == "llama2_gate" else None
    return Scored(r_h, r_s, combined, reward, branch)


def best_of_k_curve(combined: torch.Tensor) -> dict[str, float]:
    """Mean over prompts of the best reward among the first k samples, k = 1, 2, 4, ..., K
    (``combined`` is ``(prompts, K)``): the paper's Figure 7."""
    k_max = combined.shape[1]
    ks = sorted({2**i for i in range(int(math.log2(k_max)) + 1)} | {k_max})
    return {str(k): round(float(combined[:, :k].max(dim=1).values.mean()), 4) for k in ks}


def top_n(values: Sequence[float], n: int) -> list[int]:
    """Indices of the ``n`` largest values, best first (ties: the earlier one)."""
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[:n]


def pool_best(current: dict[str, list[tuple[str, float]]], prior: dict[str, list[tuple[str, float]]],
              keep: int) -> dict[str, list[tuple[str, float, str]]]:
    """Per prompt, the ``keep`` best candidates of this round and prior rounds under the current scores.

    ``current`` / ``prior`` map a prompt id to ``(response, score)`` candidates; the result tags
    each kept one with its source (``current`` or ``prior``). A response found in both counts once.
    """
    out: dict[str, list[tuple[str, float, str]]] = {}
    for pid in sorted(set(current) | set(prior)):
        seen: dict[str, tuple[str, float, str]] = {}
        for source, cands in (("current", current.get(pid, [])), ("prior", prior.get(pid, []))):
            for text, value in cands:
                seen.setdefault(text, (text, value, source))
        cands = list(seen.values())
        out[pid] = [cands[i] for i in top_n([c[1] for c in cands], keep)]
    return out


def sample_and_score(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt],
                     rms: RewardModels, combine: CombineConfig, cfg: RejectionConfig, *, temperature: float,
                     seed: int) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """K samples per prompt with their scores: rows for ``samples.jsonl`` and the ``(N, K)`` rule values."""
    samples = sample_k(policy, tokenizer, [p.text for p in prompts], k=cfg.k, temperature=temperature,
                       top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.sample_batch_size,
                       seed=seed, max_prompt_tokens=cfg.max_prompt_tokens,
                       long_prompts=cfg.long_prompts)
    flat = [(p, s) for p, group in zip(prompts, samples) for s in group]
    scored = score_responses(rms, combine, [p for p, _ in flat], [s.text for _, s in flat])
    rows = []
    for i, (p, s) in enumerate(flat):
        rows.append({"prompt_id": p.id, "prompt": p.text, "family": p.family, "category": p.category, "is_safety": p.is_safety,
                     "sample": i % cfg.k, "response": s.text, "finished": s.finished,
                     "num_tokens": len(s.token_ids), "logprob": round(s.logprob, 4),
                     # full precision: a saturated sigmoid still ranks (rounding would tie them)
                     "r_h": float(scored.r_h[i]), "r_s": float(scored.r_s[i]),
                     "combined": float(scored.combined[i]), "reward": float(scored.reward[i]),
                     **({"branch": scored.branch[i]} if scored.branch else {})})
    return rows, scored.combined.view(len(prompts), cfg.k)


def choose_temperature(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt],
                       rms: RewardModels, combine: CombineConfig, cfg: RejectionConfig, *,
                       seed: int) -> tuple[float, dict[str, float]]:
    """The grid temperature with the highest expected best-of-K reward on ``prompts`` (the paper
    found the best temperature drifts upward across rounds), and the value of each."""
    curve = {}
    for t in cfg.temperature_grid:
        _, combined = sample_and_score(policy, tokenizer, prompts, rms, combine, cfg, temperature=t, seed=seed)
        curve[f"{t:g}"] = round(float(combined.max(dim=1).values.mean()), 4)
    best = max(cfg.temperature_grid, key=lambda t: (curve[f"{t:g}"], -t))
    return best, curve


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


def gold_win_rate(new_rows: Sequence[dict[str, Any]], old_rows: Sequence[dict[str, Any]]) -> float | None:
    """Share of held-out answers whose gold utility beats the old policy's answer to the same prompt
    (the same sample index where several were drawn per prompt); ties count half."""
    old = {(r["prompt_id"], r.get("sample", 0)): r["gold_utility"] for r in old_rows if "gold_utility" in r}
    keys = [((r["prompt_id"], r.get("sample", 0)), r["gold_utility"]) for r in new_rows]
    pairs = [(u, old[key]) for key, u in keys if key in old]
    if not pairs:
        return None
    return round(sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs), 4)


def reward_by_category(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        groups[f"{r['family']}/{r['category']}"].append(r["combined"])
    return {k: round(sum(v) / len(v), 4) for k, v in sorted(groups.items())}


def reference_logprobs(reference: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                       responses: Sequence[str], *, batch_size: int = 64) -> list[float]:
    """``log pi_ref(y | x)`` of each response (its tokens and EOS, by teacher forcing from the text)."""
    first, where = distinct(list(zip(prompts, responses)))
    answers = [answer_ids(tokenizer, responses[i]) for i in first]
    logprobs = sequence_logprobs(reference, tokenizer, [prompts[i] for i in first], answers, batch_size=batch_size)
    return [math.fsum(logprobs[j]) for j in where]


def reward_scale(combined: torch.Tensor, combine: CombineConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map from a rule value to this round's reward: ``whiten(logit(.))`` with the mean and std of
    ``combined`` (the round's samples), so prior rounds' candidates land on the same scale."""
    if not combine.whiten_logit:
        return lambda c: c
    z = logit(combined, combine.logit_eps)
    mean, std = z.mean(), torch.sqrt(z.var(unbiased=False) + 1e-8)
    return lambda c: (logit(c, combine.logit_eps) - mean) / std


def selection_value(reward: torch.Tensor, ref_logprob: torch.Tensor | None, kl_coef: float) -> torch.Tensor:
    """What best-of-K keeps the argmax of: the reward, plus ``kl_coef * log pi_ref(y | x)`` when
    regularized (RBoN-KL, Jinnai et al. 2024: ``R(x, y) - beta * KL(1_y || pi_ref)``), which keeps
    selection near the reference policy where the reward model is unreliable."""
    if not kl_coef:
        return reward
    if ref_logprob is None:
        raise AlignError("a regularized selection (kl_coef > 0) needs the reference log-probabilities")
    return reward + kl_coef * ref_logprob


RefLogprobs = Callable[[Sequence[Prompt], Sequence[str]], list[float]]


def select_training_set(rows: list[dict[str, Any]], prior_rows: Sequence[dict[str, Any]], prompts: dict[str, Prompt],
                        rms: RewardModels, combine: CombineConfig, cfg: RejectionConfig,
                        ref_logprobs: RefLogprobs | None = None) -> list[tuple[str, str]]:
    """Mark this round's best per prompt (``best_in_round``), rescore prior rounds' best under the
    current reward models, pool, mark ``kept``; returns the (prompt, response) training pairs.

    Candidates compete on ``selection`` (``selection_value``): the reward on this round's scale, plus
    the reference term when ``cfg.kl_coef > 0`` (``ref_logprobs`` gives ``log pi_ref`` per answer)."""
    scale = reward_scale(torch.tensor([r["combined"] for r in rows], dtype=torch.float64), combine)

    def values(cands: Sequence[dict[str, Any]], combined: Sequence[float]) -> list[float]:
        ref = None
        if cfg.kl_coef:
            if ref_logprobs is None:
                raise AlignError("rs.kl_coef > 0 needs the reference policy's log-probabilities")
            ref = torch.tensor(ref_logprobs([prompts[r["prompt_id"]] for r in cands], [r["response"] for r in cands]),
                               dtype=torch.float64)
            for r, lp in zip(cands, ref.tolist()):
                r["ref_logprob"] = round(lp, 4)
        return selection_value(scale(torch.tensor(combined, dtype=torch.float64)), ref, cfg.kl_coef).tolist()

    for r, v in zip(rows, values(rows, [r["combined"] for r in rows])):
        r["selection"] = v
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_prompt[r["prompt_id"]].append(i)
    for idx in by_prompt.values():
        best = set(top_n([rows[i]["selection"] for i in idx], cfg.keep))
        for j, i in enumerate(idx):
            rows[i]["best_in_round"] = j in best
            rows[i]["kept"] = False
    current = {pid: [(rows[i]["response"], rows[i]["selection"]) for i in idx if rows[i]["best_in_round"]]
               for pid, idx in by_prompt.items()}
    prior: dict[str, list[tuple[str, float]]] = {}
    usable = [dict(r) for r in prior_rows if r["prompt_id"] in prompts]
    if usable:
        rescored = score_responses(rms, combine, [prompts[r["prompt_id"]] for r in usable],
                                   [r["response"] for r in usable]).combined.tolist()
        for r, value in zip(usable, values(usable, rescored)):
            prior.setdefault(r["prompt_id"], []).append((r["response"], value))
    pooled = pool_best(current, prior, cfg.keep)
    kept_current = {(pid, text) for pid, cands in pooled.items() for text, _, src in cands if src == "current"}
    for r in rows:
        r["kept"] = (r["prompt_id"], r["response"]) in kept_current and r["best_in_round"]
    return [(prompts[pid].text, text) for pid, cands in pooled.items() for text, _, _ in cands]


def round_summary(rows: Sequence[dict[str, Any]], curve: dict[str, float], training: int, cfg: RejectionConfig,
                  temperature: float) -> dict[str, Any]:
    kept = [r for r in rows if r["kept"]]
    if not rows:
        raise AlignError("the round sampled nothing")
    out = {"prompts": len({r["prompt_id"] for r in rows}), "samples": len(rows), "k": cfg.k,
           "temperature": temperature, "pool": cfg.pool, "kl_coef": cfg.kl_coef, "training_examples": training,
           "kept_from_this_round": len(kept), "kept_from_prior_rounds": training - len(kept),
           "mean_reward_sampled": round(sum(r["combined"] for r in rows) / len(rows), 4),
           "mean_reward_best": round(sum(r["combined"] for r in rows if r["best_in_round"])
                                     / max(1, sum(r["best_in_round"] for r in rows)), 4),
           "best_of_k": curve, "reward_by_category": reward_by_category([r for r in rows if r["best_in_round"]])}
    if rows and "branch" in rows[0]:
        out["gate_branches"] = dict(Counter(r["branch"] for r in rows))
    return out
