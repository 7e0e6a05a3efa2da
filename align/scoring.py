"""Scoring prompt/response pairs with the two reward models and a combination rule, and
calibrating the gate's threshold on labelled responses (``align score``, ``align calibrate-gate``).

Reward models come from a run's newest ``rm`` rounds by default, or from any local folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from align.combine import calibrate_threshold
from align.combine.config import CombineConfig
from align.config import ModelConfig
from align.errors import AlignError
from align.records import PreferencePair, Prompt, iter_jsonl
from align.reward.client import RewardModel, RewardModels, score_responses
from align.reward.config import RewardModelConfig
from align.store import CampaignStore


def latest_rm(run_dir: Path, axis: str) -> Path:
    """The reward model of the run's newest completed rm round of ``axis``."""
    store = CampaignStore(run_dir)
    record = store.latest("rm", axis)
    if record is None:
        raise AlignError(f"{run_dir}: no completed rm round for {axis} (pass the model folder explicitly)")
    store.require_intact(record.id, why="read")
    return record.round.reward_model


def latest_world(run_dir: Path) -> Path:
    """The folder of the run's newest completed sandbox round."""
    store = CampaignStore(run_dir)
    record = store.latest("sandbox")
    if record is None:
        raise AlignError(f"{run_dir}: no completed sandbox round")
    store.require_intact(record.id, why="read")
    return record.path


def _texts(row: dict[str, Any], path: Path, lineno: int) -> tuple[str, str]:
    """The row's prompt and response; a missing text field is named with its line."""
    for key in ("prompt", "response"):
        if not isinstance(row.get(key), str):
            raise AlignError(f"{path}:{lineno}: missing text field {key!r}")
    return row["prompt"], row["response"]


def read_scoring_rows(path: Path) -> list[dict[str, Any]]:
    """Rows ``{prompt, response, is_safety?}``; a missing or empty field is named with its line."""
    rows = []
    for lineno, row in iter_jsonl(path):
        _texts(row, path, lineno)
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


def labelled_from_pairs(pairs: Sequence[PreferencePair]) -> tuple[list[str], list[str], list[bool]]:
    """(prompts, responses, unsafe) of every safety-labelled response among preference pairs."""
    prompts, responses, unsafe = [], [], []
    for p in pairs:
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
        prompt, response = _texts(row, path, lineno)
        if not isinstance(row.get("safe"), bool):
            raise AlignError(f"{path}:{lineno}: 'safe' must be true or false")
        prompts.append(prompt)
        responses.append(response)
        unsafe.append(not row["safe"])
    return prompts, responses, unsafe


def load_reward_models(helpfulness: Path, safety: Path, reward_cfg: Any | None,
                       model_cfg: ModelConfig) -> RewardModels:
    """Both reward models, reading as the run's ``reward:`` section says (the defaults without a run)."""
    return RewardModels(*(RewardModel.load(path, getattr(reward_cfg, axis) if reward_cfg else RewardModelConfig(),
                                           model_cfg) for axis, path in (("helpfulness", helpfulness),
                                                                        ("safety", safety))))


def calibrate_gate(safety_rm: RewardModel, prompts: Sequence[str], responses: Sequence[str], unsafe: Sequence[bool],
                   *, target_precision: float) -> dict[str, Any]:
    """Sweep ``t`` for ``R_s < t`` as a detector of unsafe responses; pick the best recall at the
    target precision."""
    r_s = safety_rm.probabilities(prompts, responses).tolist()
    threshold, sweep = calibrate_threshold(r_s, unsafe, target_precision=target_precision)
    return {"responses": len(r_s), "unsafe": int(sum(unsafe)),
            "target_precision": target_precision, "threshold": threshold, "sweep": sweep}
