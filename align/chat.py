"""Prompt and answer token ids through the tokenizer's chat template.

The prompt is rendered with ``add_generation_prompt`` and the answer is tokenized on its own
and closed with EOS, so the boundary between the two is exact and the same in SFT, sampling
and reward scoring.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a one-turn user prompt followed by the opening of the assistant turn."""
    return list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


def answer_ids(tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
    """Token ids of an answer, ending with EOS."""
    return tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
