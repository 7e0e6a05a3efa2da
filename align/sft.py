"""Supervised fine-tuning with the loss on answer tokens only (Llama 2 section 3.1).

Reads (prompt, answer) pairs (the sandbox's demonstrations or a JSONL of ``{prompt, response}``
rows), builds the policy (the sandbox's tiny Llama from scratch, or a local checkpoint, with an
optional LoRA adapter), trains with AdamW and a cosine schedule through ``accelerate``, and saves
``model/`` (and ``adapter/`` with LoRA) as safetensors with ``metrics.jsonl`` of step metrics.

Steps per batch: 1. forward on prompt + answer; 2. ``answer_only_loss`` (prompt positions
ignored); 3. backward, clip, optimizer and scheduler step; 4. log.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from align.chat import answer_ids, prompt_ids
from align.config import SFTConfig, TrackingConfig
from align.errors import AlignError
from align.records import iter_jsonl
from align.training import StepLog, adamw_cosine, length_grouped_batches, make_accelerator

IGNORE_INDEX = -100  # label of positions that carry no loss (prompt and padding)


@dataclass(frozen=True)
class SFTResult:
    """What an SFT run reports: step count, losses, throughput, skipped examples."""

    steps: int
    first_loss: float
    final_loss: float
    train_seconds: float
    tokens_per_second: float
    examples: int
    skipped_long_prompts: int


# ------------------------------------------------------------------------------ formula ---
def answer_only_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over answer positions.

    Args:
        logits: ``(B, T, V)`` next-token logits; position t predicts token t + 1.
        labels: ``(B, T)`` token ids, ``IGNORE_INDEX`` on prompt and padding positions.
    Returns:
        scalar loss averaged over the positions whose target is an answer token.
    """
    shift_logits = logits[:, :-1, :].reshape(-1, logits.size(-1))  # (B*(T-1), V)
    shift_labels = labels[:, 1:].reshape(-1)  # (B*(T-1),)
    return F.cross_entropy(shift_logits.float(), shift_labels, ignore_index=IGNORE_INDEX)


# --------------------------------------------------------------------------------- data ---
def read_sft_jsonl(path: Path) -> list[tuple[str, str]]:
    """``{prompt, response}`` rows; a missing, non-string or empty field names the line."""
    pairs = []
    for lineno, row in iter_jsonl(path):
        for key in ("prompt", "response"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise AlignError(f"{path}:{lineno}: field {key!r} must be a non-empty string")
        pairs.append((row["prompt"], row["response"]))
    if not pairs:
        raise AlignError(f"{path}: no SFT examples")
    return pairs


def build_examples(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]], *,
                   max_seq_len: int) -> tuple[list[dict[str, list[int]]], int]:
    """Token ids and labels (prompt positions set to IGNORE_INDEX); returns (examples, skipped).

    An answer that runs past ``max_seq_len`` is cut at the end; a prompt that leaves no room
    for an answer token is skipped and counted.
    """
    examples, skipped = [], 0
    for prompt, answer in pairs:
        p, a = prompt_ids(tokenizer, prompt), answer_ids(tokenizer, answer)
        if len(p) >= max_seq_len:
            skipped += 1
            continue
        ids = (p + a)[:max_seq_len]
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * len(p) + ids[len(p):]})
    return examples, skipped


def collate(examples: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding gets attention 0 and label IGNORE_INDEX."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e["input_ids"]), torch.tensor(e["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# -------------------------------------------------------------------------------- stage ---
def train_sft(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]],
              cfg: SFTConfig, *, seed: int, metrics_path: Path | None = None,
              tracking: TrackingConfig | None = None, tracking_dir: Path | None = None) -> SFTResult:
    """Fine-tune ``model`` in place on ``pairs`` with answer-only loss; returns an SFTResult.

    Step metrics go to ``metrics_path`` (JSONL) and, when ``tracking`` names one, to an
    accelerate tracker under ``tracking_dir``.
    """
    set_seed(seed)
    examples, skipped = build_examples(tokenizer, pairs, max_seq_len=cfg.max_seq_len)
    if not examples:
        raise AlignError(f"no SFT example fits sft.max_seq_len={cfg.max_seq_len}")
    rng = random.Random(f"sft:{seed}")
    lengths = [len(e["input_ids"]) for e in examples]
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))

    accelerator = make_accelerator(tracking, tracking_dir)
    log = StepLog(accelerator, metrics_path, project=tracking.project if tracking else None, config=cfg.model_dump())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = adamw_cosine(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                        warmup_steps=int(cfg.warmup_ratio * total), total_steps=total,
                                        min_lr_ratio=cfg.min_lr_ratio)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()

    losses: list[float] = []
    tokens = 0
    batches: list[list[int]] = []
    bar = tqdm(range(total), desc="sft", disable=None)
    for step in bar:
        if not batches:
            batches = length_grouped_batches(lengths, cfg.batch_size, rng)
        batch = {k: v.to(accelerator.device) for k, v in
                 collate([examples[i] for i in batches.pop()], tokenizer.pad_token_id).items()}
        # 1. forward  2. answer-only loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = answer_only_loss(logits, batch["labels"])
        # 3. update
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(trainable, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        # 4. log
        losses.append(loss.item())
        tokens += int(batch["attention_mask"].sum())
        if step % cfg.log_every == 0 or step == total - 1:
            log.write(step + 1, {"epoch": round((step + 1) / steps_per_epoch, 4), "losses/sft": round(losses[-1], 5),
                                 "charts/lr": scheduler.get_last_lr()[0], "charts/grad_norm": round(float(grad_norm), 4),
                                 "charts/tokens_per_s": round(tokens / log.elapsed, 1)})
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    log.close()
    elapsed = log.elapsed
    tail = losses[-max(1, len(losses) // 10):]
    return SFTResult(steps=total, first_loss=losses[0], final_loss=sum(tail) / len(tail), train_seconds=elapsed,
                     tokens_per_second=tokens / elapsed, examples=len(examples), skipped_long_prompts=skipped)
