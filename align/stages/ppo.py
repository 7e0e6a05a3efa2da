"""The PPO stage: Llama 2's final stage (section 3.2.3), on top of the best rejection-sampled model.

Parents: the newest policy (the last rs round; it is also the reference the KL is measured against),
the newest helpfulness and safety reward models, the sandbox world (prompts and held-out evaluation) or
``ppo.prompts`` (a data spec), and the SFT round when there is one (KL to SFT). Writes: ``model/`` (the
kept policy; ``adapter/`` too with LoRA), ``metrics.jsonl`` (one line per iteration), ``eval_samples.jsonl``.
Knobs: ``ppo:``, ``combine:``, ``eval:``. The loop is ``align.rl.ppo``; this module wires it:

1. load the policy (LoRA: wrap it; its reference is itself with the adapter disabled), the reference,
   the value model(s) (``critic_init``; Safe RLHF's cost critic from the safety RM, sign flipped);
2. run the loop, checkpointing every ``ppo.checkpoint_every`` iterations in the round's checkpoint
   folder: a killed run resumes from the last checkpoint of the same config and inputs;
3. evaluation points: the held-out prompts' answers scored by the reward models (the RM's view), the
   gold judges (the truth) and KL to the reference, the over-optimisation curve (Gao et al. 2022);
4. keep the last policy or the best by held-out reward, save it, and measure it as rs rounds are.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from align.chat import prompt_ids
from align.config import CampaignConfig, StageSpec
from align.data import load_prompt_source, source_files
from align.errors import AlignError
from align.evaluation.metrics import policy_metrics
from align.evaluation.policy import evaluate_policy, greedy_reward, judge_rows, kl_to_reference, win_rate
from align.evaluation.suites import Suite, sandbox_heldout
from align.generate import sample_k
from align.models import disable_dropout, load_causal_lm, load_tokenizer, save_model, with_lora
from align.preflight import rl_prompt_problems, source_problems
from align.records import Prompt, read_jsonl, write_jsonl
from align.reward.client import RewardModel, RewardModels, score_responses
from align.reward.model import load_reward_model
from align.rl.checkpoint import Checkpoints
from align.rl.config import PPOConfig
from align.rl.critic import ValueModel, check_same_tokens, negate_head
from align.rl.ppo import PPOModels, train_ppo
from align.rl.rollout import Rollout, token_logprobs
from align.sandbox.build import read_prompts
from align.stages import PlanError, Planned, Stage, StageContext, register
from align.store import crash_point, digest


def parents(planned: Planned, cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    world = planned.find("sandbox")
    if world is None and cfg.ppo.prompts is None:
        raise PlanError("needs an earlier sandbox stage or ppo.prompts (a prompt data spec)")
    sft = planned.find("sft")
    return [r for r in (world, sft) if r] + [planned.policy(), planned.latest("rm", "helpfulness"),
                                             planned.latest("rm", "safety")]


def inputs(cfg: CampaignConfig, spec: StageSpec) -> list[Path]:
    return source_files(cfg.ppo.prompts)


def build_critic(init: str, *, policy_dir, rm_dirs: dict[str, Any], tokenizer, model_cfg) -> ValueModel:
    """The value model: a reward model's backbone and head, or the policy with a new zero head."""
    source = policy_dir if init == "policy" else rm_dirs[init]
    classifier, critic_tok = load_reward_model(source, model_cfg)
    check_same_tokens(critic_tok, tokenizer, init)
    if init == "policy":
        with torch.no_grad():
            for p in ValueModel(classifier).head.parameters():
                p.zero_()
    disable_dropout(classifier)
    return ValueModel(classifier)


def heldout_evaluator(suite: Suite, rms: RewardModels, cfg: CampaignConfig, pc: PPOConfig, tokenizer, *, seed: int):
    """An evaluation point: one answer per held-out prompt at the PPO temperature, scored by the reward
    models (``rm_reward``: the rule's mean value), judged by the suite's judge, and its KL to the reference
    (``kl``: mean over answers of the summed per-token ``log pi - log pi_ref``)."""
    prompts = suite.prompts[: pc.eval_prompts]
    combine = cfg.combine

    def evaluate(models: PPOModels, iteration: int) -> dict[str, Any]:
        groups = sample_k(models.policy, tokenizer, [p.text for p in prompts], k=1, temperature=pc.temperature,
                          top_p=1.0, max_new_tokens=pc.max_new_tokens, batch_size=pc.sample_batch_size, seed=seed)
        samples = [g[0] for g in groups]
        scored = score_responses(rms, combine, prompts, [s.text for s in samples])
        rollout = Rollout.build([prompt_ids(tokenizer, p.text) for p in prompts], [s.token_ids for s in samples],
                                tokenizer.pad_token_id)
        with torch.no_grad():
            lp = token_logprobs(models.policy, rollout, pc.temperature)[0]
        kl = float((lp - models.reference_logprobs(rollout, pc.temperature)).sum(1).mean())
        point = {"rm_reward": round(float(scored.combined.mean()), 4), "kl": round(kl, 4),
                 "sqrt_kl": round(math.sqrt(max(kl, 0.0)), 4)}
        if suite.judge is not None:
            rows = judge_rows(prompts, groups, suite.judge)
            gold = policy_metrics(rows, 1, suite.judge.scores)
            point |= {k: gold[k] for k in ("mean_gold_utility", "helpful_accuracy", "violation_rate",
                                           "false_refusal_rate", "well_formed_rate") if k in gold}
        return point

    return evaluate


def fingerprint(ctx: StageContext) -> str:
    """What a checkpoint must match to be resumed: the inputs, the seed and every section the loop reads."""
    cfg = ctx.cfg
    return digest({"inputs": dict(ctx.inputs), "seed": ctx.seed, "ppo": cfg.ppo.model_dump(mode="json"),
                   "combine": cfg.combine.model_dump(mode="json"), "model": cfg.model.model_dump(mode="json"),
                   "eval": cfg.eval.model_dump(mode="json")})


def _prompts(ctx: StageContext) -> list[Prompt]:
    pc = ctx.cfg.ppo
    if pc.prompts is not None:
        return load_prompt_source(pc.prompts, "ppo.prompts")
    world = ctx.parents.sandbox
    prompts = read_prompts(world.path, "rl")
    if not prompts:
        raise AlignError(f"{world.id}: the RL prompt set is empty")
    return prompts


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, pc, p = ctx.cfg, ctx.cfg.ppo, ctx.parents
    start = p.policy
    world = p.find("sandbox")
    # 1. models
    tokenizer = load_tokenizer(start.model)
    policy = load_causal_lm(start.model, cfg.model)
    disable_dropout(policy)
    reference = None
    if pc.lora.enabled:
        policy = with_lora(policy, pc.lora)
    else:
        reference = load_causal_lm(start.model, cfg.model).eval().requires_grad_(False)
    rm_dirs = {axis: p.rm(axis).reward_model for axis in ("helpfulness", "safety")}
    rms = RewardModels(*(RewardModel.load(rm_dirs[axis], getattr(cfg.reward, axis), cfg.model)
                         for axis in ("helpfulness", "safety")))
    critic = cost_critic = None
    if pc.advantage == "gae":
        critic_init = "helpfulness" if pc.algorithm == "ppo_lagrangian" else pc.critic_init
        critic = build_critic(critic_init, policy_dir=start.model, rm_dirs=rm_dirs, tokenizer=tokenizer,
                              model_cfg=cfg.model)
    if pc.algorithm == "ppo_lagrangian":
        cost_critic = build_critic("safety", policy_dir=start.model, rm_dirs=rm_dirs, tokenizer=tokenizer,
                                   model_cfg=cfg.model)
        negate_head(cost_critic.classifier)
    models = PPOModels(policy, reference, critic, cost_critic)

    # 2-3. the loop, with evaluation points and checkpoints
    suite = sandbox_heldout(world.path) if world else None
    evaluate = heldout_evaluator(suite, rms, cfg, pc, tokenizer, seed=ctx.seed) if suite else None
    checkpoints = Checkpoints(ctx.checkpoint_dir, fingerprint(ctx))
    result = train_ppo(models, tokenizer, rms, cfg.combine, _prompts(ctx), pc, seed=ctx.seed, evaluate=evaluate,
                       checkpoints=checkpoints, metrics_path=ctx.out.step_metrics, log=ctx.log,
                       tracking=cfg.tracking, tracking_dir=ctx.tracking_dir,
                       crash=lambda point: crash_point(point, ctx.round_id))

    # 4. keep, save, measure
    save_model(models.policy, tokenizer, ctx.out.model, adapter_dir=ctx.out.adapter)
    out: dict[str, Any] = {"ppo": summary(result, pc), "over_optimisation": result.evals}
    if world is None:
        return out
    kept = load_causal_lm(ctx.out.model, cfg.model)
    gold, eval_rows = evaluate_policy(kept, tokenizer, suite, cfg.eval, seed=ctx.seed)
    write_jsonl(ctx.out.eval_samples, eval_rows)
    eval_prompts = read_prompts(world.path, "eval")[: 256]
    kw = {"max_new_tokens": pc.max_new_tokens, "batch_size": cfg.eval.batch_size}
    sft = p.find("sft")
    before = reference if reference is not None else load_causal_lm(start.model, cfg.model)  # the starting policy
    out |= {"gold": gold,
            "win_rate_vs_parent": win_rate(eval_rows, read_jsonl(start.eval_samples))
            if start.eval_samples.is_file() else None,
            "kl_vs_parent": kl_to_reference(kept, before, tokenizer, [q.text for q in eval_prompts], seed=ctx.seed,
                                            **kw),
            "kl_vs_sft": kl_to_reference(kept, load_causal_lm(sft.model, cfg.model), tokenizer,
                                         [q.text for q in eval_prompts], seed=ctx.seed, **kw) if sft else None,
            "greedy_reward": {"parent": greedy_reward(before, tokenizer, eval_prompts, rms, cfg.combine, **kw),
                              "policy": greedy_reward(kept, tokenizer, eval_prompts, rms, cfg.combine, **kw)}}
    return out


def summary(result, pc: PPOConfig) -> dict[str, Any]:
    """The round's ``metrics.ppo`` record: the run's shape, its first and last iterations, the kept one."""
    h = result.history
    keys = ("reward", "combined", "r_h", "r_s", "kl", "entropy", "clip_fraction", "explained_variance",
            "response_length", "no_eos", "lambda", "cost", "running_cost")
    first, last = h[0], h[-1]
    return {"algorithm": pc.algorithm, "advantage": pc.advantage, "iterations": len(h),
            "rollouts_per_iteration": pc.batch_size * pc.group_size, "beta": pc.beta, "keep": pc.keep,
            "kept_iteration": result.kept_iteration, "resumed_from": result.resumed_from,
            "seconds": result.seconds,
            "first": {k: first[k] for k in keys if k in first}, "last": {k: last[k] for k in keys if k in last},
            **({"lambda_trajectory": [x["lambda"] for x in h]} if pc.algorithm == "ppo_lagrangian" else {})}



def check(cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    """The prompt source (a data spec and file, or the sandbox's RL prompts)."""
    src = cfg.ppo.prompts
    return source_problems(src.spec, src.path, "ppo.prompts", kind="prompts") if src else rl_prompt_problems(cfg, "ppo")


register(Stage(kind="ppo", run=run, parents=parents, inputs=inputs, check=check, policy=True,
               uses_rule=True, sections={"ppo": PPOConfig}, doc=__doc__))
