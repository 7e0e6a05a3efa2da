"""Scoring prompt/response pairs with the two reward models and a combination rule, and
calibrating the gate's threshold on labelled responses (``align score``, ``align calibrate-gate``).

Reward models come from a run's newest ``rm`` rounds by default, or from any local folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from align.combine import calibrate_threshold
from align.config import CombineConfig, ModelConfig
from align.errors import AlignError
from align.records import PreferencePair, Prompt, iter_jsonl, read_records
from align.rejection import RewardModels, score_responses


def latest_rm(run_dir: Path, axis: str) -> Path:
    """``rm/`` of the run's newest completed reward-model round of ``axis``."""
    rounds = sorted(p for p in (run_dir / "rounds").glob(f"*-rm-{axis}") if (p / "manifest.json").is_file())
    if not rounds:
        raise AlignError(f"{run_dir}: no completed rm round for {axis} (pass the model folder explicitly)")
    return rounds[-1] / "rm"


def read_scoring_rows(path: Path) -> list[dict[str, Any]]:
    """Rows ``{prompt, response, is_safety?}``; a missing or empty field is named with its line."""
    rows = []
    for lineno, row in iter_jsonl(path):
        for key in ("prompt", "response"):
            if not isinstance(row.get(key), str):
                raise AlignError(f"{path}:{lineno}: missing text field {key!r}")
        if not row["prompt"].strip():
            raise AlignError(f"{path}:{lineno}: empty prompt")
        if "is_safety" in row and not isinstance(row["is_safety"], bool):
            raise AlignError(f"{path}:{lineno}: is_safety must be true or false")
        rows.append(row)
    if not rows:
        raise AlignError(f"{path}: no rows to score")
    return rows


def score_rows(rows: Sequence[dict[str, Any]], rms: RewardModels, combine: CombineConfig) -> list[dict[str, Any]]:
    """Each row with ``R_h``, ``R_s`` (sigmoid scores), the gate's ``branch`` (llama2_gate), the rule's
    ``combined`` value and the transformed ``reward`` (whiten(logit) over the file)."""
    prompts = [Prompt(id=str(i), text=r["prompt"], family="", category="", is_safety=bool(r.get("is_safety", False)))
               for i, r in enumerate(rows)]
    scored = score_responses(rms, combine, prompts, [r["response"] for r in rows])
    out = []
    for i, r in enumerate(rows):
        out.append({**r, "R_h": round(float(scored.r_h[i]), 6), "R_s": round(float(scored.r_s[i]), 6),
                    **({"branch": scored.branch[i]} if scored.branch else {}), "rule": combine.rule,
                    "combined": round(float(scored.combined[i]), 6), "reward": round(float(scored.reward[i]), 6)})
    return out


def labelled_from_pairs(path: Path) -> tuple[list[str], list[str], list[bool]]:
    """(prompts, responses, unsafe) of every safety-labelled response in a preference-pair file."""
    prompts, responses, unsafe = [], [], []
    for p in read_records(path, PreferencePair):
        for text, safe in ((p.chosen, p.chosen_safe), (p.rejected, p.rejected_safe)):
            if safe is not None:
                prompts.append(p.prompt.text)
                responses.append(text)
                unsafe.append(not safe)
    return prompts, responses, unsafe


def labelled_from_jsonl(path: Path) -> tuple[list[str], list[str], list[bool]]:
    """(prompts, responses, unsafe) from rows ``{prompt, response, safe}``."""
    prompts, responses, unsafe = [], [], []
    for lineno, row in iter_jsonl(path):
        for key in ("prompt", "response"):
            if not isinstance(row.get(key), str):
                raise AlignError(f"{path}:{lineno}: missing text field {key!r}")
        if not isinstance(row.get("safe"), bool):
            raise AlignError(f"{path}:{lineno}: 'safe' must be true or false")
        prompts.append(row["prompt"])
        responses.append(row["response"])
        unsafe.append(not row["safe"])
    return prompts, responses, unsafe


def calibrate_gate(safety_rm: Path, prompts: Sequence[str], responses: Sequence[str], unsafe: Sequence[bool], *,
                   target_precision: float, model_cfg: ModelConfig | None = None,
                   max_seq_len: int = 128) -> dict[str, Any]:
    """Sweep ``t`` for ``R_s < t`` as a detector of unsafe responses; pick the best recall at the
    target precision."""
    from align.reward.train import load_reward_model, score

    model, tok = load_reward_model(safety_rm, model_cfg)
    r_s = torch.sigmoid(torch.as_tensor(score(model, tok, prompts, responses, max_seq_len=max_seq_len))).tolist()
    threshold, sweep = calibrate_threshold(r_s, unsafe, target_precision=target_precision)
    return {"safety_rm": str(safety_rm), "responses": len(r_s), "unsafe": int(sum(unsafe)),
            "target_precision": target_precision, "threshold": threshold, "sweep": sweep}
