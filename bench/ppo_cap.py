"""What a reward-model-driven optimiser can gain on the sandbox: the cap PPO runs into.

On the held-out benign prompts, K answers per prompt from a policy round (default: the run's last rs
round) at the evaluation temperature; reported:

- ``sampled``: the share of correct answers (what ``helpful_accuracy`` measures);
- ``greedy``: the policy's greedy answers (a sharper policy gains this much without any reward);
- ``rm_best_of_k``: the answer the combination rule scores highest per prompt (what any optimiser of the
  reward models can at best select for);
- ``oracle_best_of_k``: a correct answer whenever one of the K is (what the policy can produce at all);
- ``rm_auc``: per prompt with both right and wrong answers, the probability that the helpfulness RM
  scores a right answer above a wrong one (0.5: it cannot tell them apart), pooled, with a 95% bootstrap
  interval over prompts (``rm_auc_ci95``) and by task.

Usage: ``python -m bench.ppo_cap --run-dir runs/sandbox [--round 10-rs] [--k 8]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from align.campaign import load_run
from align.evaluation.judge import get_judge
from align.generate import sample_completions, sample_k
from align.models import load_causal_lm, load_tokenizer
from align.reward.client import RewardModel, RewardModels, score_responses
from align.reward.metrics import right_wrong_auc, right_wrong_auc_ci
from align.sandbox.build import read_prompts


def measure(run_dir: Path, round_id: str | None = None, k: int = 8, seed: int = 0) -> dict:
    cfg, store = load_run(run_dir)
    record = store.read(round_id) if round_id else store.latest("rs")
    world = store.latest("sandbox").path
    tok = load_tokenizer(record.round.model)
    policy = load_causal_lm(record.round.model, cfg.model)
    rms = RewardModels(*(RewardModel.load(store.latest("rm", axis).round.reward_model, getattr(cfg.reward, axis),
                                          cfg.model) for axis in ("helpfulness", "safety")))
    judge = get_judge("sandbox_gold")
    prompts = [p for p in read_prompts(world, "eval") if p.family == "benign"]
    groups = sample_k(policy, tok, [p.text for p in prompts], k=k, temperature=cfg.eval.temperature, top_p=1.0,
                      max_new_tokens=cfg.eval.max_new_tokens, batch_size=16, seed=seed)
    flat = [(p, s) for p, g in zip(prompts, groups) for s in g]
    correct = torch.tensor([bool(judge.judge(p, s.text).correct) for p, s in flat]).view(len(prompts), k)
    scored = score_responses(rms, cfg.combine, [p for p, _ in flat], [s.text for _, s in flat])
    combined, r_h = scored.combined.view(len(prompts), k), scored.r_h.view(len(prompts), k)
    rm_pick = correct.gather(1, combined.argmax(1, keepdim=True)).squeeze(1)
    greedy = sample_completions(policy, tok, [p.text for p in prompts], temperature=0.0, top_p=1.0,
                                max_new_tokens=cfg.eval.max_new_tokens, batch_size=64, seed=seed)
    greedy_right = sum(bool(judge.judge(p, g.text).correct) for p, g in zip(prompts, greedy))
    groups = [list(zip(c.tolist(), r.tolist(), [p.category] * k)) for c, r, p in zip(correct, r_h, prompts)]
    auc, auc_by_task = right_wrong_auc(groups)
    return {"round": record.id, "prompts": len(prompts), "k": k,
            "sampled": round(float(correct.float().mean()), 4),
            "greedy": round(greedy_right / len(prompts), 4),
            "rm_best_of_k": round(float(rm_pick.float().mean()), 4),
            "oracle_best_of_k": round(float(correct.any(1).float().mean()), 4),
            "prompts_with_right_and_wrong": int(((correct.any(1)) & (~correct.all(1))).sum()),
            "rm_auc": auc, "rm_auc_ci95": right_wrong_auc_ci(groups, seed=seed), "rm_auc_by_task": auc_by_task}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/sandbox"))
    parser.add_argument("--round", default=None)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(measure(args.run_dir, args.round, args.k), indent=2))


if __name__ == "__main__":
    main()
