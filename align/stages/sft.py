"""The SFT stage: supervised fine-tuning with the loss on answer tokens only (Llama 2 section 3.1).

Parents: the sandbox world (demonstrations, tokenizer, held-out prompts); it is optional only when
``sft.data`` and ``model.path`` both come from outside the campaign. Writes: ``model/`` (and
``adapter/`` with LoRA) as safetensors, ``metrics.jsonl``, and, on a world, gold metrics on the
held-out prompts with ``eval_samples.jsonl``. Knobs: ``sft:`` (schedule, ``data``, ``lora``),
``model:``, ``eval:``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from align.config import CampaignConfig, LoraSettings, StageSpec
from align.evaluation.policy import evaluate_policy
from align.evaluation.suites import sandbox_heldout
from align.models import build_policy, load_causal_lm, save_model, with_lora
from align.preflight import jsonl_problems, model_problems
from align.records import write_jsonl
from align.sandbox.build import read_demonstrations, tokenizer_dir
from align.sft import FinetuneConfig, finetune, read_sft_jsonl
from align.stages import Planned, Stage, StageContext, register


class SFTConfig(FinetuneConfig):
    """Supervised fine-tuning, loss on answer tokens only (Llama 2 section 3.1)."""

    data: str = Field("sandbox", description="'sandbox' or a JSONL file of {prompt, response} rows")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="train a LoRA adapter (peft)")


def _needs_world(cfg: CampaignConfig) -> bool:
    return cfg.sft.data == "sandbox" or cfg.model.path is None


def parents(planned: Planned, cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    world = planned.latest("sandbox") if _needs_world(cfg) else planned.find("sandbox")
    return [world] if world else []


def inputs(cfg: CampaignConfig, spec: StageSpec) -> list[Path]:
    return [] if cfg.sft.data == "sandbox" else [Path(cfg.sft.data)]


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, world = ctx.cfg, ctx.parents.find("sandbox")
    # 1. demonstrations
    if cfg.sft.data == "sandbox":
        pairs = [(d.prompt.text, d.response) for d in read_demonstrations(world.path)]
    else:
        pairs = read_sft_jsonl(Path(cfg.sft.data))
    # 2. the policy: a local checkpoint, or the sandbox's tiny Llama from scratch
    model, tokenizer = build_policy(cfg.model, tokenizer_dir=tokenizer_dir(world.path) if world else None,
                                    seed=ctx.seed)
    if cfg.sft.lora.enabled:
        model = with_lora(model, cfg.sft.lora)
    # 3. fine-tune with the answer-only loss
    result = finetune(model, tokenizer, pairs, cfg.sft, seed=ctx.seed, metrics_path=ctx.out.step_metrics,
                      tracking=cfg.tracking, tracking_dir=ctx.tracking_dir)
    ctx.log(f"  sft: {result.steps} steps in {result.train_seconds:.1f}s, loss {result.first_loss:.3f} -> "
            f"{result.final_loss:.3f}")
    # 4. save
    save_model(model, tokenizer, ctx.out.model, adapter_dir=ctx.out.adapter, merge=cfg.sft.lora.merge)
    metrics: dict[str, Any] = {"sft": result.summary()}
    # 5. measure on the world's held-out prompts (needs the merged weights)
    if world is not None and (not cfg.sft.lora.enabled or cfg.sft.lora.merge):
        policy = load_causal_lm(ctx.out.model, cfg.model)
        metrics["gold"], rows = evaluate_policy(policy, tokenizer, sandbox_heldout(world.path), cfg.eval,
                                                seed=ctx.seed)
        write_jsonl(ctx.out.eval_samples, rows)
    return metrics



def check(cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    """The policy's folder, the demonstrations file, and that some demonstration fits ``sft.max_seq_len``."""
    problems = model_problems(cfg.model.path, "model.path", trust_remote_code=cfg.model.trust_remote_code) \
        if cfg.model.path else []
    if cfg.sft.data != "sandbox":
        problems += jsonl_problems(cfg.sft.data, "sft.data", read_sft_jsonl)
    if not problems and cfg.model.path and cfg.sft.data != "sandbox":  # lengths: with the policy's tokenizer
        from align.models import load_tokenizer
        from align.sft import build_examples

        pairs = read_sft_jsonl(Path(cfg.sft.data))[:200]
        tokenizer = load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
        if not build_examples(tokenizer, pairs, max_seq_len=cfg.sft.max_seq_len)[0]:
            problems.append(f"{cfg.sft.data}: sft.max_seq_len: no prompt among the first {len(pairs)} leaves room "
                            f"for an answer in {cfg.sft.max_seq_len} tokens (raise sft.max_seq_len)")
    return problems


register(Stage(kind="sft", run=run, parents=parents, inputs=inputs, check=check, policy=True,
               sections={"sft": SFTConfig}, doc=__doc__))
