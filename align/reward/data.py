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

from align.chat import answer_ids, pad, positions, prompt_ids
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
    shared_len: int = 0  # tokens at the start that chosen and rejected both read once (causal LMs; 0: none)
    rejected_answer_len: int = 0  # the same for ``rejected``


def shared_prefix_len(chosen: Sequence[int], rejected: Sequence[int], chosen_answer_len: int) -> int:
    """How many leading tokens ``chosen`` and ``rejected`` have in common (the prompt, and any common start
    of the answers), keeping at least one token of each and the whole chosen answer out of it."""
    limit = min(len(chosen) - max(1, chosen_answer_len), len(rejected) - 1)
    n = 0
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    return n


def encode_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PreferencePair], max_len: int) -> list[EncodedPair]:
    causal = tokenizer.cls_token_id is None  # an encoder reads the whole text both ways: nothing to share
    out = []
    for p in pairs:
        chosen, answer_len = encode_with_answer_len(tokenizer, p.prompt.text, p.chosen, max_len)
        rejected, rejected_len = encode_with_answer_len(tokenizer, p.prompt.text, p.rejected, max_len)
        shared = shared_prefix_len(chosen, rejected, answer_len) if causal else 0
        out.append(EncodedPair(chosen, rejected, p.rating, p.chosen_safe, p.rejected_safe, answer_len, shared,
                               rejected_len))
    return out


def collate_pairs(batch: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``(2B, T)`` ids: the B chosen responses, then the B rejected ones, with ``answers``, the
    ``(2B, T)`` mask of their answer tokens."""
    seqs = [e.chosen for e in batch] + [e.rejected for e in batch]
    ids, mask = pad(seqs, pad_id, left=False)
    answers = answer_mask([len(s) for s in seqs], [e.chosen_answer_len for e in batch]
                          + [e.rejected_answer_len for e in batch], ids.shape[1])
    return {"input_ids": ids, "attention_mask": mask, "answers": answers}


def shared_layout_tokens(batch: Sequence[EncodedPair]) -> int:
    """Token positions ``collate_shared_prefix`` would lay out: the B prefixes and the 2B suffixes, padded."""
    return len(batch) * (max(e.shared_len for e in batch)
                         + 2 * max(max(len(e.chosen), len(e.rejected)) - e.shared_len for e in batch))


def collate_shared_prefix(batch: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor] | None:
    """The batch as one shared prefix per pair and two suffixes, for a causal LM: the prefix forward fills
    a KV cache that the pair's chosen and rejected suffixes both continue from, so the prompt is read once.

    ``prefix_*`` are ``(B, P)``, left-padded (every prefix ends at the same column), with positions
    counted from each row's first token; ``suffix_ids`` are ``(2B, S)``, right-padded and interleaved
    (chosen 0, rejected 0, chosen 1, ...), their ``suffix_mask`` ``(2B, P + S)`` covers cache and suffix,
    their positions continue each prefix. The score is read at the suffix's last non-pad token, as the
    whole sequence's would be. ``chosen_answer`` is ``(B, S)``: the chosen answer's tokens in its suffix.
    None when a pair shares nothing or a suffix is padding only (the plain layout then).
    """
    shared = [e.shared_len for e in batch]
    suffixes = [seq[n:] for e, n in zip(batch, shared) for seq in (e.chosen, e.rejected)]
    if min(shared) < 1 or any(all(t == pad_id for t in s) for s in suffixes):
        return None
    prefix_ids, prefix_mask = pad([e.chosen[:n] for e, n in zip(batch, shared)], pad_id, left=True)
    suffix_ids, suffix_mask = pad(suffixes, pad_id, left=False)
    width = suffix_ids.shape[1]
    answer = torch.zeros((len(batch), width), dtype=torch.bool)
    for i, (e, n) in enumerate(zip(batch, shared)):
        answer[i, len(e.chosen) - n - e.chosen_answer_len: len(e.chosen) - n] = True
    return {"prefix_ids": prefix_ids, "prefix_mask": prefix_mask,
            "prefix_positions": positions(prefix_mask),
            "suffix_ids": suffix_ids, "suffix_mask": torch.cat([prefix_mask.repeat_interleave(2, 0), suffix_mask], 1),
            "suffix_positions": torch.tensor(shared).repeat_interleave(2)[:, None] + torch.arange(width),
            "chosen_answer": answer}


def answer_mask(lengths: list[int], answer_lens: list[int], width: int) -> torch.Tensor:
    """``(N, width)`` bool: each right-padded row's last ``answer_lens[i]`` tokens of its ``lengths[i]``."""
    mask = torch.zeros((len(lengths), width), dtype=torch.bool)
    for i, (n, a) in enumerate(zip(lengths, answer_lens)):
        mask[i, n - a: n] = True
    return mask


def chosen_answer_mask(batch: Sequence[EncodedPair], width: int) -> torch.Tensor:
    """``(B, width)`` bool: the answer tokens of each chosen sequence as ``collate_pairs`` lays it out."""
    return answer_mask([len(e.chosen) for e in batch], [e.chosen_answer_len for e in batch], width)
