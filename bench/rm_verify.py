"""Can a helpfulness reward model check answers? Retrain one on a run's world with settings changed, and measure.

From a run's sandbox world and SFT round (``align run configs/sandbox.yaml --until 01-sft``), the world's pairs are
rebuilt from the run's config with ``--set`` overrides, as ``align run`` takes them (for example
``sandbox.preferences.answer_pairs=1.0``), a helpfulness RM is trained from the SFT checkpoint as
``reward.helpfulness`` says (for example ``reward.helpfulness.lr=5e-4``), and reported:

- ``verification``: the right answer among five (chance 0.2), as the rm stage measures it, by task;
- ``auc``: on the SFT round's own held-out answers (8 per benign prompt), the probability that the RM scores a right
  answer above a wrong one to the same prompt (0.5: it cannot tell them apart), by task;
- ``rm_best_of_8`` against ``sampled``: the RM's pick among each prompt's answers, and a random one;
- ``loglik_auc``, ``loglik_best_of_8``: the same with the SFT policy's own log-likelihood in place of the RM (what
  regularized best-of-K adds to the reward); ``mean_loglik_*``: its mean over the answer's tokens (what the
  ``loglik`` reward head starts from).

Usage: ``python -m bench.rm_verify --run-dir runs/v3 --set reward.helpfulness.lr=5e-4`` (about a minute an epoch).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from accelerate.utils import set_seed

from align.campaign import load_run
from align.config import load_config
from align.errors import AlignError
from align.evaluation.reward import verify_on_world
from align.chat import answer_ids
from align.generate import sequence_logprobs
from align.models import load_causal_lm, load_tokenizer
from align.reward.client import RewardModel
from align.reward.data import mix_pairs
from align.reward.metrics import right_wrong_auc
from align.reward.model import load_reward_model
from align.reward.train import evaluate_reward_model, train_reward_model
from align.sandbox.build import generate_world


def best_of(groups: dict[str, list[tuple[bool, float, str]]]) -> float:
    return round(sum(max(g, key=lambda a: a[1])[0] for g in groups.values()) / len(groups), 4)


def measure(run_dir: Path, overrides: Sequence[str] = (), seed: int | None = None) -> dict:
    _, store = load_run(run_dir)
    # the run's resolved config with the project's --set overrides: every field is set there, so a version-3
    # world from a version-2 run needs version 3's knobs named too
    cfg = load_config(run_dir / "campaign.yaml", list(overrides))
    seed = cfg.seed if seed is None else seed
    sft = store.latest("sft")
    world = generate_world(cfg.sandbox, seed)
    rm_cfg = cfg.reward.helpfulness
    pairs = mix_pairs(world.preferences["helpfulness_train"], world.preferences["safety_train"],
                      other_share=rm_cfg.other_axis_share, rng=random.Random(f"rm-mix:{seed}:helpfulness"))
    set_seed(seed)
    model, tokenizer = load_reward_model(sft.round.model, cfg.model)
    result = train_reward_model(model, tokenizer, pairs, rm_cfg, seed=seed, init_dir=sft.round.model)
    evals = evaluate_reward_model(model, tokenizer, {a: world.preferences[f"{a}_eval"] for a in ("helpfulness", "safety")},
                                  max_seq_len=rm_cfg.max_seq_len, batch_size=rm_cfg.eval_batch_size)
    rm = RewardModel(model, tokenizer, rm_cfg.max_seq_len, rm_cfg.eval_batch_size)
    verification = verify_on_world(rm, world.eval_prompts, seed=seed,
                                   wrong_styles=cfg.sandbox.preferences.answer_errors)
    rows = [json.loads(line) for line in sft.round.eval_samples.read_text().splitlines()]
    rows = [r for r in rows if r["family"] == "benign"]
    texts = ([r["prompt"] for r in rows], [r["response"] for r in rows])
    policy = load_causal_lm(sft.round.model, cfg.model)
    policy_tokenizer = load_tokenizer(sft.round.model)
    token_lps = sequence_logprobs(policy, policy_tokenizer, texts[0], [answer_ids(policy_tokenizer, a) for a in texts[1]],
                                  batch_size=64)
    by_rm: dict[str, list] = {}
    by_ll: dict[str, list] = {}
    by_mean: dict[str, list] = {}
    for r, s, lps in zip(rows, rm.scores(*texts).tolist(), token_lps):
        by_rm.setdefault(r["prompt_id"], []).append((r["correct"], s, r["category"]))
        by_ll.setdefault(r["prompt_id"], []).append((r["correct"], sum(lps), r["category"]))
        by_mean.setdefault(r["prompt_id"], []).append((r["correct"], sum(lps) / len(lps), r["category"]))
    auc, auc_by_task = right_wrong_auc(list(by_rm.values()))
    ll_auc, ll_by_task = right_wrong_auc(list(by_ll.values()))
    return {"set": list(overrides), "steps": result.steps,
            "train_seconds": round(result.train_seconds, 1),
            "accuracy": {a: m["accuracy"] for a, m in evals.items()},
            "significantly_better": evals["helpfulness"]["accuracy_by_rating"].get("significantly_better"),
            "verification": verification["top1"], "verification_by_task": verification["top1_by_category"],
            "auc": auc, "auc_by_task": auc_by_task, "sampled": round(sum(r["correct"] for r in rows) / len(rows), 4),
            "rm_best_of_8": best_of(by_rm), "loglik_auc": ll_auc, "loglik_auc_by_task": ll_by_task,
            "loglik_best_of_8": best_of(by_ll), "mean_loglik_auc": right_wrong_auc(list(by_mean.values()))[0],
            "mean_loglik_best_of_8": best_of(by_mean)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/sandbox"))
    parser.add_argument("--set", nargs="*", default=[], help="config overrides of the run, key.path=value")
    args = parser.parse_args()
    try:
        print(json.dumps(measure(args.run_dir, args.set)))
    except AlignError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
