"""Batched sampling of answers from a causal LM.

Prompts are rendered with the chat template, sorted by length so a batch carries little
padding, left-padded, and sampled with temperature and top-p until EOS or ``max_new_tokens``.

``sample_k`` draws K answers per prompt and computes each prompt's forward pass once: the
prompts (all but their last token) fill a KV cache, the cache is repeated K times, and
``generate`` continues from it (Hugging Face's prefix-cache reuse), so the K samples share the
prompt's work. It returns token ids and their log-probabilities under the model (temperature 1,
before top-p): what KL estimates and PPO need.

Batches are drawn in a fixed order, each with its own seed (``distributed.batch_seed``): under a
multi-process launch each process samples its share of the batches and every process gets all the
answers back in prompt order, the same answers one process draws.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from align import distributed, vllm_backend
from align.chat import answer_ids, pad, positions, prompt_ids
from align.errors import AlignError
from align.progress import bar
from align.records import distinct

T = TypeVar("T")

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase


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
    device, ids = _start(model, tokenizer, prompts)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    gen = _generation_config(tokenizer, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    done: list[tuple[int, list[tuple[int, Completion]]]] = []
    for b, idx in _my_batches(order, batch_size, seed, desc="sampling"):
        input_ids, mask = pad([ids[i] for i in idx], tokenizer.pad_token_id, left=True)
        width = input_ids.shape[1]
        seqs = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=gen)
        batch = []
        for row, i in enumerate(idx):
            new = seqs[row, width:].tolist()
            finished = tokenizer.eos_token_id in new
            if finished:
                new = new[: new.index(tokenizer.eos_token_id)]
            text = tokenizer.decode(new, skip_special_tokens=True).strip()
            batch.append((i, Completion(text=text, finished=finished, num_tokens=len(new))))
        done.append((b, batch))
    out: list[Completion | None] = [None] * len(ids)
    for batch in _gathered(done, order, batch_size, seed):
        for i, completion in batch:
            out[i] = completion
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Sample:
    """One of the K answers to a prompt: text, token ids (EOS included when it ended), and the
    log-probability of each token under the model."""

    prompt_index: int
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finished: bool
    sampling_logprobs: list[float] | None = None  # under the distribution drawn from (logits / temperature);
    #                                                None at temperature 0 or top-p < 1 (a truncated distribution)

    @property
    def logprob(self) -> float:
        return math.fsum(self.logprobs)


def _start(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
           prompts: Sequence[str]) -> tuple[torch.device, list[list[int]]]:
    """Put the model in eval mode; the model's device and each prompt's ids."""
    model.eval()
    return next(model.parameters()).device, [prompt_ids(tokenizer, p) for p in prompts]


def _my_batches(order: list[int], batch_size: int, seed: int, *, desc: str) -> Iterator[tuple[int, list[int]]]:
    """This process's share of the batches of ``order`` (``distributed.shard``): ``(b, prompt indices)``, the
    global torch generator seeded with ``batch_seed(seed, b)`` before each, so a batch draws the same tokens
    whichever process runs it and however many there are."""
    for b, idx in bar(distributed.my_batches(order, batch_size), desc=desc):
        torch.manual_seed(distributed.batch_seed(seed, b))
        yield b, idx


def _gathered(done: list[tuple[int, T]], order: list[int], batch_size: int, seed: int) -> list[T]:
    """Every process's batches, in batch order; the torch generator left in the same state on every process."""
    out = distributed.gather_batches(done)
    torch.manual_seed(distributed.batch_seed(seed, math.ceil(len(order) / batch_size)))
    return out


def _generation_config(tokenizer: PreTrainedTokenizerBase, *, temperature: float, top_p: float, max_new_tokens: int,
                       **extra: bool) -> GenerationConfig:
    """Sampling at ``temperature`` with nucleus ``top_p`` (greedy at 0), no top-k, stopping at EOS."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
        top_p=top_p if temperature > 0 else None, top_k=None, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, **extra)


@torch.no_grad()
def sample_k(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *, k: int,
             temperature: float, top_p: float, max_new_tokens: int, batch_size: int, seed: int,
             max_prompt_tokens: int | None = None, long_prompts: str = "error") -> list[list[Sample]]:
    """K answers per prompt (``out[i]`` holds prompt i's), sharing each prompt's forward pass.

    ``batch_size`` counts prompts; a batch runs ``batch_size * k`` sequences. Prompts are grouped
    by length. A prompt longer than ``max_prompt_tokens`` raises an error naming it
    (``long_prompts="error"``) or keeps its last ``max_prompt_tokens`` tokens, with a warning
    (``"truncate"``).
    """
    if k < 1:
        raise AlignError(f"k must be at least 1, got {k}")
    if not prompts:
        raise AlignError("the prompt set is empty")
    device, ids = _start(model, tokenizer, prompts)
    if max_prompt_tokens is not None:
        long = [i for i, row in enumerate(ids) if len(row) > max_prompt_tokens]
        if long and long_prompts == "error":
            i = long[0]
            raise AlignError(f"prompt {i} is {len(ids[i])} tokens, longer than max_prompt_tokens="
                             f"{max_prompt_tokens} ({len(long)} such prompts): {prompts[i][:60]!r}; set "
                             "long_prompts: truncate to keep their last tokens")
        if long:
            warnings.warn(f"{len(long)} prompt(s) longer than {max_prompt_tokens} tokens: keeping their last "
                          f"{max_prompt_tokens} tokens", stacklevel=2)
            for i in long:
                ids[i] = ids[i][-max_prompt_tokens:]
    engine = vllm_backend.active()
    if engine is not None:  # generation.backend: vllm
        return vllm_backend.sample_k(model, tokenizer, ids, engine, k=k, temperature=temperature, top_p=top_p,
                                     max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    eos = tokenizer.eos_token_id
    done: list[tuple[int, list[Sample]]] = []
    for b, idx in _my_batches(order, batch_size, seed, desc=f"sampling {k} per prompt"):
        input_ids, mask = pad([ids[i] for i in idx], tokenizer.pad_token_id, left=True)
        input_ids, mask = input_ids.to(device), mask.to(device)
        cache = growing_cache(model)
        if input_ids.shape[1] > 1:  # the prompt's forward pass, once: all but the last token
            model(input_ids=input_ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions(mask[:, :-1]),
                  cache=cache, use_cache=True)
            cache.batch_repeat_interleave(k)
        tokens, logprobs, tempered = decode(model, input_ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0),
                                            cache, max_new_tokens=max_new_tokens, temperature=temperature,
                                            top_p=top_p, eos=eos)
        batch = []
        for row, (toks, lps) in enumerate(zip(tokens, logprobs)):
            finished = bool(toks) and toks[-1] == eos
            text_ids = toks[:-1] if finished else toks
            text = tokenizer.decode(text_ids, skip_special_tokens=True).strip()
            batch.append(Sample(prompt_index=idx[row // k], text=text, token_ids=toks, logprobs=lps, finished=finished,
                                sampling_logprobs=tempered[row] if tempered else None))
        done.append((b, batch))
    out: list[list[Sample]] = [[] for _ in ids]
    for batch in _gathered(done, order, batch_size, seed):
        for sample in batch:
            out[sample.prompt_index].append(sample)
    return out


def growing_cache(model: PreTrainedModel) -> Any:
    """A ``DynamicCache`` whose full-attention layers keep their keys and values in buffers with room to
    grow: a step writes its key and value into the buffer instead of ``torch.cat``-ing the whole cache
    (a third of a tiny model's step). The cached values, and so every logit, are the same."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        buffers: tuple[torch.Tensor, torch.Tensor] | None = None

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n, add = self.get_seq_length(), key_states.shape[-2]
            held = self.buffers is not None and self.keys.numel() and self.keys.data_ptr() == self.buffers[0].data_ptr()
            if not held or n + add > self.buffers[0].shape[-2]:  # a new batch (selected, repeated) or a full buffer
                shape = (*key_states.shape[:2], max(2 * (n + add), 64), key_states.shape[-1])
                self.buffers = (key_states.new_empty(shape), value_states.new_empty(shape))
                if n:
                    self.buffers[0][:, :, :n] = self.keys
                    self.buffers[1][:, :, :n] = self.values
            self.buffers[0][:, :, n:n + add] = key_states
            self.buffers[1][:, :, n:n + add] = value_states
            self.keys, self.values = self.buffers[0][:, :, :n + add], self.buffers[1][:, :, :n + add]
            return self.keys, self.values

    cache = DynamicCache(config=model.config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def next_token(logits: torch.Tensor, *, temperature: float, top_p: float) -> torch.Tensor:
    """One token per row from ``logits`` (N, V): greedy at temperature 0, else sampled from
    softmax(logits / temperature) restricted to the top-p nucleus, as ``generate``'s temperature and
    top-p warpers do (the smallest set of tokens whose probability reaches ``top_p``; the most
    likely token always stays), drawing from torch's global generator."""
    if temperature == 0:
        return logits.argmax(-1)
    scores = logits / temperature
    if top_p < 1:
        sorted_scores, order = scores.sort(-1)
        drop = sorted_scores.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[:, -1] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(scores.softmax(-1), 1).squeeze(1)


@torch.no_grad()
def decode(model: PreTrainedModel, input_ids: torch.Tensor, mask: torch.Tensor, cache: Any, *,
           max_new_tokens: int, temperature: float, top_p: float,
           eos: int | None) -> tuple[list[list[int]], list[list[float]], list[list[float]] | None]:
    """Sample up to ``max_new_tokens`` after left-padded ``input_ids`` (N, L) whose ``cache`` holds all but
    their last token: each row's tokens (ending with ``eos`` when it finished), their log-probabilities under
    the model (before temperature), and under the distribution they were drawn from (logits / temperature: what
    PPO's ratio starts from; None at temperature 0 or with top-p < 1). A row that draws ``eos`` leaves the batch
    and its cache: the steps that remain run on the unfinished rows only. One forward per step, no other
    per-step work but the draw."""
    n = input_ids.shape[0]
    rows = torch.arange(n, device=input_ids.device)  # the original rows still running
    tokens = torch.zeros(n, max_new_tokens, dtype=torch.long, device=input_ids.device)
    logprobs = torch.zeros(n, max_new_tokens, device=input_ids.device)
    tempered = torch.zeros(n, max_new_tokens, device=input_ids.device) if temperature > 0 and top_p == 1 else None
    current, attention = input_ids[:, -1:], mask
    position = positions(mask)[:, -1:]
    for t in range(max_new_tokens):
        logits = model(input_ids=current, attention_mask=attention, position_ids=position, cache=cache,
                       use_cache=True).logits[:, -1].float()
        drawn = next_token(logits, temperature=temperature, top_p=top_p)
        tokens[rows, t] = drawn
        logprobs[rows, t] = logits.log_softmax(-1).gather(1, drawn[:, None]).squeeze(1)
        if tempered is not None:
            tempered[rows, t] = (logits / temperature).log_softmax(-1).gather(1, drawn[:, None]).squeeze(1)
        if eos is not None and t + 1 < max_new_tokens:
            done = drawn == eos
            if done.any():
                keep = (~done).nonzero().squeeze(1)
                if not len(keep):
                    break
                cache.batch_select_indices(keep)
                rows, drawn, attention, position = rows[keep], drawn[keep], attention[keep], position[keep]
        current = drawn[:, None]
        attention = torch.cat([attention, attention.new_ones(len(attention), 1)], 1)
        position = position + 1
    ended = tokens == eos if eos is not None else torch.zeros_like(tokens, dtype=torch.bool)
    lengths = torch.where(ended.any(1), ended.int().argmax(1) + 1, max_new_tokens).tolist()  # through the eos
    return ([row[:m] for row, m in zip(tokens.tolist(), lengths)],
            [row[:m] for row, m in zip(logprobs.tolist(), lengths)],
            [row[:m] for row, m in zip(tempered.tolist(), lengths)] if tempered is not None else None)


@torch.no_grad()
def sequence_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                      answers: Sequence[Sequence[int]], *, batch_size: int = 64) -> list[list[float]]:
    """Per-token log-probabilities of ``answers[i]`` (token ids) after prompt i, by teacher forcing:
    the reference model's side of a KL estimate."""
    model.eval()
    device = next(model.parameters()).device
    rows = [(prompt_ids(tokenizer, p), list(a)) for p, a in zip(prompts, answers)]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    out: list[list[float]] = [[] for _ in rows]
    for start in range(0, len(order), batch_size):
        idx = [i for i in order[start:start + batch_size] if rows[i][1]]
        if not idx:
            continue
        input_ids, mask = pad([rows[i][0] + rows[i][1] for i in idx], tokenizer.pad_token_id, left=True)
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                       position_ids=positions(mask).to(device)).logits.float()
        lp = logits[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        for row, i in enumerate(idx):
            n = len(rows[i][1])
            out[i] = lp[row, -n:].tolist()
    return out


def reference_logprobs(reference: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                       responses: Sequence[str], *, batch_size: int) -> list[float]:
    """``log pi_ref(y | x)`` of each response (its tokens and EOS, by teacher forcing from the text);
    a (prompt, response) that repeats is computed once."""
    first, where = distinct(list(zip(prompts, responses)))
    answers = [answer_ids(tokenizer, responses[i]) for i in first]
    logprobs = sequence_logprobs(reference, tokenizer, [prompts[i] for i in first], answers, batch_size=batch_size)
    return [math.fsum(logprobs[j]) for j in where]
