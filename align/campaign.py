"""Running a campaign into a run directory: the sandbox world, SFT, and gold evaluation.

Layout (DESIGN.md section 4): ``campaign.yaml`` (the resolved config) and
``rounds/<NN>-<kind>/`` each with ``manifest.json``. A round is built in a temporary folder and
renamed into place when complete; a completed round whose config hash matches is reused.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.config import CampaignConfig, config_hash, config_to_yaml
from align.errors import AlignError

STAGES = ("sandbox", "sft")


@dataclass(frozen=True)
class RoundResult:
    """A completed round: where it is and what it measured."""

    id: str
    path: Path
    metrics: dict[str, Any]
    reused: bool


def run_campaign(cfg: CampaignConfig, run_dir: Path, *, until: str | None = None,
                 log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> list[RoundResult]:
    """Run (or resume) every stage up to ``until``; returns the rounds in order."""
    from align.stages import run_sandbox_round, run_sft_round

    if until is not None and until not in STAGES:
        raise AlignError(f"--until {until!r}: unknown stage; known: {', '.join(STAGES)}")
    if run_dir.exists() and not run_dir.is_dir():
        raise AlignError(f"{run_dir}: run directory exists and is not a directory")
    (run_dir / "rounds").mkdir(parents=True, exist_ok=True)
    (run_dir / "campaign.yaml").write_text(config_to_yaml(cfg))
    results: list[RoundResult] = []
    world = _round(run_dir, "00-sandbox", "sandbox", cfg.sandbox.model_dump(mode="json") | {"seed": cfg.seed},
                   lambda out: run_sandbox_round(cfg, out), log, parents=[])
    results.append(world)
    if until == "sandbox":
        return results
    sft_cfg = {"seed": cfg.seed, "model": cfg.model.model_dump(mode="json"), "sft": cfg.sft.model_dump(mode="json"),
               "eval": cfg.eval.model_dump(mode="json"), "parent": world.id}
    results.append(_round(run_dir, "01-sft", "sft", sft_cfg, lambda out: run_sft_round(cfg, world.path, out, log),
                          log, parents=[world.id]))
    return results


def _round(run_dir: Path, round_id: str, kind: str, stage_cfg: dict[str, Any],
           build: Callable[[Path], dict[str, Any]], log: Callable[[str], None], *, parents: list[str]) -> RoundResult:
    """Reuse the completed round if its config hash matches, else build it atomically."""
    final = run_dir / "rounds" / round_id
    digest = config_hash(stage_cfg)
    manifest_path = final / "manifest.json"
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise AlignError(f"{manifest_path}: corrupted manifest ({e.msg})") from None
        if manifest.get("status") == "completed" and manifest.get("config_hash") == digest:
            log(f"[{round_id}] completed earlier: reused")
            return RoundResult(round_id, final, manifest.get("metrics", {}), reused=True)
    log(f"[{round_id}] running {kind}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{round_id}-", dir=run_dir / "rounds"))
    started = time.time()
    try:
        metrics = build(tmp)
        manifest = {"id": round_id, "kind": kind, "parents": parents, "config_hash": digest, "status": "completed",
                    "started": started, "ended": time.time(), "metrics": metrics}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"[{round_id}] done in {time.time() - started:.1f}s")
    return RoundResult(round_id, final, metrics, reused=False)
