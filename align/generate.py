"""Batched sampling of answers from a causal LM.

Prompts are rendered with the chat template, sorted by length so a batch carries little
padding, left-padded, and sampled with temperature and top-p until EOS or ``max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from align.chat import prompt_ids


@dataclass(frozen=True)
class Completion:
    """One sampled answer: its text, whether it ended with EOS, and its token count."""

    text: str
    finished: bool
    num_tokens: int


@torch.no_grad()
def sample_completions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *,
                       temperature: float, top_p: float, max_new_tokens: int, batch_size: int,
                       seed: int) -> list[Completion]:
    """One answer per prompt, in the order of ``prompts``. ``temperature == 0`` is greedy."""
    torch.manual_seed(seed)
    model.eval()
    device = next(model.parameters()).device
    ids = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    gen = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
        top_p=top_p if temperature > 0 else None, top_k=None, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    out: list[Completion | None] = [None] * len(ids)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(ids[i]) for i in idx)
        input_ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):  # left padding: the answer starts at the same column
            input_ids[row, width - len(ids[i]):] = torch.tensor(ids[i])
            mask[row, width - len(ids[i]):] = 1
        seqs = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=gen)
        for row, i in enumerate(idx):
            new = seqs[row, width:].tolist()
            finished = tokenizer.eos_token_id in new
            if finished:
                new = new[: new.index(tokenizer.eos_token_id)]
            text = tokenizer.decode(new, skip_special_tokens=True).strip()
            out[i] = Completion(text=text, finished=finished, num_tokens=len(new))
    return out  # type: ignore[return-value]
