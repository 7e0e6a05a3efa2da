"""K = 8 samples per prompt: align's ``sample_k`` (one prompt forward shared by the K samples through a
repeated KV cache, then ``align.generate.decode``: one forward and one draw per step, finished rows
leaving the batch) against plain ``generate(num_return_sequences=K)`` (the prompt is expanded K
times before the forward), same model, prompts, K, temperature and token budget; ours and the peer
alternated, 3 repeats, medians.

- ``k_sampling/sandbox``: the sandbox's SFT policy (``runs/sandbox``'s 01-sft, built by ``make demo``
  or the ``reuse`` benchmark) on 256 of its RL prompts, up to 48 new tokens: answers end at EOS (about
  10 tokens), so a batch's finished rows leaving it is most of the gain. Throughput is the answers'
  tokens (through EOS) per second; the peer's padding after EOS is not counted.
- ``k_sampling/long_prompts``: a random tiny Llama with no EOS (every sample runs the full budget) on
  512-token prompts: the shared prompt forward, and the per-step cost when no row finishes.

The policy is the sandbox's tiny Llama shape (hidden 128, 4 layers) with random weights and
no EOS token so both sides generate exactly ``max_new_tokens`` per sample. Two prompt lengths:
the sandbox's own (short: sharing saves little) and long prompts (where the prompt dominates).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from align.chat import pad, prompt_ids
from align.generate import sample_k

ROOT = Path(__file__).parent.parent


class _Tok:
    """The few tokenizer methods ``sample_k`` uses, over raw ids (prompts are given as token ids)."""

    pad_token_id, eos_token_id, bos_token_id = 0, None, 2  # no EOS: every sample runs the full budget

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def _sandbox_case(model_dir: Path, world: Path, repeats: int, k: int = 8) -> dict[str, Any] | None:
    from align.models import load_causal_lm, load_tokenizer
    from align.sandbox.build import read_prompts

    if not (model_dir / "config.json").is_file():
        return None
    model, tok = load_causal_lm(model_dir), load_tokenizer(model_dir)
    prompts = [p.text for p in read_prompts(world, "rl")[:256]]
    gen = GenerationConfig(max_new_tokens=48, do_sample=True, temperature=1.0, top_k=None, top_p=None,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, num_return_sequences=k)
    ours, peer, ours_tokens, peer_tokens = [], [], 0, 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = sample_k(model, tok, prompts, k=k, temperature=1.0, top_p=1.0, max_new_tokens=48, batch_size=32, seed=0)
        ours.append(time.perf_counter() - t0)
        ours_tokens = sum(len(s.token_ids) for group in out for s in group)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        peer_tokens = 0
        with torch.no_grad():
            for start in range(0, len(prompts), 32):
                ids, mask = pad([prompt_ids(tok, p) for p in prompts[start:start + 32]], tok.pad_token_id, left=True)
                seqs = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1]:]
                ended = seqs == tok.eos_token_id
                peer_tokens += int(torch.where(ended.any(1), ended.int().argmax(1) + 1, seqs.shape[1]).sum())
        peer.append(time.perf_counter() - t0)
    o, p = statistics.median(ours), statistics.median(peer)
    return {"name": "k_sampling/sandbox", "ours": round(ours_tokens / o, 1), "peer": round(peer_tokens / p, 1),
            "ratio": round((ours_tokens / o) / (peer_tokens / p), 4),
            "unit": "answer tokens/s through EOS (higher is better); peer: generate(num_return_sequences=8)",
            "config": {"model": str(model_dir), "prompts": len(prompts), "k": k, "max_new_tokens": 48,
                       "prompt_batch": 32, "threads": torch.get_num_threads(), "repeats": repeats,
                       "ours_tokens": ours_tokens, "peer_tokens": peer_tokens,
                       "ours_s": [round(x, 2) for x in ours], "peer_s": [round(x, 2) for x in peer]}}


def _model(vocab: int = 512) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=384, max_position_embeddings=2048, pad_token_id=0,
                      eos_token_id=None, bos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def _ours(model, prompts: list[list[int]], k: int, new_tokens: int, batch: int) -> float:
    import align.generate as g

    original = g.prompt_ids
    g.prompt_ids = lambda _tok, ids: list(ids)  # prompts are token ids already
    try:
        t0 = time.perf_counter()
        sample_k(model, _Tok(), prompts, k=k, temperature=1.0, top_p=1.0, max_new_tokens=new_tokens,
                 batch_size=batch, seed=0)
        return time.perf_counter() - t0
    finally:
        g.prompt_ids = original


def _peer(model, prompts: list[list[int]], k: int, new_tokens: int, batch: int) -> float:
    gen = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, temperature=1.0,
                           top_k=None, top_p=None, pad_token_id=0, eos_token_id=None, num_return_sequences=k)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(prompts), batch):
            ids, mask = pad(prompts[start:start + batch], 0, left=True)
            model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
    return time.perf_counter() - t0


def run(*, quick: bool = False, repeats: int = 3, run_dir: Path = ROOT / "runs" / "sandbox") -> list[dict[str, Any]]:
    sandbox = _sandbox_case(run_dir / "rounds" / "01-sft" / "model", run_dir / "rounds" / "00-sandbox", repeats)
    out = [sandbox] if sandbox else []
    if sandbox is None:
        print(f"k_sampling/sandbox: skipped, no sandbox policy in {run_dir} (make demo builds it)")
    model = _model()
    rng = torch.Generator().manual_seed(0)
    k = 8
    for name, n_prompts, length, new_tokens, batch in (("long_prompts", 4 if quick else 16, 512, 32, 4),):
        prompts = [torch.randint(3, 512, (length + int(torch.randint(0, 8, (1,), generator=rng)),),
                                 generator=rng).tolist() for _ in range(n_prompts)]
        ours, peer = [], []
        for _ in range(repeats):
            ours.append(_ours(model, prompts, k, new_tokens, batch))
            peer.append(_peer(model, prompts, k, new_tokens, batch))
        tokens = n_prompts * k * new_tokens
        o, p = statistics.median(ours), statistics.median(peer)
        config = {"model": "tiny Llama, hidden 128, 4 layers, random weights, no EOS", "prompts": n_prompts,
                  "prompt_tokens": f"{length}-{length + 7}", "k": k, "new_tokens": new_tokens,
                  "prompt_batch": batch, "threads": torch.get_num_threads(), "repeats": repeats,
                  "ours_s": [round(x, 2) for x in ours], "peer_s": [round(x, 2) for x in peer]}
        out.append({"name": f"k_sampling/{name}", "ours": round(tokens / o, 1), "peer": round(tokens / p, 1),
                    "ratio": round(p / o, 4),
                    "unit": "new tokens/s (higher is better); peer: generate(num_return_sequences=8)",
                    "config": config})
    return out
