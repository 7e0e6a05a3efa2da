"""Reward-model ablations on the sandbox (issue 4): the rating margin of the helpfulness RM
(none / small / large, accuracy by rating level) and the safety RM's 90/10 mix against
safety pairs only (the paper: the 10% of helpfulness data helps where both answers are safe);
then the two default models on the pairs where the axes disagree (the right answer with and
without a risk note) and on the rest of each test set.

Each variant is the default campaign's ``rm`` round with one override, trained in a scratch run
directory on the base run's world and SFT rounds (hard-linked, so nothing is retrained but the
reward model), and read back from its manifest. ``--base`` is a run that has them (``make demo``
leaves ``runs/sandbox``); without one, the world and SFT rounds are built first (about 2 minutes).
Each variant takes about 40 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from align.campaign import run_campaign
from align.config import ModelConfig, load_config
from align.reward.config import RewardModelConfig
from align.reward.model import load_reward_model, score
from align.sandbox.build import read_preferences
from align.sandbox.judges import has_risk_note

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "configs" / "sandbox.yaml"
OUT = Path(__file__).parent / "rm_sandbox.json"
REUSED = ("00-sandbox", "01-sft", "02-rm-helpfulness", "03-rm-safety")

# (name, round read back, overrides); the first of each round is the default configuration.
VARIANTS = [
    ("helpfulness RM, margin small (default)", "02-rm-helpfulness", []),
    ("helpfulness RM, margin none", "02-rm-helpfulness", ["reward.helpfulness.margin=none"]),
    ("helpfulness RM, margin large", "02-rm-helpfulness", ["reward.helpfulness.margin=large"]),
    ("safety RM, 90/10 mix (default)", "03-rm-safety", []),
    ("safety RM, safety pairs only", "03-rm-safety", ["reward.safety.other_axis_share=0"]),
]


def _link_rounds(base: Path, run_dir: Path) -> None:
    (run_dir / "rounds").mkdir(parents=True, exist_ok=True)
    for rid in REUSED:
        src = base / "rounds" / rid
        if src.is_dir() and not (run_dir / "rounds" / rid).exists():
            shutil.copytree(src, run_dir / "rounds" / rid, copy_function=os.link)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    own = metrics["eval"][metrics["axis"]]
    out = {"axis": metrics["axis"], "accuracy": own["accuracy"], "by_rating": own["accuracy_by_rating"], "cross_axis": metrics["cross_axis"],
           "train_seconds": metrics["train"]["train_seconds"]}
    if "accuracy_by_bin" in own:
        out["by_bin"] = own["accuracy_by_bin"]
    return out


def run(base: Path | None = None, seed: int = 0) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="rm-ablation-") as tmp:
        scratch_base = base is None
        if scratch_base:
            base = Path(tmp) / "base"
            run_campaign(load_config(CONFIG, [f"seed={seed}"]), base, until="01-sft", log=lambda _: None)
        results = []
        for i, (name, round_id, overrides) in enumerate(VARIANTS):
            run_dir = Path(tmp) / f"variant-{i}"
            _link_rounds(base, run_dir)
            done = run_campaign(load_config(CONFIG, [f"seed={seed}", *overrides]), run_dir, until=round_id, log=lambda _: None)
            results.append({"name": name, "round": round_id, "overrides": overrides, **_summary(done[-1].metrics)})
            if scratch_base and not overrides:  # a default round: later variants reuse it
                _link_rounds(run_dir, base)
            print(_line(results[-1]), flush=True)
        defaults = {r["round"]: Path(tmp) / f"variant-{i}" / "rounds" / r["round"]
                    for i, r in enumerate(results) if not r["overrides"]}
        for row in disagreement(base / "rounds" / "00-sandbox", defaults):
            results.append(row)
            print(_disagreement_line(row), flush=True)
    return results


def disagreement(world: Path, rounds: dict[str, Path]) -> list[dict[str, Any]]:
    """Each default RM's accuracy on each test set, split into the risk-note pairs (where safety
    and helpfulness annotators disagree) and the other pairs."""
    test_sets = {axis: read_preferences(world, axis, "eval") for axis in ("helpfulness", "safety")}
    read = RewardModelConfig()  # the default reward models read 128 tokens, scored 128 at a time
    rows = []
    for round_id, round_dir in sorted(rounds.items()):
        model, tokenizer = load_reward_model(round_dir / "rm", ModelConfig())
        model_axis = "helpfulness" if round_id.endswith("helpfulness") else "safety"
        for axis, pairs in test_sets.items():
            noted = np.array([has_risk_note(p.chosen) or has_risk_note(p.rejected) for p in pairs])
            prompts = [p.prompt.text for p in pairs]
            right = (score(model, tokenizer, prompts, [p.chosen for p in pairs], max_seq_len=read.max_seq_len,
                           batch_size=read.eval_batch_size)
                     > score(model, tokenizer, prompts, [p.rejected for p in pairs], max_seq_len=read.max_seq_len,
                             batch_size=read.eval_batch_size))
            rows.append({"name": f"{model_axis} RM on the {axis} test set", "round": round_id, "test_set": axis,
                         "accuracy": float(right.mean()), "risk_note_pairs": int(noted.sum()),
                         "accuracy_risk_note_pairs": float(right[noted].mean()) if noted.any() else None,
                         "accuracy_other_pairs": float(right[~noted].mean())})
    return rows


def _disagreement_line(r: dict[str, Any]) -> str:
    note = "n/a" if r["accuracy_risk_note_pairs"] is None else f"{r['accuracy_risk_note_pairs']:.3f}"
    return (f"{r['name']:<42} accuracy {r['accuracy']:.3f}  on its {r['risk_note_pairs']} risk-note pairs {note}  "
            f"on the other pairs {r['accuracy_other_pairs']:.3f}")


def _line(r: dict[str, Any]) -> str:
    ratings = " / ".join(f"{r['by_rating'].get(k, float('nan')):.3f}"
                         for k in ("significantly_better", "better", "slightly_better", "negligibly_better"))
    bins = f"  both_safe {r['by_bin']['both_safe']:.3f}" if "by_bin" in r else ""
    other = next(k for k in r["cross_axis"] if k != r["axis"])
    return (f"{r['name']:<42} accuracy {r['accuracy']:.3f}  by rating (sig / better / slightly / negligibly) "
            f"{ratings}{bins}  on the other axis's pairs {r['cross_axis'][other]:.3f}")


def save(results: list[dict[str, Any]]) -> None:
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=None, help="a run directory with 00-sandbox and 01-sft")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    save(run(args.base, args.seed))


if __name__ == "__main__":
    main()
