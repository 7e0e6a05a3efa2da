"""K samples per prompt: align's ``sample_k`` (one prompt forward shared by the K samples through a
repeated KV cache) against plain ``generate(num_return_sequences=K)`` (the prompt is expanded K
times before the forward), same model, prompts, K, temperature and token budget.

The policy is the sandbox's tiny Llama shape (hidden 128, 4 layers) with random weights and
no EOS token so both sides generate exactly ``max_new_tokens`` per sample. Two prompt lengths:
the sandbox's own (short: sharing saves little) and long prompts (where the prompt dominates).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from align.chat import pad
from align.generate import sample_k


class _Tok:
    """The few tokenizer methods ``sample_k`` uses, over raw ids (prompts are given as token ids)."""

    pad_token_id, eos_token_id, bos_token_id = 0, None, 2  # no EOS: every sample runs the full budget

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def _model(vocab: int = 512) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=384, max_position_embeddings=2048, pad_token_id=0,
                      eos_token_id=None, bos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def _case(model, prompts: list[list[int]], k: int, new_tokens: int, batch: int) -> dict[str, float]:
    import align.generate as g

    tok = _Tok()
    original = g.prompt_ids
    g.prompt_ids = lambda _tok, ids: list(ids)  # prompts are token ids already
    try:
        t0 = time.perf_counter()
        sample_k(model, tok, prompts, k=k, temperature=1.0, top_p=1.0, max_new_tokens=new_tokens, batch_size=batch,
                 seed=0)
        ours = time.perf_counter() - t0
    finally:
        g.prompt_ids = original
    gen = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, temperature=1.0,
                           top_k=None, top_p=None, pad_token_id=0, eos_token_id=None, num_return_sequences=k)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(prompts), batch):
            ids, mask = pad(prompts[start:start + batch], 0, left=True)
            model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
    peer = time.perf_counter() - t0
    samples = len(prompts) * k
    return {"ours_s": ours, "peer_s": peer, "samples": samples, "new_tokens": samples * new_tokens}


def run(*, quick: bool = False) -> list[dict[str, Any]]:
    model = _model()
    rng = torch.Generator().manual_seed(0)
    out = []
    for name, n_prompts, length, k, new_tokens, batch in (("sandbox_prompts", 64 if quick else 256, 40, 4, 48, 64),
                                                          ("long_prompts", 8 if quick else 32, 512, 8, 32, 8)):
        prompts = [torch.randint(3, 512, (length + int(torch.randint(0, 8, (1,), generator=rng)),),
                                 generator=rng).tolist() for _ in range(n_prompts)]
        r = _case(model, prompts, k, new_tokens, batch)
        config = {"prompts": n_prompts, "prompt_tokens": length, "k": k, "new_tokens": new_tokens,
                  "prompt_batch": batch, "threads": torch.get_num_threads()}
        out.append({"name": f"generate_k/{name}/samples_per_second", "ours": round(r["samples"] / r["ours_s"], 1),
                    "peer": round(r["samples"] / r["peer_s"], 1), "ratio": round(r["peer_s"] / r["ours_s"], 4),
                    "unit": "samples/s (higher is better); peer: generate(num_return_sequences=K)", "config": config})
    return out
