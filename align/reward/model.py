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

from align.chat import pad
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
    """Raw rewards ``r(x, y)`` of each (prompt, response), batched by length; ``sigmoid`` gives [0, 1]."""
    model.eval()
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

