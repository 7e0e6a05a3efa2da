"""The reward-model stage: train the helpfulness or the safety reward model (Llama 2 section 3.2.2).

The round's name is its axis. Parents: the sandbox world (its pairs, unless ``reward.<axis>.data``
names sources), the newest policy round (``init: sft``: the paper initialises from the chat
model) and every earlier ``prefs`` round (new pairs on newer policies). Writes: ``rm/`` (a
one-output sequence classifier, safetensors) and ``metrics.jsonl``. Metrics: accuracy overall, by
rating and by safety bin, unsafe detection, calibration, cross-axis accuracy and, for a sandbox
helpfulness RM, answer verification. Knobs: ``reward.helpfulness`` and ``reward.safety``.

Steps: 1. pairs (own axis, other axis, refreshed); 2. the paper's mix (an equal part of safety
pairs for helpfulness, 90/10 for safety); 3. load and train; 4. save; 5. measure.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed
from pydantic import Field

from align.config import CampaignConfig, StageSpec, Strict
from align.evaluation.reward import verify_on_world
from align.models import save_model
from align.preflight import model_problems, source_problems
from align.records import PreferencePair, read_records
from align.reward.client import RewardModel
from align.reward.config import RewardModelConfig
from align.reward.data import load_pair_sources, mix_pairs
from align.reward.head import save_head
from align.reward.model import load_reward_model
from align.reward.train import evaluate_reward_model, train_reward_model
from align.sandbox.build import read_preferences, read_prompts
from align.stages import Planned, Stage, StageContext, register

AXES = ("helpfulness", "safety")


class HelpfulnessRMConfig(RewardModelConfig):
    """The helpfulness RM: all helpfulness pairs plus an equal part of safety pairs."""

    other_axis_share: float = Field(0.5, ge=0, lt=1, description="share of safety pairs in the mix (paper: equal part)")


class SafetyRMConfig(RewardModelConfig):
    """The safety RM: all safety pairs, helpfulness pairs making up 10% of the mix."""

    other_axis_share: float = Field(0.1, ge=0, lt=1, description="share of helpfulness pairs in the mix (paper: 90/10)")


class RewardConfig(Strict):
    """The two reward models, trained separately (Llama 2 section 3.2.2)."""

    helpfulness: HelpfulnessRMConfig = Field(default_factory=HelpfulnessRMConfig,
                                             description="the helpfulness reward model")
    safety: SafetyRMConfig = Field(default_factory=SafetyRMConfig, description="the safety reward model")


def parents(planned: Planned, cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    rm_cfg = getattr(cfg.reward, spec.name)
    world = [] if rm_cfg.data else [planned.latest("sandbox")]
    init = [planned.policy()] if rm_cfg.init == "sft" else []
    return world + init + planned.all("prefs")


def inputs(cfg: CampaignConfig, spec: StageSpec) -> list[Path]:
    """The initial checkpoint's weights (unless it is a policy round) and every data spec and file."""
    rm_cfg = getattr(cfg.reward, spec.name)
    files = [] if rm_cfg.init == "sft" else sorted(Path(rm_cfg.init).glob("*.safetensors"))
    for src in rm_cfg.data:
        files += [Path(src.spec)] + ([Path(src.path)] if src.path else [])
    return files


def _pairs(ctx: StageContext, axis: str, other: str, rm_cfg: RewardModelConfig) -> tuple[dict, dict, dict]:
    """``({axis_split: pairs}, sources report, refreshed counts)``: the world's or the sources' pairs of
    both axes, train and eval, with every earlier prefs round's pairs added to training."""
    sources: dict[str, Any] = {}
    if rm_cfg.data:
        loaded = load_pair_sources(rm_cfg.data, eval_fraction=rm_cfg.eval_fraction, seed=ctx.seed)
        pairs = {f"{a}_{split}": getattr(loaded, split)[a] for a in (axis, other) for split in ("train", "eval")}
        sources = loaded.report
        for name, rep in sources.items():
            ctx.log(f"  rm/{axis}: {name}: {rep['kept']}/{rep['rows']} rows kept, {rep['train']} train, "
                    f"{rep['eval']} eval" + (f", dropped {rep['dropped']}" if rep["dropped"] else ""))
    else:
        world = ctx.parents.sandbox.path
        pairs = {f"{a}_{split}": read_preferences(world, a, split)
                 for a in (axis, other) for split in ("train", "eval")}
    refreshed = {a: 0 for a in (axis, other)}
    for prefs in ctx.parents.prior("prefs"):  # pairs of earlier preference-refresh rounds
        for a in (axis, other):
            new = read_records(prefs.preferences(a), PreferencePair)
            pairs[f"{a}_train"] = [*pairs[f"{a}_train"], *new]
            refreshed[a] += len(new)
    return pairs, sources, refreshed


def run(ctx: StageContext) -> dict[str, Any]:
    axis = ctx.spec.name
    other = "safety" if axis == "helpfulness" else "helpfulness"
    rm_cfg = getattr(ctx.cfg.reward, axis)
    # 1. pairs
    pairs, sources, refreshed = _pairs(ctx, axis, other, rm_cfg)
    # 2. the paper's mix of the two axes
    train_pairs = mix_pairs(pairs[f"{axis}_train"], pairs[f"{other}_train"], other_share=rm_cfg.other_axis_share,
                            rng=random.Random(f"rm-mix:{ctx.seed}:{axis}"))
    # 3. load (a new scalar head on the policy, or any local model) and train
    init = ctx.parents.policy.model if rm_cfg.init == "sft" else Path(rm_cfg.init)
    set_seed(ctx.seed)  # the new score head's initialisation: the round's seed, whatever ran before
    model, tokenizer = load_reward_model(init, ctx.cfg.model)
    result = train_reward_model(model, tokenizer, train_pairs, rm_cfg, seed=ctx.seed, metrics_path=ctx.out.step_metrics,
                                tracking=ctx.cfg.tracking, tracking_dir=ctx.tracking_dir, init_dir=init)
    ctx.log(f"  rm/{axis}: {result.steps} steps in {result.train_seconds:.1f}s on {result.pairs} pairs, "
            f"loss {result.first_loss:.3f} -> {result.final_loss:.3f}")
    # 4. save
    save_model(model, tokenizer, ctx.out.reward_model, adapter_dir=ctx.out.reward_model)
    save_head(model, ctx.out.reward_model)
    # 5. measure: both axes' held-out pairs, and answer verification on the world
    evals = evaluate_reward_model(model, tokenizer, {axis: pairs[f"{axis}_eval"], other: pairs[f"{other}_eval"]},
                                  max_seq_len=rm_cfg.max_seq_len, batch_size=rm_cfg.eval_batch_size)
    verification = None
    if axis == "helpfulness" and not rm_cfg.data:
        rm = RewardModel(model, tokenizer, rm_cfg.max_seq_len, rm_cfg.eval_batch_size)
        verification = verify_on_world(rm, read_prompts(ctx.parents.sandbox.path, "eval"), seed=ctx.seed,
                                       wrong_styles=ctx.cfg.sandbox.preferences.answer_errors)
    own, detection = evals[axis], evals.get("safety", {})
    return {"axis": axis, **{k: own[k] for k in ("n", "accuracy", "accuracy_by_rating", "ece") if k in own},
            **({"accuracy_by_bin": own["accuracy_by_bin"]} if "accuracy_by_bin" in own else {}),
            **{k: detection[k] for k in ("unsafe_recall_at_0.5", "unsafe_detection") if k in detection},
            "cross_axis": {a: m["accuracy"] for a, m in evals.items()}, "eval": evals,
            **({"verification": verification} if verification else {}),
            "train": {"steps": result.steps, "pairs": result.pairs, "pairs_other_axis": sum(
                p.axis == other for p in train_pairs), "first_loss": round(result.first_loss, 4),
                "final_loss": round(result.final_loss, 4), "train_accuracy": round(result.train_accuracy, 4),
                "train_seconds": round(result.train_seconds, 2)},
            **({"sources": sources} if sources else {}),
            **({"refreshed_pairs": refreshed} if any(refreshed.values()) else {})}



def check(cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    """The initial checkpoint (unless the policy), every data source, and the sandbox's pair counts."""
    rm_cfg, key = getattr(cfg.reward, spec.name), f"reward.{spec.name}"
    problems = [] if rm_cfg.init == "sft" else model_problems(rm_cfg.init, f"{key}.init", causal=False,
                                                              trust_remote_code=cfg.model.trust_remote_code)
    for i, src in enumerate(rm_cfg.data):
        problems += source_problems(src.spec, src.path, f"{key}.data[{i}]", kind="pairs")
    if not rm_cfg.data:
        prefs = cfg.sandbox.preferences
        for field in (f"{spec.name}_pairs", "eval_pairs"):
            n = getattr(prefs, field)
            if n < 1:
                problems.append(f"sandbox.preferences.{field}: {n} leaves the {spec.name} reward model no "
                                f"{'held-out' if field == 'eval_pairs' else 'training'} pairs (set it to 1 or more, or "
                                f"give {key}.data)")
    return problems


register(Stage(kind="rm", run=run, parents=parents, inputs=inputs, check=check, names=AXES,
               sections={"reward": RewardConfig}, doc=__doc__))
