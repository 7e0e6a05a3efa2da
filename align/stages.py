"""The stage entry points that a campaign calls: each reads parent rounds and writes its own.

A stage takes the campaign config, its parents' folders and an output folder, and returns the
round's metrics. Stages meet only through these folders.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.config import CampaignConfig
from align.errors import AlignError
from align.evaluation import gold_evaluate
from align.models import load_causal_lm, load_tokenizer, save_model, with_lora
from align.records import Demonstration, PreferencePair, Prompt, iter_jsonl, read_records, write_jsonl
from align.sandbox.build import generate_world, write_world
from align.sandbox.model import tiny_llama
from align.sft import read_sft_jsonl, train_sft


@dataclass(frozen=True)
class StageContext:
    """What a stage may know of the campaign besides its inputs: where logs and trackers go."""

    run_dir: Path
    round_id: str
    seed: int
    log: Callable[[str], None] = print


def run_sandbox_round(cfg: CampaignConfig, parents: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, Any]:
    """Build the sandbox world (data, tokenizer) into ``out``."""
    world = generate_world(cfg.sandbox, ctx.seed)
    summary = write_world(world, cfg.sandbox, ctx.seed, out)
    return {"data_hash": summary["data_hash"], "counts": summary["counts"]}


def build_policy(cfg: CampaignConfig, world_dir: Path, seed: int):
    """The policy and its tokenizer: a local checkpoint, or the sandbox's tiny Llama."""
    m = cfg.model
    if m.path:
        tokenizer = load_tokenizer(m.path, trust_remote_code=m.trust_remote_code)
        model = load_causal_lm(m.path, m)
    else:
        tokenizer = load_tokenizer(world_dir / "tokenizer")
        model = tiny_llama(tokenizer, hidden_size=m.hidden_size, num_layers=m.num_layers, num_heads=m.num_heads,
                           intermediate_size=m.intermediate_size,
                           max_position_embeddings=m.max_position_embeddings, seed=seed)
    if cfg.sft.lora.enabled:
        model = with_lora(model, cfg.sft.lora)
    return model, tokenizer


def run_sft_round(cfg: CampaignConfig, parents: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, Any]:
    """SFT on the world's demonstrations (or ``sft.data``), save, then gold-evaluate."""
    (world_dir,) = parents.values()
    if cfg.sft.data == "sandbox":
        pairs = [(d.prompt.text, d.response) for d in read_records(world_dir / "sft.jsonl", Demonstration)]
    else:
        pairs = read_sft_jsonl(Path(cfg.sft.data))
    model, tokenizer = build_policy(cfg, world_dir, ctx.seed)
    result = train_sft(model, tokenizer, pairs, cfg.sft, seed=ctx.seed, metrics_path=out / "metrics.jsonl",
                       tracking=cfg.tracking, tracking_dir=ctx.run_dir / "tracking" / ctx.round_id)
    ctx.log(f"  sft: {result.steps} steps in {result.train_seconds:.1f}s, loss {result.first_loss:.3f} -> "
        f"{result.final_loss:.3f}")
    save_model(model, tokenizer, out, merge=cfg.sft.lora.merge)
    if cfg.sft.lora.enabled and not cfg.sft.lora.merge:
        metrics: dict[str, Any] = {}
    else:
        policy = load_causal_lm(out / "model", cfg.model)
        gold, rows = gold_evaluate_world(policy, tokenizer, world_dir, cfg, ctx.seed)
        write_jsonl(out / "eval_samples.jsonl", rows)
        metrics = {"gold": gold}
    metrics["sft"] = {"steps": result.steps, "first_loss": round(result.first_loss, 4),
                      "final_loss": round(result.final_loss, 4), "train_seconds": round(result.train_seconds, 2),
                      "tokens_per_second": round(result.tokens_per_second, 1), "examples": result.examples,
                      "skipped_long_prompts": result.skipped_long_prompts}
    return metrics


def gold_evaluate_world(model, tokenizer, world_dir: Path, cfg: CampaignConfig, seed: int):
    """Gold metrics of ``model`` on the world's held-out prompts."""
    prompts = read_records(world_dir / "eval_prompts.jsonl", Prompt)
    t0 = time.perf_counter()
    gold, rows = gold_evaluate(model, tokenizer, prompts, cfg.eval, seed=seed)
    gold["eval_seconds"] = round(time.perf_counter() - t0, 2)
    return gold, rows


POLICY_KINDS = ("sft", "rs", "ppo")


def _parent(parents: dict[str, Path], *kinds: str) -> Path:
    """The folder of the parent round of one of ``kinds`` (round ids are ``NN-kind[-name]``)."""
    for rid, path in parents.items():
        if rid.split("-")[1] in kinds:
            return path
    raise AlignError(f"no parent round of kind {'/'.join(kinds)} among {', '.join(parents) or 'none'}")


def run_rm_round(cfg: CampaignConfig, parents: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, Any]:
    """Train the helpfulness or safety reward model (the round's name) on the world's pairs, mixed
    with the other axis as the paper does; evaluate it on both axes' held-out pairs."""
    from accelerate.utils import set_seed

    from align.reward.data import load_pair_sources, mix_pairs
    from align.reward.train import evaluate_reward_model, load_reward_model, train_reward_model

    axis = ctx.round_id.rsplit("-", 1)[-1]
    other = "safety" if axis == "helpfulness" else "helpfulness"
    rm_cfg = getattr(cfg.reward, axis)
    sources: dict[str, Any] = {}
    if rm_cfg.data:
        loaded = load_pair_sources(rm_cfg.data, eval_fraction=rm_cfg.eval_fraction, seed=ctx.seed)
        pairs = {f"{a}_{split}": getattr(loaded, split)[a] for a in (axis, other) for split in ("train", "eval")}
        sources = loaded.report
        for name, rep in sources.items():
            ctx.log(f"  rm/{axis}: {name}: {rep['kept']}/{rep['rows']} rows kept, {rep['train']} train, "
                    f"{rep['eval']} eval" + (f", dropped {rep['dropped']}" if rep["dropped"] else ""))
    else:
        world_dir = _parent(parents, "sandbox")
        pairs = {f"{a}_{split}": read_records(world_dir / f"prefs_{a}_{split}.jsonl", PreferencePair)
                 for a in (axis, other) for split in ("train", "eval")}
    refreshed = {a: 0 for a in (axis, other)}
    for rid, folder in parents.items():  # pairs of earlier preference-refresh rounds
        if rid.split("-")[1] == "prefs":
            for a in (axis, other):
                new = read_records(folder / f"prefs_{a}.jsonl", PreferencePair)
                pairs[f"{a}_train"] = [*pairs[f"{a}_train"], *new]
                refreshed[a] += len(new)
    train_pairs = mix_pairs(pairs[f"{axis}_train"], pairs[f"{other}_train"], other_share=rm_cfg.other_axis_share,
                            rng=random.Random(f"rm-mix:{ctx.seed}:{axis}"))
    init = _parent(parents, *POLICY_KINDS) / "model" if rm_cfg.init == "sft" else Path(rm_cfg.init)
    set_seed(ctx.seed)  # the new score head's initialisation: the round's seed, whatever ran before
    model, tokenizer = load_reward_model(init, cfg.model)
    result = train_reward_model(model, tokenizer, train_pairs, rm_cfg, seed=ctx.seed, metrics_path=out / "metrics.jsonl",
                                tracking=cfg.tracking, tracking_dir=ctx.run_dir / "tracking" / ctx.round_id,
                                init_dir=init)
    ctx.log(f"  rm/{axis}: {result.steps} steps in {result.train_seconds:.1f}s on {result.pairs} pairs, "
            f"loss {result.first_loss:.3f} -> {result.final_loss:.3f}")
    model.save_pretrained(out / "rm")
    tokenizer.save_pretrained(out / "rm")
    evals = evaluate_reward_model(model, tokenizer, {axis: pairs[f"{axis}_eval"], other: pairs[f"{other}_eval"]},
                                  max_seq_len=rm_cfg.max_seq_len, batch_size=rm_cfg.eval_batch_size)
    own = evals[axis]
    detection = evals.get("safety", {})
    verification = verify_answers(model, tokenizer, _parent(parents, "sandbox"), rm_cfg, ctx.seed) \
        if axis == "helpfulness" and not rm_cfg.data else None
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


def verify_answers(model, tokenizer, world_dir: Path, rm_cfg, seed: int) -> dict[str, Any]:
    """Answer verification of a sandbox helpfulness RM on the held-out prompts with a gold answer."""
    from align.reward.metrics import answer_verification
    from align.reward.train import score
    from align.sandbox.responses import answer_candidates

    prompts = [p for p in read_records(world_dir / "eval_prompts.jsonl", Prompt)
               if p.answer is not None and p.family == "benign"]
    rng = random.Random(f"verification:{seed}")
    lineups = [answer_candidates(p, rng) for p in prompts]
    flat = [(p.text, c) for p, cands in zip(prompts, lineups) for c in cands]
    if not flat:
        return {"n": 0, "top1": None, "top1_by_category": {}, "candidates": 0}
    values = iter(score(model, tokenizer, [p for p, _ in flat], [c for _, c in flat],
                        max_seq_len=rm_cfg.max_seq_len, batch_size=rm_cfg.eval_batch_size).tolist())
    scores = [[next(values) for _ in cands] for cands in lineups]  # back into one line-up per prompt
    return answer_verification([p.category for p in prompts], scores)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_jsonl(path)]


def _rs_parents(parents: dict[str, Path]) -> tuple[Path, Path, Path, Path, list[Path]]:
    """(world, sft, rm-helpfulness, rm-safety, prior rs rounds in order) among an rs round's parents."""
    prior = [path for rid, path in parents.items() if rid.split("-")[1] == "rs"]
    return (_parent(parents, "sandbox"), _parent(parents, "sft"), _rm_parent(parents, "helpfulness"),
            _rm_parent(parents, "safety"), prior)


def run_rs_round(cfg: CampaignConfig, parents: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, Any]:
    """A rejection-sampling round: sample K, score, keep the best, pool with prior rounds, fine-tune,
    then gold-evaluate (see ``align.rejection``)."""
    from align import rejection as rs

    world_dir, sft_dir, rm_h_dir, rm_s_dir, prior = _rs_parents(parents)
    policy_dir = prior[-1] if prior else sft_dir
    rcfg = cfg.rs
    tokenizer = load_tokenizer(policy_dir / "model")
    policy = load_causal_lm(policy_dir / "model", cfg.model)
    rms = rs.RewardModels.load(rm_h_dir / "rm", rm_s_dir / "rm", cfg.model, max_seq_len=(
        cfg.reward.helpfulness.max_seq_len, cfg.reward.safety.max_seq_len))
    all_prompts = read_records(world_dir / "rl_prompts.jsonl", Prompt)
    if not all_prompts:
        raise AlignError(f"{world_dir / 'rl_prompts.jsonl'}: the prompt set is empty")
    prompts = all_prompts
    if rcfg.prompts_per_round and rcfg.prompts_per_round < len(all_prompts):
        prompts = random.Random(f"rs-prompts:{ctx.seed}:{ctx.round_id}").sample(all_prompts, rcfg.prompts_per_round)

    t0 = time.perf_counter()  # 1. sample K and score
    temperature, temperature_curve = rcfg.temperature, None
    if temperature == "auto":
        subset = random.Random(f"rs-temperature:{ctx.seed}").sample(prompts, min(rcfg.temperature_prompts,
                                                                                   len(prompts)))
        temperature, temperature_curve = rs.choose_temperature(policy, tokenizer, subset, rms, cfg.combine, rcfg,
                                                               seed=ctx.seed)
        ctx.log(f"  rs: temperature {temperature} (expected best-of-{rcfg.k} reward by temperature: "
                f"{temperature_curve})")
    rows, combined = rs.sample_and_score(policy, tokenizer, prompts, rms, cfg.combine, rcfg,
                                         temperature=float(temperature), seed=ctx.seed)
    sample_s = time.perf_counter() - t0
    prior_rows = [r for d in prior for r in _rows(d / "samples.jsonl") if r["best_in_round"]] \
        if rcfg.pool == "all_prior" else []
    ref_logprobs = None
    if rcfg.kl_coef:  # regularized best-of-K: the SFT policy is the reference
        sft_policy = policy if policy_dir == sft_dir else load_causal_lm(sft_dir / "model", cfg.model)

        def ref_logprobs(ps: list[Prompt], texts: list[str]) -> list[float]:
            return rs.reference_logprobs(sft_policy, tokenizer, [p.text for p in ps], texts,
                                         batch_size=cfg.eval.batch_size)
    pairs = rs.select_training_set(rows, prior_rows, {p.id: p for p in all_prompts}, rms, cfg.combine, rcfg,
                                   ref_logprobs)  # 2-3
    write_jsonl(out / "samples.jsonl", rows)
    summary = rs.round_summary(rows, rs.best_of_k_curve(combined), len(pairs), rcfg, float(temperature))
    if temperature_curve:
        summary["temperature_search"] = temperature_curve
    ctx.log(f"  rs: {summary['samples']} samples on {summary['prompts']} prompts in {sample_s:.1f}s; best-of-K "
            f"{summary['best_of_k']}; training on {len(pairs)} ({summary['kept_from_prior_rounds']} from prior rounds)")

    if rcfg.init == "sft":  # 4. fine-tune
        policy = load_causal_lm(sft_dir / "model", cfg.model)
    result = train_sft(policy, tokenizer, pairs, rcfg.train, seed=ctx.seed, metrics_path=out / "metrics.jsonl",
                       tracking=cfg.tracking, tracking_dir=ctx.run_dir / "tracking" / ctx.round_id)
    save_model(policy, tokenizer, out, merge=True)

    policy = load_causal_lm(out / "model", cfg.model)  # 5. measure
    gold, eval_rows = gold_evaluate_world(policy, tokenizer, world_dir, cfg, ctx.seed)
    write_jsonl(out / "eval_samples.jsonl", eval_rows)
    parent_eval = policy_dir / "eval_samples.jsonl"
    eval_prompts = read_records(world_dir / "eval_prompts.jsonl", Prompt)[: rcfg.kl_prompts]
    reference = load_causal_lm(sft_dir / "model", cfg.model)
    parent = load_causal_lm(policy_dir / "model", cfg.model)
    kw = {"max_new_tokens": rcfg.max_new_tokens, "batch_size": cfg.eval.batch_size}
    return {"gold": gold, "rs": summary,
            "win_rate_vs_parent": rs.gold_win_rate(eval_rows, _rows(parent_eval))
            if parent_eval.is_file() else None,
            "kl_vs_sft": rs.kl_to_reference(policy, reference, tokenizer, [p.text for p in eval_prompts],
                                            seed=ctx.seed, **kw),
            "greedy_reward": {"parent": rs.greedy_reward(parent, tokenizer, eval_prompts, rms, cfg.combine, **kw),
                              "policy": rs.greedy_reward(policy, tokenizer, eval_prompts, rms, cfg.combine, **kw)},
            "train": {"steps": result.steps, "first_loss": round(result.first_loss, 4),
                      "final_loss": round(result.final_loss, 4), "train_seconds": round(result.train_seconds, 2),
                      "examples": result.examples}, "sample_seconds": round(sample_s, 2)}


def run_prefs_round(cfg: CampaignConfig, parents: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, Any]:
    """New preference pairs on the newest policy's samples, labelled by the configured labeler."""
    import torch

    from align import prefs as pf
    from align.generate import sample_k
    from align.reward.data import load_pair_sources

    pc = cfg.prefs
    world_dir = _parent(parents, "sandbox")
    by_axis: dict[str, list[PreferencePair]] = {"helpfulness": [], "safety": []}
    if pc.labeler == "jsonl":
        if not pc.data:
            raise AlignError("prefs.labeler is jsonl but prefs.data names no file")
        by_axis = load_pair_sources(pc.data, eval_fraction=0.0, seed=ctx.seed).train
    else:
        policy_dir = _parent(parents, *POLICY_KINDS)
        tokenizer = load_tokenizer(policy_dir / "model")
        policy = load_causal_lm(policy_dir / "model", cfg.model)
        pool = read_records(world_dir / "rl_prompts.jsonl", Prompt)
        rng = random.Random(f"prefs:{ctx.seed}:{ctx.round_id}")
        prompts = rng.sample(pool, min(pc.prompts, len(pool)))
        samples = sample_k(policy, tokenizer, [p.text for p in prompts], k=pc.k, temperature=pc.temperature,
                           top_p=1.0, max_new_tokens=pc.max_new_tokens, batch_size=cfg.rs.sample_batch_size,
                           seed=ctx.seed)
        # (prompt index, answer a, answer b) for every distinct pair of answers to a prompt
        compared = [(i, a, b) for i, group in enumerate(samples)
                    for a, b in pf.distinct_pairs([s.text for s in group])]
        for axis in by_axis:
            idx = [c for c in compared if axis in pf.axes_of(prompts[c[0]])]
            if pc.labeler == "sandbox":
                pc_sb = cfg.sandbox.preferences
                labelled = [pf.label_sandbox(prompts[i], a, b, axis, rng, choice_temperature=
                                             pc_sb.choice_temperature, gap_noise=pc_sb.gap_noise) for i, a, b in idx]
            else:
                from align.reward.train import load_reward_model, score

                rm, rm_tok = load_reward_model(_rm_parent(parents, axis) / "rm", cfg.model)
                texts = [prompts[i].text for i, _, _ in idx]
                max_len = getattr(cfg.reward, axis).max_seq_len
                sa, sb = (torch.sigmoid(torch.as_tensor(score(rm, rm_tok, texts, [c[j] for c in idx],
                                                              max_seq_len=max_len))) for j in (1, 2))
                labelled = pf.label_with_reward_model([prompts[i] for i, _, _ in idx], [a for _, a, _ in idx],
                                                      [b for _, _, b in idx], axis, sa, sb)
            by_axis[axis] = [p for p in labelled if p is not None]
    for axis, pairs in by_axis.items():
        write_jsonl(out / f"prefs_{axis}.jsonl", pairs)
    summary = pf.summarize_pairs(by_axis, sandbox=pc.labeler != "jsonl")
    ctx.log(f"  prefs ({pc.labeler}): " + ", ".join(f"{a}: {m['pairs']} pairs" for a, m in summary.items()))
    return {"labeler": pc.labeler, **summary}


def _rm_parent(parents: dict[str, Path], axis: str) -> Path:
    found = [path for rid, path in parents.items() if rid.endswith(f"-rm-{axis}")]
    if not found:
        raise AlignError(f"no rm round for {axis} among the parents {', '.join(parents)}")
    return found[-1]


def run_eval_round(cfg: CampaignConfig, parents: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, Any]:
    """Gold evaluation of the parent policy round's model on the world's held-out prompts."""
    world_dir, policy_dir = parents.values()
    tokenizer = load_tokenizer(policy_dir / "model")
    model = load_causal_lm(policy_dir / "model", cfg.model)
    gold, rows = gold_evaluate_world(model, tokenizer, world_dir, cfg, ctx.seed)
    write_jsonl(out / "eval_samples.jsonl", rows)
    return {"gold": gold}


STAGE_RUNNERS: dict[str, Callable[[CampaignConfig, dict[str, Path], Path, StageContext], dict[str, Any]]] = {
    "sandbox": run_sandbox_round, "sft": run_sft_round, "rm": run_rm_round, "rs": run_rs_round,
    "prefs": run_prefs_round, "eval": run_eval_round}


def evaluate_checkpoint(model_dir: Path, world_dir: Path, cfg: CampaignConfig) -> dict[str, Any]:
    """Gold-evaluate any local checkpoint on a built world; writes nothing."""
    tokenizer = load_tokenizer(model_dir, trust_remote_code=cfg.model.trust_remote_code)
    model = load_causal_lm(model_dir, cfg.model)
    gold, _ = gold_evaluate_world(model, tokenizer, world_dir, cfg, cfg.seed)
    return gold


__all__ = ["STAGE_RUNNERS", "StageContext", "build_policy", "evaluate_checkpoint", "run_eval_round",
           "run_prefs_round", "run_rm_round", "run_rs_round", "run_sandbox_round", "run_sft_round"]
