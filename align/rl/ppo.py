"""The PPO loop (Llama 2 section 3.2.3), read top to bottom like CleanRL's ``ppo.py``.

Per iteration:

1. rollout: a batch of prompts, ``group_size`` answers each, sampled at ``temperature`` (top-p off);
2. score: both reward models and the combination rule give ``whiten(logit(R_c))`` per answer (an answer
   with no EOS gets ``no_eos_score``); Safe RLHF instead takes the helpfulness RM's score as reward and
   ``-logit(R_s)`` as cost;
3. log-probabilities of the sampled tokens under the policy and the reference (the starting policy, or
   the LoRA policy with its adapter disabled), both from logits divided by the temperature, and the values;
4. per-token rewards: ``-beta * KL`` on every token plus the sequence score on the last real token;
   advantages by GAE (gamma, lambda), whitened; RLOO and group norm use a baseline from the other answers
   to the same prompt instead of a critic; Safe RLHF: ``(A_r - lambda A_c) / (1 + lambda)``, lambda stepped
   from the running mean episode cost;
5. ``epochs`` passes over shuffled minibatches: the clipped policy loss, the clipped value loss(es), one
   optimiser step each (``training.Learner``: AdamW, gradient clip);
6. log the iteration; every ``eval_every`` iterations an evaluation point (held-out RM reward, gold
   metrics, KL); every ``checkpoint_every`` a checkpoint to resume from.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from align import distributed
from align.chat import prompt_ids
from align.combine.config import CombineConfig
from align.combine.transform import logit
from align.config import TrackingConfig, TrainingConfig
from align.errors import AlignError
from align.generate import sample_k
from align.progress import bar
from align.records import Prompt
from align.reward.client import score_responses
from align.rl.advantages import (
    gae,
    group_norm_advantages,
    masked_mean,
    masked_var,
    masked_whiten,
    rloo_advantages,
)
from align.rl.checkpoint import Checkpoints
from align.rl.config import PPOConfig
from align.rl.critic import values
from align.rl.lagrangian import actor_advantage, lagrange_step
from align.rl.losses import kl_penalty, policy_loss, value_loss
from align.rl.rollout import Rollout, sequence_reward, token_logprobs
from align.training import Learner, StepLog, make_accelerator


class NonFiniteError(AlignError):
    """A reward, cost or loss that is NaN or infinite: the run stops, its last checkpoint stays."""


@dataclass
class PPOModels:
    """The models PPO trains and reads: the policy, its reference (None: the LoRA policy with its adapter
    disabled, so the base weights are held once), the value model and Safe RLHF's cost value model."""

    policy: torch.nn.Module
    reference: torch.nn.Module | None
    critic: torch.nn.Module | None
    cost_critic: torch.nn.Module | None = None

    @torch.no_grad()
    def reference_logprobs(self, rollout: Rollout, temperature: float) -> torch.Tensor:
        if self.reference is None:
            with self.policy.disable_adapter():  # a peft model
                return token_logprobs(self.policy, rollout, temperature)[0]
        return token_logprobs(self.reference, rollout, temperature)[0]


Evaluate = Callable[[PPOModels, int], dict[str, Any]]


@dataclass
class PPOResult:
    """What a PPO run reports: every iteration's line, the evaluation points, which one was kept."""

    history: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    kept_iteration: int
    resumed_from: int | None
    seconds: float


def prompt_batch(prompts: Sequence[Prompt], size: int, seed: int, iteration: int) -> list[Prompt]:
    """Iteration ``iteration``'s prompts: consecutive slices of a per-epoch shuffle (every prompt once an
    epoch), a function of (seed, iteration) alone so a resumed run draws the same ones."""
    n = len(prompts)
    out = []
    for j in range(iteration * size, (iteration + 1) * size):
        epoch, pos = divmod(j, n)
        order = list(range(n))
        random.Random(f"ppo-prompts:{seed}:{epoch}").shuffle(order)
        out.append(prompts[order[pos]])
    return out


def explained_variance(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    var = masked_var(target, mask)
    return float(1 - masked_var(target - pred, mask) / var) if var > 0 else float("nan")


def _stop(problem: str, iteration: int, checkpoints: Checkpoints | None) -> NonFiniteError:
    last = checkpoints.latest() if checkpoints else None
    kept = f"; the last checkpoint ({last.path}) is kept: fix the cause and rerun to resume from it" if last \
        else "; no checkpoint was written yet"
    return NonFiniteError(f"ppo iteration {iteration}: {problem}{kept}")


def _check_finite(name: str, x: torch.Tensor, iteration: int, checkpoints: Checkpoints | None) -> None:
    if not torch.isfinite(x).all():
        raise _stop(f"{name} holds NaN or infinite values", iteration, checkpoints)


def padded(rows: Sequence[Sequence[float]], mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` float tensor of the per-token ``rows``, right-padded with zeros to ``mask``'s width."""
    out = torch.zeros_like(mask)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row, dtype=out.dtype)
    return out * mask


def _learner(model: torch.nn.Module, lr: float, cfg: PPOConfig, accelerator: Accelerator, steps: int) -> Learner:
    # a constant rate (the paper's PPO has no schedule)
    tcfg = TrainingConfig(lr=lr, weight_decay=cfg.weight_decay, min_lr_ratio=1.0, grad_clip=cfg.grad_clip,
                          warmup_ratio=0.0, activation_checkpointing=cfg.activation_checkpointing)
    return Learner.prepare(model, tcfg, total_steps=steps, warmup_steps=0, accelerator=accelerator, eps=cfg.adam_eps)


def train_ppo(models: PPOModels, tokenizer: Any, rms: Any, combine: CombineConfig, prompts: Sequence[Prompt],
              cfg: PPOConfig, *, seed: int, evaluate: Evaluate | None = None, checkpoints: Checkpoints | None = None,
              metrics_path: Path | None = None, log: Callable[[str], None] = print,
              tracking: TrackingConfig | None = None, tracking_dir: Path | None = None,
              crash: Callable[[str], None] = lambda point: None) -> PPOResult:
    """Train ``models.policy`` (and the critics) in place; returns the run's record. ``rms`` scores text
    (``reward.client.RewardModels``); ``evaluate(models, iteration)`` measures an evaluation point."""
    if not prompts:
        raise AlignError("ppo: the prompt set is empty")
    started = time.perf_counter()
    lagrangian = cfg.algorithm == "ppo_lagrangian"
    if cfg.advantage == "gae" and models.critic is None:
        raise AlignError("ppo.advantage: gae needs a value model")
    if lagrangian and models.cost_critic is None:
        raise AlignError("ppo.algorithm: ppo_lagrangian needs a cost value model")
    n_rollouts = cfg.batch_size * cfg.group_size
    steps_per_iteration = cfg.epochs * math.ceil(n_rollouts / cfg.minibatch_size)
    total = cfg.iterations * steps_per_iteration
    accelerator = make_accelerator(tracking, tracking_dir)
    learners = {"policy": _learner(models.policy, cfg.lr, cfg, accelerator, total)}
    if cfg.advantage == "gae":
        learners["critic"] = _learner(models.critic, cfg.critic_lr, cfg, accelerator, total)
    if lagrangian:
        learners["cost_critic"] = _learner(models.cost_critic, cfg.critic_lr, cfg, accelerator, total)
    nets = {name: learner.model for name, learner in learners.items()}

    # -- resume --------------------------------------------------------------------------------
    history: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    log_lambda = math.log(cfg.lambda_init)
    costs: deque[float] = deque(maxlen=cfg.lambda_window)
    best: dict[str, Any] = {"iteration": 0, "reward": -math.inf}
    best_state: dict[str, torch.Tensor] | None = None
    start, resumed = 0, None
    last = checkpoints.latest() if checkpoints else None
    if last is not None:
        for name, learner in learners.items():
            net = accelerator.unwrap_model(learner.model)
            last.load_model(name, net)
            last.load_optimizer(name, learner.optimizer, learner.scheduler, model=net)
        s = last.state
        history, evals, log_lambda, best = s["history"], s["evals"], s["log_lambda"], s["best"]
        costs.extend(s["costs"])
        best_state = last.tensors("best_policy")
        start = resumed = last.iteration
        log(f"  ppo: resumed from {last.path.name} (iteration {start} of {cfg.iterations})")
    if metrics_path and accelerator.is_main_process:  # a resumed run's round folder is new: the lines so far first
        metrics_path.write_text("".join(json.dumps(line) + "\n" for line in history), encoding="utf-8")
    steps = StepLog(accelerator, metrics_path, project=tracking.project if tracking else None,
                    config=cfg.model_dump())

    def policy_net() -> torch.nn.Module:
        return accelerator.unwrap_model(nets["policy"])

    def evaluation_point(iteration: int) -> None:
        nonlocal best, best_state
        if evaluate is None:
            return
        point = {"iteration": iteration, **evaluate(models, iteration)}
        evals.append(point)
        reward = point.get("rm_reward")
        if reward is not None and reward > best["reward"]:
            best = {"iteration": iteration, "reward": reward}
            if cfg.keep == "best_heldout_reward":
                best_state = _state_of(policy_net())
        log(f"  ppo eval @{iteration}: " + "  ".join(f"{k}={v}" for k, v in point.items() if k != "iteration"))

    if start == 0:
        evaluation_point(0)

    for iteration in bar(range(start, cfg.iterations), desc="ppo", unit="it", total=cfg.iterations - start):
        t0 = time.perf_counter()
        it_seed = seed * 1_000_003 + iteration
        # 1. rollout
        batch = prompt_batch(prompts, cfg.batch_size, seed, iteration)
        policy = policy_net()
        groups = sample_k(policy, tokenizer, [p.text for p in batch], k=cfg.group_size, temperature=cfg.temperature,
                          top_p=1.0, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.sample_batch_size,
                          seed=it_seed)
        flat_prompts = [p for p, g in zip(batch, groups) for _ in g]
        samples = [s for g in groups for s in g]
        rollout = Rollout.build([prompt_ids(tokenizer, p.text) for p in flat_prompts], [s.token_ids for s in samples],
                                tokenizer.pad_token_id)
        finished = torch.tensor([s.finished for s in samples])

        # 2. score
        try:
            scored = score_responses(rms, combine, flat_prompts, [s.text for s in samples])
        except AlignError as e:  # NaN or infinite scores from a reward model or the rule
            raise _stop(str(e), iteration, checkpoints) from None
        if lagrangian:
            score = logit(scored.r_h).float()
            cost = -logit(scored.r_s).float()
            _check_finite("the cost", cost, iteration, checkpoints)
        else:
            score = scored.reward.float()
        if cfg.no_eos_score is not None:
            score = torch.where(finished, score, torch.full_like(score, cfg.no_eos_score))
        _check_finite("the reward", score, iteration, checkpoints)

        # 3. log-probabilities and values of the rollout
        with torch.no_grad():
            # the sampler's own log-probabilities of its draws (logits / temperature): no second forward
            old_logprobs = padded([s.sampling_logprobs for s in samples], rollout.mask)
            ref_logprobs = models.reference_logprobs(rollout, cfg.temperature)
            old_values = values(nets["critic"], rollout) if "critic" in nets else None
            old_costs = values(nets["cost_critic"], rollout) if lagrangian else None
        mask = rollout.mask
        kl = kl_penalty(old_logprobs, ref_logprobs, cfg.kl_estimator) * mask

        # 4. rewards and advantages
        lam = None
        if cfg.advantage == "gae":
            rewards = sequence_reward(score, kl, rollout, cfg.beta) + cfg.ref_logprob_coef * ref_logprobs * mask
            advantages, returns = gae(rewards, old_values, mask, gamma=cfg.gamma, lam=cfg.lam)
            if cfg.whiten_advantages:
                advantages = masked_whiten(advantages, mask)
            if lagrangian:
                costs.append(float(cost.mean()))
                log_lambda = lagrange_step(log_lambda, sum(costs) / len(costs), cfg.cost_threshold, cfg.lambda_lr,
                                           max_lambda=cfg.lambda_max)
                lam = math.exp(log_lambda)
                cost_advantages, cost_returns = gae(sequence_reward(cost, torch.zeros_like(kl), rollout, 0.0),
                                                    old_costs, mask, gamma=cfg.gamma, lam=cfg.lam)
                if cfg.whiten_advantages:
                    cost_advantages = masked_whiten(cost_advantages, mask)
                advantages = actor_advantage(advantages, cost_advantages, lam) * mask
        else:
            sequence = score - cfg.beta * kl.sum(1) + cfg.ref_logprob_coef * (ref_logprobs * mask).sum(1)
            baseline = rloo_advantages if cfg.advantage == "rloo" else group_norm_advantages
            advantages = baseline(sequence, cfg.group_size)[:, None] * mask
        _check_finite("the advantages", advantages, iteration, checkpoints)

        # 5. PPO epochs over minibatches
        tensors = {"old_logprobs": old_logprobs, "advantages": advantages}
        if old_values is not None:
            tensors |= {"old_values": old_values, "returns": returns}
        if lagrangian:
            tensors |= {"old_costs": old_costs, "cost_returns": cost_returns}
        stats: dict[str, list[float]] = {}
        train_policy = iteration >= cfg.critic_warmup
        generator = torch.Generator().manual_seed(it_seed)
        for _ in range(cfg.epochs):
            order = torch.randperm(len(rollout), generator=generator)
            for mb_start in range(0, len(rollout), cfg.minibatch_size):
                # under N processes each takes its slice of the minibatch; DDP averages their gradients
                idx = distributed.my_slice(order[mb_start:mb_start + cfg.minibatch_size])
                micro = _micro_batches(rollout, tensors, idx, cfg.micro_batch_size or cfg.minibatch_size)
                if train_policy:
                    _, parts, _ = learners["policy"].update(micro, _policy_objective(cfg))
                    _collect(stats, parts)
                for name, (old, ret) in (("critic", ("old_values", "returns")),
                                         ("cost_critic", ("old_costs", "cost_returns"))):
                    if name in learners:
                        _, parts, _ = learners[name].update(micro, _value_objective(cfg, old, ret, name))
                        _collect(stats, parts)
        for key in ("losses/policy", "losses/value", "losses/cost_value"):
            if key in stats:
                _check_finite(key, torch.tensor(stats[key]), iteration, checkpoints)

        # 6. log
        line = {"reward": round(float(score.mean()), 4),
                "combined": round(float(scored.combined.mean()), 4), "r_h": round(float(scored.r_h.mean()), 4),
                "r_s": round(float(scored.r_s.mean()), 4), "kl": round(float(kl.sum(1).mean()), 4),
                "response_length": round(float(rollout.lengths.float().mean()), 2),
                "no_eos": round(float((~finished).float().mean()), 4),
                **{k: round(sum(v) / len(v), 5) for k, v in stats.items()}}
        if old_values is not None:
            line["explained_variance"] = round(explained_variance(old_values, returns, mask), 4)
        if scored.branch:
            shares = Counter(scored.branch)
            line |= {f"gate/{b}": round(c / len(scored.branch), 4) for b, c in sorted(shares.items())}
        if lagrangian:
            line |= {"cost": round(float(cost.mean()), 4), "running_cost": round(sum(costs) / len(costs), 4),
                     "lambda": round(lam, 5)}
        line["seconds"] = round(time.perf_counter() - t0, 2)
        history.append({"step": iteration + 1, **line})
        steps.write(iteration + 1, line)
        log(f"  ppo {iteration + 1}/{cfg.iterations} " + "  ".join(f"{k}={v}" for k, v in line.items()))
        done = iteration + 1
        if done % cfg.eval_every == 0 or done == cfg.iterations:
            evaluation_point(done)
        if checkpoints and (done % cfg.checkpoint_every == 0) and done < cfg.iterations:
            checkpoints.save(done, {name: accelerator.unwrap_model(net) for name, net in nets.items()},
                             {name: (lr.optimizer, lr.scheduler) for name, lr in learners.items()},
                             {"history": history, "evals": evals, "log_lambda": log_lambda, "costs": list(costs),
                              "best": best}, tensors={"best_policy": best_state} if best_state is not None else None)
            crash(f"ppo-checkpoint-{done}")
    steps.close()
    kept = cfg.iterations
    if cfg.keep == "best_heldout_reward" and best_state is not None:
        policy_net().load_state_dict(best_state)
        kept = best["iteration"]
    return PPOResult(history, evals, kept, resumed, round(time.perf_counter() - started, 2))


# ----------------------------------------------------------------------------------- pieces ---
def _state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _micro_batches(rollout: Rollout, tensors: dict[str, torch.Tensor], idx: torch.Tensor,
                   size: int) -> list[tuple[Rollout, dict[str, torch.Tensor]]]:
    out = []
    for s in range(0, len(idx), size):
        sub = idx[s:s + size]
        part = rollout.select(sub)
        t = part.mask.shape[1]
        out.append((part, {k: v[sub, :t] for k, v in tensors.items()}))
    return out


def _policy_objective(cfg: PPOConfig):
    def loss_fn(model: torch.nn.Module, batch: tuple[Rollout, dict[str, torch.Tensor]]):
        rollout, t = batch
        logprobs, entropy = token_logprobs(model, rollout, cfg.temperature, with_entropy=True,
                                           entropy_grad=bool(cfg.entropy_coef))
        loss, stats = policy_loss(logprobs, t["old_logprobs"], t["advantages"], rollout.mask, cfg.clip)
        mean_entropy = masked_mean(entropy, rollout.mask)
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * mean_entropy
        return loss, {"losses/policy": loss.item(), "entropy": mean_entropy.item(),
                      **{k: v.item() for k, v in stats.items()}}
    return loss_fn


def _value_objective(cfg: PPOConfig, old: str, ret: str, name: str):
    key = "losses/value" if name == "critic" else "losses/cost_value"

    def loss_fn(model: torch.nn.Module, batch: tuple[Rollout, dict[str, torch.Tensor]]):
        rollout, t = batch
        loss, _ = value_loss(values(model, rollout), t[old], t[ret], rollout.mask, cfg.value_clip)
        return loss, {key: loss.item()}
    return loss_fn


def _collect(stats: dict[str, list[float]], parts: dict[str, float]) -> None:
    for k, v in parts.items():
        stats.setdefault(k, []).append(v)
