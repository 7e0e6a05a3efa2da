"""RL steps on the sandbox: align's PPO loop against TRL's ``GRPOTrainer``, completions per second.

A step is the whole of what an RL iteration costs: sampling the completions, scoring them by both
reward models (the sandbox's helpfulness and safety RMs, combined by weights: 0.5 each), the
reference's log-probabilities (KL penalty, beta 0.05) and the update. Both sides start from the same
policy (``runs/sandbox``'s 01-sft) and read the same prompts (the world's RL prompts), with the same
prompts per step (32), completions per prompt (4), completion length (up to 48 tokens), temperature
(0.7), learning rate, one pass over the rollouts in minibatches of 32 completions (4 optimiser steps
per step) and one epoch. Ours and the peer alternate, 3 repeats of 3 steps each, medians.

- ``rl_step/ppo``: ours with a value model (GAE; the critic starts from the helpfulness RM and takes
  its own optimiser steps), the peer without one: we carry the critic's forward and update.
- ``rl_step/group_norm``: ours with GRPO's group-normalised advantages, no critic: the same algorithm.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import alternate, entry, median

ROOT = Path(__file__).parent.parent
PROMPTS, GROUP, NEW_TOKENS, MINIBATCH, BETA, LR, TEMPERATURE = 32, 4, 48, 32, 0.05, 3e-5, 0.7


def _ours(run_dir: Path, prompts, advantage: str, steps: int) -> float:
    from align.combine.config import CombineConfig
    from align.config import ModelConfig
    from align.models import load_causal_lm, load_tokenizer
    from align.reward.client import RewardModel, RewardModels
    from align.reward.config import RewardModelConfig
    from align.rl.config import PPOConfig
    from align.rl.ppo import PPOModels, train_ppo
    from align.stages.ppo import build_critic

    rounds = run_dir / "rounds"
    start = rounds / "01-sft" / "model"
    rm_dirs = {"helpfulness": rounds / "02-rm-helpfulness" / "rm", "safety": rounds / "03-rm-safety" / "rm"}
    tok = load_tokenizer(start)
    policy = load_causal_lm(start)
    reference = load_causal_lm(start).eval().requires_grad_(False)
    rms = RewardModels(*(RewardModel.load(rm_dirs[a], RewardModelConfig(), ModelConfig())
                         for a in ("helpfulness", "safety")))
    critic = build_critic("helpfulness", policy_dir=start, rm_dirs=rm_dirs, tokenizer=tok,
                          model_cfg=ModelConfig()) if advantage == "gae" else None
    cfg = PPOConfig(iterations=steps, batch_size=PROMPTS, group_size=GROUP, minibatch_size=MINIBATCH, epochs=1,
                    lr=LR, beta=BETA, temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS, advantage=advantage,
                    eval_every=10**6, checkpoint_every=10**6, sample_batch_size=PROMPTS)
    t0 = time.perf_counter()
    train_ppo(PPOModels(policy, reference, critic), tok, rms,
              CombineConfig(rule="weighted_sum", params={"safety_weight": 0.5}), prompts, cfg, seed=0,
              log=lambda _line: None)
    return time.perf_counter() - t0


def _peer(run_dir: Path, prompts, steps: int) -> float:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from align.config import ModelConfig
    from align.models import load_causal_lm, load_tokenizer
    from align.reward.model import load_reward_model

    rounds = run_dir / "rounds"
    start = rounds / "01-sft" / "model"
    tok = load_tokenizer(start)
    policy = load_causal_lm(start)
    rms = [load_reward_model(rounds / d / "rm", ModelConfig()) for d in ("02-rm-helpfulness", "03-rm-safety")]
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": p.text}] for p in prompts]})
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, per_device_train_batch_size=MINIBATCH,
                          steps_per_generation=PROMPTS * GROUP // MINIBATCH, num_generations=GROUP,
                          max_completion_length=NEW_TOKENS, temperature=TEMPERATURE, top_p=1.0, top_k=0,
                          beta=BETA, num_iterations=1, learning_rate=LR, lr_scheduler_type="constant",
                          reward_weights=[0.5, 0.5], max_steps=steps * PROMPTS * GROUP // MINIBATCH,
                          use_cpu=True, report_to=[], logging_steps=10**9, save_strategy="no", disable_tqdm=True,
                          seed=0, dataloader_num_workers=0, bf16=False)  # fp32, as ours (TRL: bf16 by default)
        trainer = GRPOTrainer(model=policy, reward_funcs=[m for m, _ in rms], args=args, train_dataset=data,
                              processing_class=tok, reward_processing_classes=[t for _, t in rms])
        t0 = time.perf_counter()
        trainer.train()
        return time.perf_counter() - t0


def run(*, run_dir: Path = ROOT / "runs" / "sandbox", steps: int = 3, repeats: int = 3,
        quick: bool = False) -> list[dict[str, Any]]:
    from align.sandbox.build import read_prompts

    if not (run_dir / "rounds" / "03-rm-safety" / "rm" / "config.json").is_file():
        print(f"rl_step: skipped, no sandbox policy and reward models in {run_dir} (make demo builds them)")
        return []
    if quick:
        steps, repeats = 1, 1
    prompts = read_prompts(run_dir / "rounds" / "00-sandbox", "rl")[:PROMPTS * steps]
    completions = PROMPTS * GROUP * steps
    out = []
    for name, advantage in (("ppo", "gae"), ("group_norm", "group_norm")):
        ours, peer = alternate(lambda: _ours(run_dir, prompts, advantage, steps),
                               lambda: _peer(run_dir, prompts, steps), repeats)
        config = {"policy": str(run_dir / "rounds" / "01-sft" / "model"), "advantage": advantage,
                  "prompts_per_step": PROMPTS, "completions_per_prompt": GROUP, "max_completion_tokens": NEW_TOKENS,
                  "minibatch": MINIBATCH, "epochs": 1, "beta": BETA, "lr": LR, "temperature": TEMPERATURE,
                  "reward": "0.5 R_h + 0.5 R_s (ours: weighted_sum rule; TRL: reward_weights)", "steps": steps,
                  "threads": torch.get_num_threads(), "repeats": repeats,
                  "ours_s": [round(s, 2) for s in ours], "peer_s": [round(s, 2) for s in peer]}
        out.append(entry(f"rl_step/{name}", completions / median(ours), completions / median(peer),
                         "completions/s (generation, both RMs, reference, update); peer: TRL GRPOTrainer", config,
                         higher_is_better=True, digits=2))
    return out
