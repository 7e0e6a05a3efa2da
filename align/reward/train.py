"""Training and evaluating a reward model (Llama 2 section 3.2.2).

Each micro-batch scores its B chosen and B rejected responses in one forward pass of 2B
sequences. The loss: 1. the ranking loss with the rating margin; 2. the optional safety sign term
and reward centering; 3. the optional language-modelling regulariser (GRM, ``lm_reg``). The one
training loop (``align.training``) does the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TYPE_CHECKING

import torch

from align import distributed
from align.config import TrackingConfig
from align.errors import AlignError
from align.models import disable_dropout
from align.records import PreferencePair
from align.reward.config import RewardModelConfig
from align.reward.data import (EncodedPair, collate_pairs, collate_shared_prefix, encode_pairs,
                               shared_layout_tokens)
from align.reward.lm_reg import LMRegularizer
from align.reward.head import attach_head, sequence_rewards
from align.reward.loss import centering_loss, margins_for, ranking_loss, safety_sign_loss
from align.reward.metrics import preference_metrics, unsafe_detection_metrics
from align.reward.model import score
from align.training import train

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MIN_WARMUP_STEPS = 5  # Llama 2: "warm-up of 3% of the total number of steps, with a minimum of 5"
SHARED_PAYS = 0.85  # the shared-prefix layout is used when it reads at most this share of the plain layout's tokens


@dataclass(frozen=True)
class RewardTrainResult:
    steps: int
    first_loss: float
    final_loss: float
    train_accuracy: float
    train_seconds: float
    pairs: int
    tokens: int  # token positions processed in training forwards, padding included (for FLOP/s)


def reward_loss(r_c: torch.Tensor, r_r: torch.Tensor, batch: dict[str, torch.Tensor],
                cfg: RewardModelConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Ranking loss with the batch's margins, plus the weighted safety sign and centering terms.

    ``batch["safe"]`` is ``(B, 2)``: 1 safe, 0 unsafe, -1 unlabelled, for (chosen, rejected).
    """
    rank = ranking_loss(r_c, r_r, batch["margin"])
    total, parts = rank, {"losses/ranking": rank.item()}
    if cfg.safety_aux_weight:
        rewards, safe = torch.stack([r_c, r_r], 1).reshape(-1), batch["safe"].reshape(-1)  # chosen, rejected, ...
        labelled = safe >= 0
        if labelled.any():
            aux = safety_sign_loss(rewards[labelled], safe[labelled].bool())
            total = total + cfg.safety_aux_weight * aux
            parts["losses/safety_aux"] = aux.item()
    if cfg.center_weight:
        center = centering_loss(r_c, r_r)
        total = total + cfg.center_weight * center
        parts["losses/centering"] = center.item()
    return total, parts


def collate(batch: Sequence[EncodedPair], *, pad_id: int, margin: str, share_prompt: bool = False
            ) -> dict[str, torch.Tensor]:
    """A micro-batch: the ``(B,)`` margins, the ``(B, 2)`` safety labels, and the sequences: with
    ``share_prompt`` (causal LMs) each pair's common prefix once and its two suffixes
    (``collate_shared_prefix``) where that reads at most ``SHARED_PAYS`` of the tokens, else the
    ``(2B, T)`` sequences (chosen, then rejected) with the ``(B, T)`` mask of the chosen answers' tokens."""
    plain_tokens = 2 * len(batch) * max(max(len(e.chosen), len(e.rejected)) for e in batch)
    # the shared layout only where it pays: padding eats the saving when prompts are no longer than answers
    pays = share_prompt and shared_layout_tokens(batch) <= SHARED_PAYS * plain_tokens
    inputs = collate_shared_prefix(batch, pad_id) if pays else None
    if inputs is None:
        inputs = collate_pairs(batch, pad_id)
        inputs["chosen_answer"] = inputs["answers"][:len(batch)]
    return {**inputs, "margin": margins_for([e.rating for e in batch], margin),
            "safe": torch.tensor([[-1 if s is None else int(s) for s in (e.chosen_safe, e.rejected_safe)]
                                  for e in batch], dtype=torch.long)}


def pair_rewards(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r_c, r_r)`` of a ``collate`` batch: one forward of the 2B sequences, or, in the shared-prefix
    layout, a forward of the B prefixes whose KV cache, repeated for the two answers, the 2B suffixes
    continue (the same rewards, the prompt read once)."""
    if "prefix_ids" not in batch:
        n = len(batch["margin"])
        rewards = sequence_rewards(model, batch["input_ids"], batch["attention_mask"], batch.get("answers"))
        return rewards[:n], rewards[n:]
    cache = model(input_ids=batch["prefix_ids"], attention_mask=batch["prefix_mask"],
                  position_ids=batch["prefix_positions"], use_cache=True).cache
    cache.batch_repeat_interleave(2)
    rewards = model(input_ids=batch["suffix_ids"], attention_mask=batch["suffix_mask"],
                    position_ids=batch["suffix_positions"], cache=cache, use_cache=True).logits[:, 0].float()
    return rewards[0::2], rewards[1::2]


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Token positions a batch's forwards process, padding included."""
    if "prefix_ids" in batch:
        return batch["prefix_ids"].numel() + batch["suffix_ids"].numel()
    return batch["input_ids"].numel()


class RankingObjective:
    """The reward model's loss on a micro-batch; logs its parts and the running pair accuracy."""

    name = "rm"

    def __init__(self, cfg: RewardModelConfig, reg: LMRegularizer | None):
        self.cfg, self.reg = cfg, reg
        self.hits = self.seen = self.tokens = 0

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.reg:
            self.reg.clear()
        r_c, r_r = pair_rewards(model, batch)  # 1. the 2B sequences, the prompts read once where shared
        loss, parts = reward_loss(r_c, r_r, batch, self.cfg)  # 2. ranking, sign, centering
        if self.reg:  # 3. GRM: keep predicting the chosen answers through the LM head
            lm = (self.reg.shared_loss(batch["suffix_ids"], batch["chosen_answer"]) if "prefix_ids" in batch
                  else self.reg.loss(batch["input_ids"], batch["chosen_answer"]))
            loss = loss + self.cfg.lm_coef * lm
            parts["losses/lm"] = lm.item()
        self.hits += int((r_c > r_r).sum())
        self.seen += len(r_c)
        self.tokens += batch_tokens(batch)
        return loss, {"losses/total": loss.item(), **parts}

    def charts(self, elapsed: float) -> dict[str, float]:
        return {"charts/accuracy": round(self.hits / self.seen, 4)}


def train_reward_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PreferencePair],
                       cfg: RewardModelConfig, *, seed: int, metrics_path: Path | None = None,
                       tracking: TrackingConfig | None = None, tracking_dir: Path | None = None,
                       init_dir: Path | None = None) -> RewardTrainResult:
    """Train ``model`` in place on preference pairs; returns a RewardTrainResult. ``init_dir`` (the
    checkpoint the model was loaded from) supplies an untied LM head when ``cfg.lm_coef > 0``."""
    encoded = encode_pairs(tokenizer, pairs, cfg.max_seq_len)
    if not encoded:
        raise AlignError("no preference pairs to train the reward model on")
    if cfg.lm_coef > 0 and tokenizer.cls_token_id is not None:
        raise AlignError(f"lm_coef > 0 needs a causal LM reward model; {type(model).__name__} reads a [CLS] token "
                         "(an encoder has no next-token head: set lm_coef: 0)")
    if cfg.disable_dropout:
        disable_dropout(model)
    reg = LMRegularizer(model, init_dir) if cfg.lm_coef > 0 else None
    head = attach_head(model, cfg.head, coef=cfg.loglik_coef, init_dir=init_dir)
    objective = RankingObjective(cfg, reg)
    params = ([p for p in model.parameters() if p.requires_grad] + (reg.new_params if reg else [])
              + (head.new_params if head else []))
    # one process: a prefix forward and a suffix forward per micro-batch (DDP wants one forward per backward);
    # the loglik head reads every answer token of both sequences: the plain layout
    share = cfg.share_prompt and distributed.world()[1] == 1 and head is None
    result = train(model, encoded, partial(collate, pad_id=tokenizer.pad_token_id, margin=cfg.margin,
                                           share_prompt=share), objective, cfg,
                   # batches of similar longest sequence in either layout: grouping by answer length instead
                   # (less padding when prefixes are shared) clusters pairs of one kind in a batch, and moved the
                   # sandbox's safety RM enough to let 15% of hidden harmful answers through the gate (docs/reward.md)
                   lengths=[max(len(e.chosen), len(e.rejected)) for e in encoded], seed=seed, stream="rm",
                   warmup_steps=lambda total: min(max(MIN_WARMUP_STEPS, int(cfg.warmup_ratio * total)), total // 2),
                   params=params, metrics_path=metrics_path, tracking=tracking, tracking_dir=tracking_dir)
    if reg:
        reg.remove()
    return RewardTrainResult(steps=result.steps, first_loss=result.first_loss, final_loss=result.final_loss,
                             train_accuracy=objective.hits / objective.seen, train_seconds=result.seconds,
                             pairs=len(encoded), tokens=objective.tokens)


def evaluate_reward_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                          eval_sets: dict[str, Sequence[PreferencePair]], *, max_seq_len: int,
                          batch_size: int) -> dict[str, Any]:
    """Preference metrics on each axis's held-out pairs, and unsafe-response detection where labelled."""
    out: dict[str, Any] = {}
    for axis, pairs in eval_sets.items():
        if not pairs:
            continue
        prompts = [p.prompt.text for p in pairs]
        r_c, r_r = (score(model, tokenizer, prompts, [getattr(p, side) for p in pairs], max_seq_len=max_seq_len,
                          batch_size=batch_size) for side in ("chosen", "rejected"))
        out[axis] = preference_metrics(pairs, r_c, r_r) | unsafe_detection_metrics(pairs, r_c, r_r)
    return out
