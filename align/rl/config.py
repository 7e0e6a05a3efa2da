"""The knobs of the PPO stage (Llama 2 section 3.2.3; Huang et al. 2024 for the details that decide
whether it works; Safe RLHF for the Lagrangian). Defaults are measured on the sandbox (docs/ppo.md);
the paper's values for 7B-70B models are in each field's description and in ``configs/ppo-real.yaml``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from align.config import LoraSettings, SamplingConfig
from align.data import PromptSource


class PPOConfig(SamplingConfig):
    """PPO on the combined reward: per iteration, sample answers to a batch of prompts, score them
    (``whiten(logit(R_c))`` at the last token minus ``beta`` x the per-token KL to the starting policy),
    estimate advantages, and take clipped policy and value steps over minibatches."""

    algorithm: Literal["ppo", "ppo_lagrangian"] = Field("ppo", description=(
        "ppo: the combination rule's reward (Llama 2); ppo_lagrangian: Safe RLHF, reward = the helpfulness RM's "
        "score, cost = -(the safety RM's score) kept under cost_threshold by a Lagrange multiplier"))
    advantage: Literal["gae", "rloo", "group_norm"] = Field("gae", description=(
        "gae: a value model (critic); rloo: REINFORCE leave-one-out over group_size answers per prompt; "
        "group_norm: GRPO's (s - mean) / std within the group. rloo and group_norm need no critic"))
    iterations: int = Field(60, ge=1, description="rollout + update iterations (the paper: 200-400)")
    batch_size: int = Field(64, ge=1, description="prompts per iteration (the paper: 512)")
    group_size: int = Field(1, ge=1, description="answers per prompt (rloo and group_norm: at least 2)")
    minibatch_size: int = Field(32, ge=1, description="sequences per optimiser step (the paper: 64)")
    activation_checkpointing: bool = Field(False, description="recompute each decoder layer in the backward pass "
                                                              "(policy and critic): memory for compute")
    micro_batch_size: int | None = Field(None, ge=1, description="sequences per forward pass (gradient "
                                                                 "accumulation); None: the minibatch")
    epochs: int = Field(2, ge=1, description="PPO epochs over each iteration's rollouts")
    lr: float = Field(1e-5, gt=0, description="policy learning rate, constant (the paper: 1e-6)")
    critic_lr: float = Field(5e-5, gt=0, description="value model learning rate, constant")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (the paper: 0.1)")
    adam_eps: float = Field(1e-5, gt=0, description="AdamW epsilon (the paper: 1e-5)")
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clip (the paper: 1.0)")
    beta: float = Field(0.01, ge=0, description="KL penalty coefficient (the paper: 0.01 at 7B/13B, 0.005 at 34B/70B)")
    ref_logprob_coef: float = Field(0.0, ge=0, description=(
        "+ this x log pi_ref(token) on every token: the rs stage's regularized selection (kl_coef) as a reward "
        "term. With a reward model that cannot check answers it keeps the policy on what the starting policy finds "
        "likely (together with the KL penalty, a pull toward the reference's mode rather than its spread)"))
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="per-token KL estimate in the reward: k1 = log "
                                                                 "pi - log pi_ref; k3 = (r - 1) - log r")
    gamma: float = Field(1.0, gt=0, le=1, description="discount")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    clip: float = Field(0.2, gt=0, description="policy ratio clip")
    value_clip: float = Field(0.2, gt=0, description="value clip around the rollout's values")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus in the policy loss")
    whiten_advantages: bool = Field(True, description="whiten GAE advantages over the batch's response tokens")
    no_eos_score: float | None = Field(-1.0, description=(
        "the sequence score of an answer with no EOS within max_new_tokens, in place of its whitened reward "
        "(its KL penalty stays); null: score it like any other"))
    critic_init: Literal["helpfulness", "safety", "policy"] = Field("helpfulness", description=(
        "where the value model starts: a reward model (its head read at every token; it must share the "
        "policy's tokenizer) or the starting policy with a new zero head"))
    critic_warmup: int = Field(0, ge=0, description="iterations that train only the value model(s) first")
    cost_threshold: float = Field(0.0, description="ppo_lagrangian: the bound d on the mean episode cost "
                                                    "(cost = -logit R_s: 0 is R_s = 0.5)")
    lambda_init: float = Field(1.0, gt=0, description="ppo_lagrangian: the multiplier's start")
    lambda_lr: float = Field(0.1, gt=0, description="ppo_lagrangian: step size of log lambda")
    lambda_max: float | None = Field(100.0, gt=0, description="ppo_lagrangian: cap on lambda")
    lambda_window: int = Field(4, ge=1, description="ppo_lagrangian: iterations in the running mean episode cost")
    eval_every: int = Field(10, ge=1, description="gold metrics and held-out RM reward every this many iterations "
                                                  "(and at the start and the end): the over-optimisation curve")
    eval_prompts: int = Field(240, ge=1, description="held-out prompts of each evaluation point")
    keep: Literal["last", "best_heldout_reward"] = Field("last", description=(
        "the policy the round keeps: the last iteration's, or the evaluation point with the best held-out reward "
        "(the RM's view: no gold judge needed)"))
    checkpoint_every: int = Field(20, ge=1, description="iterations between checkpoints (a killed run resumes "
                                                        "from the last one)")
    sample_batch_size: int = Field(64, ge=1, description="prompts per generation batch")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA policy: the reference is the same "
                                                                          "model with its adapter disabled")
    prompts: PromptSource | None = Field(None, description="prompts from a data spec; None: the sandbox world's RL "
                                                           "prompts")

    @model_validator(mode="after")
    def _consistent(self) -> PPOConfig:
        if self.top_p != 1.0:
            raise ValueError("ppo.top_p must be 1: PPO's log-probabilities are those of the full distribution the "
                             "answers were sampled from")
        if self.advantage != "gae" and self.group_size < 2:
            raise ValueError(f"ppo.advantage: {self.advantage} compares answers to the same prompt: set "
                             "ppo.group_size to 2 or more")
        if self.algorithm == "ppo_lagrangian" and self.advantage != "gae":
            raise ValueError("ppo.algorithm: ppo_lagrangian needs reward and cost critics (advantage: gae)")
        if self.minibatch_size > self.batch_size * self.group_size:
            raise ValueError(f"ppo.minibatch_size ({self.minibatch_size}) is larger than an iteration's rollouts "
                             f"(batch_size x group_size = {self.batch_size * self.group_size})")
        return self
