"""Reward-model data: the paper's mixing of helpfulness and safety pairs, and batching of chosen
and rejected responses into one forward pass.

Llama 2 section 3.2.2: the helpfulness RM trains on all helpfulness data plus an equal part
sampled from the safety data; the safety RM on all safety data with helpfulness data making up
10% of the mix (90/10), which helps on pairs where both responses are safe.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from align.chat import answer_ids, pad, prompt_ids
from align.errors import AlignError
from align.records import PreferencePair

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class SourcePairs:
    """The pairs of the configured sources, split train/eval per source, grouped by axis."""

    train: dict[str, list[PreferencePair]]
    eval: dict[str, list[PreferencePair]]
    report: dict[str, dict]  # per source: rows read, kept, dropped by reason, train/eval counts


def load_pair_sources(sources: Sequence, *, eval_fraction: float, seed: int) -> SourcePairs:
    """Read each ``PairSource`` through its data spec, shuffle it with the seed, and hold out
    ``eval_fraction`` of it; the pairs' axis is the spec's."""
    from align.data import load_pairs, load_spec

    train: dict[str, list[PreferencePair]] = {"helpfulness": [], "safety": []}
    held: dict[str, list[PreferencePair]] = {"helpfulness": [], "safety": []}
    report: dict[str, dict] = {}
    for i, src in enumerate(sources):
        spec = load_spec(src.spec)
        if spec.axis is None:
            raise AlignError(f"{src.spec}: a reward-model source needs an axis (helpfulness or safety)")
        if src.path is None and spec.hub is None:
            raise AlignError(f"{src.spec}: give the source a path (the spec names no hub dataset)")
        pairs, rep = load_pairs(spec, Path(src.path) if src.path else None)
        random.Random(f"rm-split:{seed}:{i}").shuffle(pairs)
        pairs = pairs[: src.limit]
        cut = len(pairs) - (max(1, round(eval_fraction * len(pairs))) if eval_fraction > 0 else 0)
        if cut < 1:
            raise AlignError(f"{src.path or spec.hub}: {len(pairs)} pair(s) cannot be split into train and eval")
        train[spec.axis] += pairs[:cut]
        held[spec.axis] += pairs[cut:]
        report[spec.name] = {"axis": spec.axis, "rows": rep.rows, "kept": rep.kept, "dropped": dict(rep.dropped),
                             "train": cut, "eval": len(pairs) - cut}
    return SourcePairs(train, held, report)


def mix_pairs(own: Sequence[PreferencePair], other: Sequence[PreferencePair], *, other_share: float,
              rng: random.Random) -> list[PreferencePair]:
    """All of ``own`` plus pairs sampled from ``other`` so they are ``other_share`` of the mix.

    ``other_share = 0.5`` is the helpfulness RM's "equal part"; ``0.1`` is the safety RM's 90/10.
    Sampling is without replacement while ``other`` lasts, then with replacement.
    """
    if not own:
        raise AlignError("no preference pairs on the reward model's own axis")
    if not 0 <= other_share < 1:
        raise AlignError(f"other_share must be in [0, 1), got {other_share}")
    n_other = round(len(own) * other_share / (1 - other_share))
    if n_other and not other:
        raise AlignError(f"the mix asks for {n_other} pairs of the other axis, and there are none "
                         "(add a source of that axis, or set other_axis_share: 0)")
    pool = list(other)
    rng.shuffle(pool)
    sampled = pool[:n_other] + [rng.choice(pool) for _ in range(max(0, n_other - len(pool)))]
    mixed = list(own) + sampled
    rng.shuffle(mixed)
    return mixed


def encode(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, max_len: int) -> list[int]:
    """Token ids a reward model reads for (prompt, response).

    Causal LMs read the chat format, answer ended by EOS (the score is read at the last token).
    Encoders with a [CLS] token (BERT, MiniLM) read the text pair with their special tokens,
    the longer of the two cut first when the pair is too long.
    """
    return encode_with_answer_len(tokenizer, prompt, response, max_len)[0]


def encode_with_answer_len(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str,
                           max_len: int) -> tuple[list[int], int]:
    """``encode``'s ids and how many of them, at the end, are the answer and its EOS (0 for encoders)."""
    if tokenizer.cls_token_id is not None:
        return tokenizer(prompt, response, truncation="longest_first", max_length=max_len)["input_ids"], 0
    answer = answer_ids(tokenizer, response)
    ids = (prompt_ids(tokenizer, prompt) + answer)[-max_len:]  # keep the end: the score is read at the final token
    return ids, min(len(answer), len(ids))


@dataclass(frozen=True)
class EncodedPair:
    chosen: list[int]
    rejected: list[int]
    rating: str
    chosen_safe: bool | None
    rejected_safe: bool | None
    chosen_answer_len: int = 0  # answer tokens (EOS included) at the end of ``chosen``; 0 for encoders


def encode_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PreferencePair], max_len: int) -> list[EncodedPair]:
    out = []
    for p in pairs:
        chosen, answer_len = encode_with_answer_len(tokenizer, p.prompt.text, p.chosen, max_len)
        out.append(EncodedPair(chosen, encode(tokenizer, p.prompt.text, p.rejected, max_len), p.rating,
                               p.chosen_safe, p.rejected_safe, answer_len))
    return out


def collate_pairs(batch: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``(2B, T)`` ids: the B chosen responses, then the B rejected ones."""
    ids, mask = pad([e.chosen for e in batch] + [e.rejected for e in batch], pad_id, left=False)
    return {"input_ids": ids, "attention_mask": mask}


def chosen_answer_mask(batch: Sequence[EncodedPair], width: int) -> torch.Tensor:
    """``(B, width)`` bool: the answer tokens of each chosen sequence as ``collate_pairs`` lays it out."""
    mask = torch.zeros((len(batch), width), dtype=torch.bool)
    for i, e in enumerate(batch):
        mask[i, len(e.chosen) - e.chosen_answer_len: len(e.chosen)] = True
    return mask
