"""The default campaign's wall time: ``make demo``'s commands (``align run configs/sandbox.yaml``, then
``align eval`` of the SFT round and ``align report``) in a new run directory, after set-up, against
the same measure at commit 0524696 (``align run configs/sandbox.yaml``: its demo, without the PPO
stage, the evaluation round and the report), run from a ``git worktree`` of that commit in the same
invocation with the same Python environment, so the ratio holds on a noisy machine.

One run each by default (a run is 7 to 12 minutes on 2 cores): ours, then the peer. The config holds
each of our rounds' seconds and the last round's gold figures (the run's results, not only its time).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import entry, median

ROOT = Path(__file__).parent.parent
PEER_COMMIT = "0524696"


def _timed(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "align.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"align {' '.join(args)} (in {cwd}) failed: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0


def _ours(run_dir: Path) -> float:
    shutil.rmtree(run_dir, ignore_errors=True)
    return sum(_timed(args, ROOT) for args in (["run", "configs/sandbox.yaml", "--run-dir", str(run_dir), "--quiet"],
                                               ["eval", str(run_dir), "--round", "01-sft"],
                                               ["report", str(run_dir)]))


def _peer(worktree: Path, run_dir: Path) -> float:
    if not (worktree / "align").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(worktree), PEER_COMMIT], cwd=ROOT,
                       check=True, capture_output=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(worktree)}  # its align package ahead of this checkout's editable install
    return _timed(["run", "configs/sandbox.yaml", "--run-dir", str(run_dir)], worktree, env)


def _rounds(run_dir: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """Each round's seconds, and the gold figures of the campaign's last measured round (not ``align eval``'s)."""
    seconds, gold = {}, {}
    for manifest in sorted((run_dir / "rounds").glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        seconds[m["id"]] = round(m["duration_s"], 1)
        g = m.get("metrics", {}).get("gold")
        if g and m["id"][:1].isdigit():
            gold = {"round": m["id"], **{k: g.get(k) for k in ("violation_rate", "false_refusal_rate",
                                                                "helpful_accuracy")}}
    return seconds, gold


def run(*, repeats: int = 1, work: Path = ROOT / "runs" / "bench") -> list[dict[str, Any]]:
    ours_dir, peer_dir, worktree = work / "demo-ours", work / "demo-peer", work / f"worktree-{PEER_COMMIT}"
    ours, peer = [], []
    for _ in range(repeats):
        ours.append(_ours(ours_dir))
        peer.append(_peer(worktree, peer_dir))
    seconds, gold = _rounds(ours_dir)
    peer_seconds, _ = _rounds(peer_dir)
    config = {"ours": "make demo: align run configs/sandbox.yaml + align eval --round 01-sft + align report",
              "peer": f"align run configs/sandbox.yaml at {PEER_COMMIT} (no PPO, eval round or report)",
              "repeats": repeats, "target_s": 360, "under_target": median(ours) <= 360,
              "ours_s": [round(x, 1) for x in ours], "peer_s": [round(x, 1) for x in peer],
              "ours_round_seconds": seconds, "peer_round_seconds": peer_seconds, "ours_last_gold": gold}
    return [entry("campaign/demo_seconds", median(ours), median(peer), "s of make demo's commands after set-up",
                  config, higher_is_better=False, digits=1)]
