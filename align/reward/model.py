"""A reward model: a Hugging Face sequence classifier with one output, and batched scoring.

A causal LM checkpoint (the SFT policy, the paper's choice) gets a new scalar head read at the last
token (and, with the ``loglik`` head, the answer's mean log-likelihood beside it: ``align.reward.head``);
an encoder (MiniLM) reads its [CLS] token. Scores are raw rewards ``r(x, y)``; the gate reads
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
from align.reward.data import answer_mask, encode_with_answer_len
from align.reward.head import load_head, sequence_rewards

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
    load_head(model, path)
    return model, tokenizer


@torch.no_grad()
def score(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
          responses: Sequence[str], *, max_seq_len: int, batch_size: int) -> np.ndarray:
    """Raw rewards ``r(x, y)`` of each (prompt, response), batched by length; ``sigmoid`` gives [0, 1]."""
    model.eval()
    device = next(model.parameters()).device
    encoded = [encode_with_answer_len(tokenizer, p, r, max_seq_len) for p, r in zip(prompts, responses)]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out = np.zeros(len(encoded), dtype=np.float64)
    for start in batches(len(order), batch_size, desc="scoring"):
        idx = order[start:start + batch_size]
        seqs = [encoded[i][0] for i in idx]
        batch, mask = pad(seqs, tokenizer.pad_token_id, left=False)
        answers = answer_mask([len(s) for s in seqs], [encoded[i][1] for i in idx], batch.shape[1])
        rewards = sequence_rewards(model, batch.to(device), mask.to(device), answers.to(device)).cpu()
        out[idx] = rewards.numpy()
    return out

