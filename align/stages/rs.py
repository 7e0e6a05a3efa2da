"""The rejection-sampling stage: one round of Llama 2's rejection-sampling fine-tuning (section 3.2.3,
RLHF-V1 to V4).

Parents: the sandbox world (RL and held-out prompts) or ``rs.prompts`` (a prompt data spec, for a real
model), the SFT round, the newest helpfulness and safety reward models, and the earlier rs rounds
(``pool: all_prior``; ``previous_only``: the last).
Writes: ``samples.jsonl`` (every sample, its scores, ``best_in_round`` and ``kept``), the fine-tuned
``model/``, ``metrics.jsonl``, ``eval_samples.jsonl``. Knobs: ``rs:``, ``combine:``, ``eval:``.

1. sample K answers per prompt from the newest policy (the prompt's forward pass shared);
2. score every sample with both reward models and the combination rule;
3. keep the best per prompt (top ``keep``; with ``kl_coef`` the argmax of reward + ``kl_coef`` x
   log pi_SFT, regularized best-of-K), and pool it with the best of all prior rounds: per prompt, the
   best under the *current* reward models (the paper's fix after RLHF-V3 regressed);
4. fine-tune with the answer-only loss from the newest policy (or the SFT checkpoint);
5. measure: gold metrics on held-out prompts (the sandbox), gold win rate against the parent policy, KL to the SFT
   policy, the rule's value of greedy answers before and after, the best-of-K curve (Figure 7).
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TYPE_CHECKING

import torch
from pydantic import Field, field_validator

from align.combine.config import CombineConfig
from align.combine.transform import logit
from align.config import CampaignConfig, SamplingConfig, StageSpec
from align.errors import AlignError
from align.evaluation.policy import evaluate_policy, greedy_reward, kl_to_reference, win_rate
from align.evaluation.suites import sandbox_heldout
from align.generate import reference_logprobs, sample_k
from align.data import PromptSource, load_prompt_source, source_files
from align.models import load_causal_lm, load_tokenizer, save_model
from align.preflight import rl_prompt_problems, source_problems
from align.records import Prompt, read_jsonl, write_jsonl
from align.reward.client import RewardModel, RewardModels, score_responses
from align.sandbox.build import read_prompts
from align.sft import FinetuneConfig, finetune
from align.stages import Planned, PlanError, Stage, StageContext, register

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class RSFinetuneConfig(FinetuneConfig):
    """Fine-tuning on the kept samples of a rejection-sampling round."""

    epochs: float = Field(2.0, gt=0, description="passes over the kept samples")
    lr: float = Field(1e-3, gt=0, description="below SFT's: the policy is already trained")


class RejectionConfig(SamplingConfig):
    """Rejection-sampling fine-tuning rounds (Llama 2 section 3.2.3, RLHF-V1..V4): sample K answers
    per prompt from the newest policy, score them with the combination rule, keep the best, pool
    with the best of prior rounds, fine-tune."""

    k: int = Field(4, ge=1, description="samples per prompt (the paper: up to 10 per prompt at 70B)")
    temperature: float | Literal["auto"] = Field(1.0, description="sampling temperature of the K samples, or "
                                                   "'auto': the grid value with the best expected best-of-K reward")
    temperature_grid: list[float] = Field(default_factory=lambda: [0.6, 0.8, 1.0, 1.2, 1.4], min_length=1,
                                          description="'auto': the temperatures tried")
    temperature_prompts: int = Field(64, ge=1, description="'auto': prompts of the subset the grid is tried on")
    prompts_per_round: int | None = Field(None, ge=1, description="RL prompts sampled per round; None: all")
    sample_batch_size: int = Field(64, ge=1, description="prompts per generation batch (x k sequences)")
    max_prompt_tokens: int | None = Field(None, ge=1, description="prompt length limit in tokens; None: none")
    long_prompts: Literal["error", "truncate"] = Field("error", description="a prompt over the limit: an error "
                                                                            "naming it, or keep its last tokens")
    keep: int = Field(1, ge=1, description="samples kept per prompt (top-n by combined reward)")
    kl_coef: float = Field(0.0, ge=0, description=(
        "regularized best-of-K (RBoN-KL, Jinnai et al. 2024): keep the argmax of reward + kl_coef * log pi_SFT(y|x) "
        "instead of the reward alone (0: the paper's plain best-of-K). Counters reward hacking where the reward "
        "model cannot tell right answers from wrong ones the SFT policy finds unlikely"))
    pool: Literal["all_prior", "previous_only"] = Field(
        "all_prior", description="all_prior: per prompt, the best of this and all prior rounds under the current "
                                 "reward models (the paper's fix); previous_only: this round's samples only")
    init: Literal["previous", "sft"] = Field("previous", description="fine-tune the newest policy, or restart "
                                                                      "from the SFT checkpoint")
    kl_prompts: int = Field(256, ge=1, description="held-out prompts for the KL(policy || SFT) estimate")
    train: RSFinetuneConfig = Field(default_factory=RSFinetuneConfig, description="the fine-tune on the kept samples")
    prompts: PromptSource | None = Field(None, description="prompts from a data spec (a real model's campaign); "
                                                           "None: the sandbox world's RL prompts")

    @field_validator("temperature")
    @classmethod
    def _positive(cls, v: float | str) -> float | str:
        if v != "auto" and v <= 0:  # type: ignore[operator]
            raise ValueError("temperature must be positive (or 'auto')")
        return v

    @field_validator("temperature_grid")
    @classmethod
    def _grid_positive(cls, v: list[float]) -> list[float]:
        if any(t <= 0 for t in v):
            raise ValueError(f"every temperature of the grid must be positive, got {v}")
        return v


# ------------------------------------------------------------------------------- formulas ---
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


# ---------------------------------------------------------------------------------- steps ---
def sample_and_score(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt],
                     rms: RewardModels, combine: CombineConfig, cfg: RejectionConfig, *, temperature: float,
                     seed: int) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Steps 1-2: K samples per prompt with their scores: rows for ``samples.jsonl`` and the ``(N, K)``
    rule values."""
    samples = sample_k(policy, tokenizer, [p.text for p in prompts], k=cfg.k, temperature=temperature,
                       top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.sample_batch_size,
                       seed=seed, max_prompt_tokens=cfg.max_prompt_tokens, long_prompts=cfg.long_prompts)
    flat = [(p, s) for p, group in zip(prompts, samples) for s in group]
    scored = score_responses(rms, combine, [p for p, _ in flat], [s.text for _, s in flat])
    rows = []
    for i, (p, s) in enumerate(flat):
        rows.append({"prompt_id": p.id, "prompt": p.text, "family": p.family, "category": p.category,
                     "is_safety": p.is_safety, "sample": i % cfg.k, "response": s.text, "finished": s.finished,
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


RefLogprobs = Callable[[Sequence[Prompt], Sequence[str]], list[float]]


def select_training_set(rows: list[dict[str, Any]], prior_rows: Sequence[dict[str, Any]], prompts: dict[str, Prompt],
                        rms: RewardModels, combine: CombineConfig, cfg: RejectionConfig,
                        ref_logprobs: RefLogprobs | None = None) -> list[tuple[str, str]]:
    """Step 3: mark this round's best per prompt (``best_in_round``), rescore prior rounds' best under the
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
    """The round's ``metrics.rs`` record: what was sampled, kept and pooled, and the rewards."""
    if not rows:
        raise AlignError("the round sampled nothing")
    kept = [r for r in rows if r["kept"]]
    best = [r for r in rows if r["best_in_round"]]
    by_category: dict[str, list[float]] = defaultdict(list)
    for r in best:
        by_category[f"{r['family']}/{r['category']}"].append(r["combined"])
    out = {"prompts": len({r["prompt_id"] for r in rows}), "samples": len(rows), "k": cfg.k,
           "temperature": temperature, "pool": cfg.pool, "kl_coef": cfg.kl_coef, "training_examples": training,
           "kept_from_this_round": len(kept), "kept_from_prior_rounds": training - len(kept),
           "mean_reward_sampled": round(sum(r["combined"] for r in rows) / len(rows), 4),
           "mean_reward_best": round(sum(r["combined"] for r in best) / max(1, len(best)), 4),
           "best_of_k": curve, "reward_by_category": {k: round(sum(v) / len(v), 4)
                                                      for k, v in sorted(by_category.items())}}
    if "branch" in rows[0]:
        out["gate_branches"] = dict(Counter(r["branch"] for r in rows))
    return out


# ---------------------------------------------------------------------------------- stage ---
def parents(planned: Planned, cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    prior = planned.all("rs") if cfg.rs.pool == "all_prior" else planned.all("rs")[-1:]
    world = planned.find("sandbox")
    if world is None and cfg.rs.prompts is None:
        raise PlanError("needs an earlier sandbox stage or rs.prompts (a prompt data spec)")
    return [r for r in (world,) if r] + [planned.latest("sft"), planned.latest("rm", "helpfulness"),
                                         planned.latest("rm", "safety"), *prior]


def inputs(cfg: CampaignConfig, spec: StageSpec) -> list[Path]:
    return source_files(cfg.rs.prompts)


def _prompts(ctx: StageContext) -> tuple[list[Prompt], list[Prompt]]:
    """The RL prompts to sample from, and those the KL and greedy-reward measures read: the sandbox's RL and
    held-out prompts, or the data spec's prompts and a seeded sample of them."""
    rc = ctx.cfg.rs
    if rc.prompts is not None:
        prompts = load_prompt_source(rc.prompts, "rs.prompts")
        return prompts, random.Random(f"rs-kl:{ctx.seed}").sample(prompts, min(rc.kl_prompts, len(prompts)))
    world = ctx.parents.sandbox
    prompts = read_prompts(world.path, "rl")
    if not prompts:
        raise AlignError(f"{world.id}: the RL prompt set is empty")
    return prompts, read_prompts(world.path, "eval")[: rc.kl_prompts]


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, rcfg, p = ctx.cfg, ctx.cfg.rs, ctx.parents
    world, sft, prior = p.find("sandbox"), p.sft, p.prior("rs")
    parent = prior[-1] if prior else sft  # the newest policy
    tokenizer = load_tokenizer(parent.model)
    policy = load_causal_lm(parent.model, cfg.model)
    rms = RewardModels(*(RewardModel.load(p.rm(axis).reward_model, getattr(cfg.reward, axis), cfg.model)
                         for axis in ("helpfulness", "safety")))
    all_prompts, eval_prompts = _prompts(ctx)
    prompts = all_prompts
    if rcfg.prompts_per_round and rcfg.prompts_per_round < len(all_prompts):
        prompts = random.Random(f"rs-prompts:{ctx.seed}:{ctx.round_id}").sample(all_prompts, rcfg.prompts_per_round)

    # 1-2. sample K and score (at the configured temperature, or the grid's best)
    t0 = time.perf_counter()
    temperature, temperature_curve = rcfg.temperature, None
    if temperature == "auto":
        subset = random.Random(f"rs-temperature:{ctx.seed}").sample(prompts, min(rcfg.temperature_prompts,
                                                                                   len(prompts)))
        temperature, temperature_curve = choose_temperature(policy, tokenizer, subset, rms, cfg.combine, rcfg,
                                                            seed=ctx.seed)
        ctx.log(f"  rs: temperature {temperature} (expected best-of-{rcfg.k} reward by temperature: "
                f"{temperature_curve})")
    rows, combined = sample_and_score(policy, tokenizer, prompts, rms, cfg.combine, rcfg,
                                      temperature=float(temperature), seed=ctx.seed)
    sample_s = time.perf_counter() - t0

    # 3. keep the best, pooled with prior rounds' best (regularized by the SFT policy's log-likelihood)
    prior_rows = ([r for d in prior for r in read_jsonl(d.samples) if r["best_in_round"]]
                  if rcfg.pool == "all_prior" else [])
    ref_logprobs = None
    if rcfg.kl_coef:
        sft_policy = policy if parent is sft else load_causal_lm(sft.model, cfg.model)

        def ref_logprobs(ps: list[Prompt], texts: list[str]) -> list[float]:
            return reference_logprobs(sft_policy, tokenizer, [q.text for q in ps], texts,
                                      batch_size=cfg.eval.batch_size)
    pairs = select_training_set(rows, prior_rows, {q.id: q for q in all_prompts}, rms, cfg.combine, rcfg,
                                ref_logprobs)
    write_jsonl(ctx.out.samples, rows)
    summary = round_summary(rows, best_of_k_curve(combined), len(pairs), rcfg, float(temperature))
    if temperature_curve:
        summary["temperature_search"] = temperature_curve
    ctx.log(f"  rs: {summary['samples']} samples on {summary['prompts']} prompts in {sample_s:.1f}s; best-of-K "
            f"{summary['best_of_k']}; training on {len(pairs)} ({summary['kept_from_prior_rounds']} from prior rounds)")

    # 4. fine-tune on the kept samples
    if rcfg.init == "sft":
        policy = load_causal_lm(sft.model, cfg.model)
    result = finetune(policy, tokenizer, pairs, rcfg.train, seed=ctx.seed, metrics_path=ctx.out.step_metrics,
                      tracking=cfg.tracking, tracking_dir=ctx.tracking_dir)
    save_model(policy, tokenizer, ctx.out.model, adapter_dir=ctx.out.adapter)

    # 5. measure
    policy = load_causal_lm(ctx.out.model, cfg.model)
    gold, eval_rows = None, []
    if world is not None:  # the gold judges exist in the sandbox only (a real model: align eval's suites)
        gold, eval_rows = evaluate_policy(policy, tokenizer, sandbox_heldout(world.path), cfg.eval, seed=ctx.seed)
        write_jsonl(ctx.out.eval_samples, eval_rows)
    reference = load_causal_lm(sft.model, cfg.model)
    before = load_causal_lm(parent.model, cfg.model)
    kw = {"max_new_tokens": rcfg.max_new_tokens, "batch_size": cfg.eval.batch_size}
    return {**({"gold": gold} if gold else {}), "rs": summary,
            "win_rate_vs_parent": win_rate(eval_rows, read_jsonl(parent.eval_samples))
            if eval_rows and parent.eval_samples.is_file() else None,
            "kl_vs_sft": kl_to_reference(policy, reference, tokenizer, [q.text for q in eval_prompts],
                                         seed=ctx.seed, **kw),
            "greedy_reward": {"parent": greedy_reward(before, tokenizer, eval_prompts, rms, cfg.combine, **kw),
                              "policy": greedy_reward(policy, tokenizer, eval_prompts, rms, cfg.combine, **kw)},
            "train": {k: v for k, v in result.summary().items() if k in ("steps", "first_loss", "final_loss",
                                                                          "train_seconds", "examples")},
            "sample_seconds": round(sample_s, 2)}



def check(cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    """The prompt source (a data spec and file, or the sandbox's RL prompts)."""
    src = cfg.rs.prompts
    return source_problems(src.spec, src.path, "rs.prompts", kind="prompts") if src else rl_prompt_problems(cfg, "rs")


register(Stage(kind="rs", run=run, parents=parents, inputs=inputs, check=check, policy=True, uses_rule=True,
               sections={"rs": RejectionConfig}, doc=__doc__))
