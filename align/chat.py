"""Prompt and answer token ids through the tokenizer's chat template.

The prompt is rendered with ``add_generation_prompt`` and the answer is tokenized on its own
and closed with EOS, so the boundary between the two is exact and the same in SFT, sampling
and reward scoring. ``pad`` makes a batch of them: left-padded for generation (every answer
starts at the same column), right-padded for training and scoring.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


_PROMPTS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], tuple[int, ...]]] = weakref.WeakKeyDictionary()
_PROMPT_CACHE_SIZE = 200_000  # prompts remembered per tokenizer


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a one-turn user prompt followed by the opening of the assistant turn.

    Remembered per tokenizer and chat template: a prompt is rendered once, not once per sample, reward
    model and PPO iteration (the template's rendering costs more than the model on a tiny policy)."""
    seen = _PROMPTS.setdefault(tokenizer, {})
    key = (str(tokenizer.chat_template), prompt)  # a template may be a dict of named templates
    ids = seen.get(key)
    if ids is None:
        if len(seen) >= _PROMPT_CACHE_SIZE:
            seen.clear()
        ids = seen[key] = tuple(tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                              add_generation_prompt=True, tokenize=True,
                                                              return_dict=False))
    return list(ids)


def answer_ids(tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
    """Token ids of an answer, ending with EOS."""
    return tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def pad(rows: Sequence[Sequence[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, T)`` token ids padded with ``pad_id`` on the left or the right, and the attention mask
    (1 on real tokens)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span], mask[i, span] = torch.tensor(list(r), dtype=torch.long), 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a padded batch: counted from each row's first real token (0 on left padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
