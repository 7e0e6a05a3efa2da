"""Training and scoring a reward model (Llama 2 section 3.2.2).

A reward model is a Hugging Face sequence-classification model with one output, initialised
from the SFT checkpoint (the paper's choice: the RM knows what the policy knows) or any local
model (a MiniLM encoder, say). Each step scores the B chosen and B rejected responses of a batch
in one forward pass of 2B sequences. Scores are read through a sigmoid where a probability is
needed (the gate).

Steps per batch: 1. forward on chosen + rejected; 2. ranking loss with margin, plus the optional
safety sign term, centering and LM regularisation (GRM, ``lm_reg``); 3. backward, clip, step; 4. log.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from align.config import ModelConfig, RewardModelConfig, TrackingConfig
from align.errors import AlignError
from align.models import DTYPES, load_tokenizer, require_safetensors
from align.records import PreferencePair
from align.reward.data import EncodedPair, chosen_answer_mask, collate_pairs, encode, encode_pairs
from align.reward.lm_reg import LMRegularizer
from align.reward.loss import centering_loss, margins_for, ranking_loss, safety_sign_loss
from align.reward.metrics import preference_metrics, unsafe_detection_metrics
from align.training import StepLog, adamw_cosine, length_grouped_batches, make_accelerator

MIN_WARMUP_STEPS = 5  # Llama 2: "warm-up of 3% of the total number of steps, with a minimum of 5"


@dataclass(frozen=True)
class RewardTrainResult:
    steps: int
    first_loss: float
    final_loss: float
    train_accuracy: float
    train_seconds: float
    pairs: int
    tokens: int  # token positions processed in training forwards, padding included (for FLOP/s)


def load_reward_model(path: str | Path, model_cfg: ModelConfig | None = None,
                      ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A one-output sequence classifier from a local checkpoint (a causal LM gets a new scalar head)."""
    model_cfg = model_cfg or ModelConfig()
    path = Path(path)
    require_safetensors(path)
    tokenizer = load_tokenizer(path, trust_remote_code=model_cfg.trust_remote_code)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a new scalar head is expected: no "missing score.weight" report
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, local_files_only=True, use_safetensors=True, dtype=DTYPES[model_cfg.dtype],
            trust_remote_code=model_cfg.trust_remote_code)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-pad token
    return model, tokenizer


def _forward_pairs(model: PreTrainedModel, inputs: dict[str, torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B,)`` rewards of the chosen and the rejected responses, from one forward of 2B sequences."""
    rewards = model(**inputs).logits[:, 0].float()  # (2B,)
    return rewards[:n], rewards[n:]


def reward_loss(r_c: torch.Tensor, r_r: torch.Tensor, batch: Sequence[EncodedPair],
                cfg: RewardModelConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Ranking loss with the configured margin, plus the weighted safety sign and centering terms."""
    rank = ranking_loss(r_c, r_r, margins_for([e.rating for e in batch], cfg.margin).to(r_c.device))
    total, parts = rank, {"losses/ranking": rank.item()}
    if cfg.safety_aux_weight:
        rewards, labels = [], []
        for i, e in enumerate(batch):
            for safe, r in ((e.chosen_safe, r_c[i]), (e.rejected_safe, r_r[i])):
                if safe is not None:
                    rewards.append(r)
                    labels.append(safe)
        if rewards:
            aux = safety_sign_loss(torch.stack(rewards), torch.tensor(labels, device=r_c.device))
            total = total + cfg.safety_aux_weight * aux
            parts["losses/safety_aux"] = aux.item()
    if cfg.center_weight:
        center = centering_loss(r_c, r_r)
        total = total + cfg.center_weight * center
        parts["losses/centering"] = center.item()
    return total, parts


def train_reward_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PreferencePair],
                       cfg: RewardModelConfig, *, seed: int, metrics_path: Path | None = None,
                       tracking: TrackingConfig | None = None, tracking_dir: Path | None = None,
                       init_dir: Path | None = None) -> RewardTrainResult:
    """Train ``model`` in place on preference pairs; returns a RewardTrainResult. ``init_dir`` (the
    checkpoint the model was loaded from) supplies an untied LM head when ``cfg.lm_coef > 0``."""
    set_seed(seed)
    encoded = encode_pairs(tokenizer, pairs, cfg.max_seq_len)
    if not encoded:
        raise AlignError("no preference pairs to train the reward model on")
    rng = random.Random(f"rm:{seed}")
    lengths = [max(len(e.chosen), len(e.rejected)) for e in encoded]
    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    warmup = min(max(MIN_WARMUP_STEPS, int(cfg.warmup_ratio * total)), total // 2)

    accelerator = make_accelerator(tracking, tracking_dir)
    log = StepLog(accelerator, metrics_path, project=tracking.project if tracking else None, config=cfg.model_dump())
    if cfg.lm_coef > 0 and tokenizer.cls_token_id is not None:
        raise AlignError(f"lm_coef > 0 needs a causal LM reward model; {type(model).__name__} reads a [CLS] token "
                         "(an encoder has no next-token head: set lm_coef: 0)")
    reg = LMRegularizer(model, init_dir) if cfg.lm_coef > 0 else None
    params = [p for p in model.parameters() if p.requires_grad] + (reg.new_params if reg else [])
    optimizer, scheduler = adamw_cosine(params, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=warmup,
                                        total_steps=total, min_lr_ratio=cfg.min_lr_ratio)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    losses, hits, seen, tokens = [], 0, 0, 0
    batches: list[list[int]] = []
    bar = tqdm(range(total), desc="rm", disable=None)
    for step in bar:
        if not batches:
            batches = length_grouped_batches(lengths, cfg.batch_size, rng)
        batch = [encoded[i] for i in batches.pop()]
        tokens += 2 * len(batch) * max(max(len(e.chosen), len(e.rejected)) for e in batch)
        inputs = {k: v.to(accelerator.device) for k, v in collate_pairs(batch, tokenizer.pad_token_id).items()}
        r_c, r_r = _forward_pairs(model, inputs, len(batch))  # 1
        loss, parts = reward_loss(r_c, r_r, batch, cfg)  # 2
        if reg:  # GRM: keep predicting the chosen answers through the LM head
            lm = reg.loss(inputs["input_ids"], chosen_answer_mask(batch, inputs["input_ids"].shape[1]).to(r_c.device))
            loss = loss + cfg.lm_coef * lm
            parts["losses/lm"] = lm.item()
        accelerator.backward(loss)  # 3
        grad_norm = accelerator.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # 4
        hits += int((r_c > r_r).sum())
        seen += len(batch)
        if step % cfg.log_every == 0 or step == total - 1:
            log.write(step + 1, {"losses/total": round(losses[-1], 5), **{k: round(v, 5) for k, v in parts.items()},
                                 "charts/accuracy": round(hits / seen, 4), "charts/lr": scheduler.get_last_lr()[0],
                                 "charts/grad_norm": round(float(grad_norm), 4)})
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    log.close()
    if reg:
        reg.remove()
    tail = losses[-max(1, len(losses) // 10):]
    return RewardTrainResult(steps=total, first_loss=losses[0], final_loss=sum(tail) / len(tail),
                             train_accuracy=hits / seen, train_seconds=log.elapsed, pairs=len(encoded), tokens=tokens)


@torch.no_grad()
def score(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
          responses: Sequence[str], *, max_seq_len: int = 128, batch_size: int = 128) -> np.ndarray:
    """Raw rewards ``r(x, y)`` of each (prompt, response), batched by length; ``sigmoid`` gives [0, 1]."""
    model.eval()
    device = next(model.parameters()).device
    ids = [encode(tokenizer, p, r, max_seq_len) for p, r in zip(prompts, responses)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros(len(ids), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(ids[i]) for i in idx)
        batch = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            batch[row, : len(ids[i])], mask[row, : len(ids[i])] = torch.tensor(ids[i]), 1
        rewards = model(input_ids=batch.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu()
        out[idx] = rewards.numpy()
    return out


def evaluate_reward_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                          eval_sets: dict[str, Sequence[PreferencePair]], *, max_seq_len: int,
                          batch_size: int) -> dict[str, Any]:
    """Preference metrics on each axis's held-out pairs, and unsafe-response detection where labelled."""
    out: dict[str, Any] = {}
    for axis, pairs in eval_sets.items():
        if not pairs:
            continue
        prompts = [p.prompt.text for p in pairs]
        r_c = score(model, tokenizer, prompts, [p.chosen for p in pairs], max_seq_len=max_seq_len,
                    batch_size=batch_size)
        r_r = score(model, tokenizer, prompts, [p.rejected for p in pairs], max_seq_len=max_seq_len,
                    batch_size=batch_size)
        out[axis] = preference_metrics(pairs, r_c, r_r) | unsafe_detection_metrics(pairs, r_c, r_r)
    return out
