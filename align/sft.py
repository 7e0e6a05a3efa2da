"""Fine-tuning on (prompt, answer) pairs with the loss on answer tokens only (Llama 2 section 3.1).

What the SFT stage and the rejection-sampling fine-tune share: ``answer_only_loss`` (prompt and
padding positions carry no loss), the examples it reads, and ``finetune``, which runs the one
training loop (``align.training``) with it. Each micro-batch: forward on prompt + answer, then the
mean next-token cross-entropy over the answer's positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from pydantic import Field

from align.chat import answer_ids, pad, prompt_ids
from align.config import TrackingConfig, TrainingConfig
from align.errors import AlignError
from align.records import iter_jsonl
from align.training import train

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label of positions that carry no loss (prompt and padding)


class FinetuneConfig(TrainingConfig):
    """Fine-tuning with the loss on answer tokens only: the knobs SFT and rejection sampling share.
    The paper: lr 2e-5 cosine, weight decay 0.1, batch 64, 2 epochs, for pretrained 7B-70B models; a
    model trained from scratch (the sandbox) needs more epochs and a far larger lr."""

    epochs: float = Field(5.0, gt=0, description="passes over the examples (the paper: 2)")
    lr: float = Field(3e-3, gt=0, description="peak learning rate (the paper: 2e-5 for pretrained models)")


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning run reports: step count, losses, throughput, skipped examples."""

    steps: int
    first_loss: float
    final_loss: float
    train_seconds: float
    tokens_per_second: float
    examples: int
    skipped_long_prompts: int

    def summary(self) -> dict[str, float | int]:
        """The run as the round's ``metrics`` record it."""
        return {"steps": self.steps, "first_loss": round(self.first_loss, 4), "final_loss": round(self.final_loss, 4),
                "train_seconds": round(self.train_seconds, 2), "tokens_per_second": round(self.tokens_per_second, 1),
                "examples": self.examples, "skipped_long_prompts": self.skipped_long_prompts}


# ------------------------------------------------------------------------------ formula ---
def answer_only_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over answer positions.

    Args:
        logits: ``(B, T, V)`` next-token logits; position t predicts token t + 1.
        labels: ``(B, T)`` token ids, ``IGNORE_INDEX`` on prompt and padding positions.
    Returns:
        scalar loss averaged over the positions whose target is an answer token.
    """
    shift_labels = labels[:, 1:]  # (B, T-1): position t predicts token t + 1
    scored = shift_labels != IGNORE_INDEX
    if not scored.any():  # no answer token: the mean over nothing, as cross_entropy gives it
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), shift_labels.reshape(-1),
                               ignore_index=IGNORE_INDEX)
    # only the answer positions' rows go through the softmax (no (B*T, V) copy for prompts and padding)
    return F.cross_entropy(logits[:, :-1][scored].float(), shift_labels[scored])


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
    ids, mask = pad([e["input_ids"] for e in examples], pad_id, left=False)
    labels, _ = pad([e["labels"] for e in examples], IGNORE_INDEX, left=False)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# ---------------------------------------------------------------------------- training ---
class AnswerOnlyObjective:
    """``answer_only_loss`` of a micro-batch; logs ``losses/sft`` and the token throughput."""

    name = "sft"

    def __init__(self) -> None:
        self.tokens = 0

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = answer_only_loss(logits, batch["labels"])
        self.tokens += int(batch["attention_mask"].sum())
        return loss, {"losses/sft": loss.item()}

    def charts(self, elapsed: float) -> dict[str, float]:
        return {"charts/tokens_per_s": round(self.tokens / elapsed, 1)}


def finetune(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]],
             cfg: FinetuneConfig, *, seed: int, metrics_path: Path | None = None,
             tracking: TrackingConfig | None = None, tracking_dir: Path | None = None) -> FinetuneResult:
    """Fine-tune ``model`` in place on ``pairs`` with the answer-only loss; returns a FinetuneResult.

    Step metrics go to ``metrics_path`` (JSONL) and, when ``tracking`` names one, to an
    accelerate tracker under ``tracking_dir``.
    """
    examples, skipped = build_examples(tokenizer, pairs, max_seq_len=cfg.max_seq_len)
    if not examples:
        raise AlignError(f"no fine-tuning example fits max_seq_len={cfg.max_seq_len}")
    objective = AnswerOnlyObjective()
    result = train(model, examples, partial(collate, pad_id=tokenizer.pad_token_id), objective, cfg,
                   lengths=[len(e["input_ids"]) for e in examples], seed=seed, stream="sft",
                   warmup_steps=lambda total: int(cfg.warmup_ratio * total), metrics_path=metrics_path,
                   tracking=tracking, tracking_dir=tracking_dir)
    return FinetuneResult(steps=result.steps, first_loss=result.first_loss, final_loss=result.final_loss,
                          train_seconds=result.seconds, tokens_per_second=objective.tokens / result.seconds,
                          examples=len(examples), skipped_long_prompts=skipped)
