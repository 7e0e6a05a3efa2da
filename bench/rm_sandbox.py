"""Reward-model ablations on the sandbox (issue 4): the rating margin of the helpfulness RM
(none / small / large, accuracy by rating level) and the safety RM's 90/10 mix against
safety pairs only (the paper: the 10% of helpfulness data helps where both answers are safe).

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

from align.campaign import run_campaign
from align.config import load_config

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
    return results


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
