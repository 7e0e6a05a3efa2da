"""A reward model: a Hugging Face sequence classifier with one output, and batched scoring.

A causal LM checkpoint (the SFT policy, the paper's choice) gets a new scalar head read at the last
token; an encoder (MiniLM) reads its [CLS] token. Scores are raw rewards ``r(x, y)``; the gate reads
them through a sigmoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
import torch

from align.chat import answer_ids, pad, prompt_ids
from align.config import ModelConfig
from align.models import DTYPES, load_tokenizer, require_safetensors
from align.progress import batches
from align.reward.data import encode

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_reward_model(path: str | Path, model_cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A one-output sequence classifier from a local checkpoint (a causal LM gets a new scalar head)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

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


@torch.no_grad()
def score(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
          responses: Sequence[str], *, max_seq_len: int, batch_size: int) -> np.ndarray:
    """Raw rewards ``r(x, y)`` of each (prompt, response), batched by length; ``sigmoid`` gives [0, 1].

    A causal LM reads a prompt that several responses share once (``_score_shared``: its KV cache is
    repeated for them), the rest one full sequence each."""
    model.eval()
    out = np.zeros(len(prompts), dtype=np.float64)
    rest = list(range(len(prompts)))
    if tokenizer.cls_token_id is None and len(set(prompts)) < len(prompts):
        rest = _score_shared(model, tokenizer, prompts, responses, max_seq_len, batch_size, out)
    if rest:
        out[rest] = _score_full(model, tokenizer, [prompts[i] for i in rest], [responses[i] for i in rest],
                                max_seq_len, batch_size)
    return out


@torch.no_grad()
def _score_full(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                responses: Sequence[str], max_seq_len: int, batch_size: int) -> np.ndarray:
    device = next(model.parameters()).device
    ids = [encode(tokenizer, p, r, max_seq_len) for p, r in zip(prompts, responses)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros(len(ids), dtype=np.float64)
    for start in batches(len(order), batch_size, desc="scoring"):
        idx = order[start:start + batch_size]
        batch, mask = pad([ids[i] for i in idx], tokenizer.pad_token_id, left=False)
        rewards = model(input_ids=batch.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu()
        out[idx] = rewards.numpy()
    return out


def _score_shared(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                  responses: Sequence[str], max_seq_len: int, batch_size: int, out: np.ndarray) -> list[int]:
    """Score, into ``out``, the responses whose prompt is read once for all of them: a batch of distinct
    prompts (left-padded) fills a KV cache, each row repeated for its responses, which continue from it
    (right-padded, positions after their prompt's). The score is read at each response's last non-pad
    token, as in the full sequence. Returns the indices left to ``_score_full``: sequences longer than
    ``max_seq_len`` (cut from the left there), empty prompts and answers made of pad tokens only."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    prompt_tokens = {p: prompt_ids(tokenizer, p) for p in dict.fromkeys(prompts)}
    answers = [answer_ids(tokenizer, r) for r in responses]
    groups: dict[str, list[int]] = {}
    rest = []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        if 0 < len(prompt_tokens[p]) and len(prompt_tokens[p]) + len(a) <= max_seq_len and any(t != pad_id for t in a):
            groups.setdefault(p, []).append(i)
        else:
            rest.append(i)
    order = sorted(groups, key=lambda p: (len(prompt_tokens[p]), max(len(answers[i]) for i in groups[p])))
    chunks, chunk, size = [], [], 0
    for p in order:  # whole groups per batch, about batch_size responses each
        if chunk and size + len(groups[p]) > batch_size:
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(p)
        size += len(groups[p])
    if chunk:
        chunks.append(chunk)
    for chunk in chunks:
        prefix, prefix_mask = pad([prompt_tokens[p] for p in chunk], pad_id, left=True)
        cache = model(input_ids=prefix.to(device), attention_mask=prefix_mask.to(device),
                      position_ids=(prefix_mask.cumsum(1) - 1).clamp(min=0).to(device), use_cache=True).cache
        rows = torch.tensor([j for j, p in enumerate(chunk) for _ in groups[p]])
        cache.batch_select_indices(rows.to(device))
        idx = [i for p in chunk for i in groups[p]]
        suffix, suffix_mask = pad([answers[i] for i in idx], pad_id, left=False)
        starts = torch.tensor([len(prompt_tokens[p]) for p in chunk])[rows]
        attention = torch.cat([prefix_mask[rows], suffix_mask], 1)
        rewards = model(input_ids=suffix.to(device), attention_mask=attention.to(device),
                        position_ids=(starts[:, None] + torch.arange(suffix.shape[1])).to(device), cache=cache,
                        use_cache=True).logits[:, 0].float().cpu()
        out[idx] = rewards.numpy()
    return rest
