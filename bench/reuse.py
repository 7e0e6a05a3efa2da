"""A fully reused default campaign: the wall time of ``align run configs/sandbox.yaml`` when every round
is complete (what a user pays to resume, inspect or re-run a finished campaign), against ``align verify``
on the same run directory, which rehashes every file: what each reuse would cost without the fast
integrity check (size and mtime recorded in the manifest). Both are whole CLI processes (Python, torch
and transformers imports included), alternated, 3 repeats each, medians. The target is under 5 s.

The run directory is ``runs/sandbox`` (``make demo``'s); it is built first when incomplete (about
8 minutes on 2 cores).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "configs" / "sandbox.yaml"


def _align(*args: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "align.cli", "--quiet", *args], cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"align {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0


def run(*, run_dir: Path = ROOT / "runs" / "sandbox", repeats: int = 3) -> list[dict[str, Any]]:
    build_s = _align("run", str(CONFIG), "--run-dir", str(run_dir))  # builds what is missing (nothing after demo)
    ours, peer = [], []
    for _ in range(repeats):
        ours.append(_align("run", str(CONFIG), "--run-dir", str(run_dir)))
        peer.append(_align("verify", str(run_dir)))
    files = sum(1 for p in (run_dir / "rounds").rglob("*") if p.is_file() and ".superseded" not in p.parts)
    size = sum(p.stat().st_size for p in (run_dir / "rounds").rglob("*") if p.is_file()
               and ".superseded" not in p.parts)
    o, p = statistics.median(ours), statistics.median(peer)
    return [{"name": "campaign/reused_run_seconds", "ours": round(o, 2), "peer": round(p, 2), "ratio": round(p / o, 3),
             "unit": "s (lower is better; ratio peer/ours); peer: align verify, every file rehashed",
             "config": {"run_dir": str(run_dir), "rounds_files": files, "rounds_bytes": size,
                        "first_call_s (builds what was missing)": round(build_s, 1), "repeats": repeats,
                        "target_s": 5.0, "under_target": o < 5.0, "all_ours_s": [round(x, 2) for x in ours],
                        "all_peer_s": [round(x, 2) for x in peer]}}]
