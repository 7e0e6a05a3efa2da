"""SFT throughput against the machine's own roof: achieved training FLOP/s over the measured matmul peak.

The model is the sandbox's tiny Llama made about 4x larger (hidden 256, MLP 768, 4 layers, 4 heads,
vocabulary 1024, tied embeddings; 3.4M parameters in its matmuls), trained by align's SFT
(``align.sft.finetune``: answer-only loss, length-grouped batches, fused AdamW) on the sandbox
world's demonstrations, ``torch.compile`` on. Each run first takes a few steps to compile, then a
timed run of ``steps`` optimiser steps on the same model. FLOPs per token are ``6 N`` with N the
parameters of every matmul a token passes through (the output projection included, the embedding
lookup not), times the real tokens (padding not counted). The peer is the peak: a 2048 x 2048
matmul of the same dtype, best of 3, measured in the same run.

- ``sft/flops_fp32``: fp32 weights and compute.
- ``sft/flops_bf16``: fp32 weights, forward and loss under bf16 autocast (AMX on this CPU); its
  ``config`` holds its throughput against fp32's and both runs' losses on the same batches.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from bench.common import entry, matmul_peak_gflops

ROOT = Path(__file__).parent.parent


def _model(vocab: int, pad: int, bos: int, eos: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                                        tie_word_embeddings=True, pad_token_id=pad, bos_token_id=bos,
                                        eos_token_id=eos))


def _matmul_params(model) -> int:
    """Parameters of every matmul a token passes through: the linear layers and the output projection."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def _run(world: Path, precision: str, steps: int, batch_size: int, repeats: int) -> dict[str, Any]:
    from align.models import load_tokenizer
    from align.sandbox.build import read_demonstrations
    from align.sft import FinetuneConfig, finetune

    tok = load_tokenizer(world / "tokenizer")
    pairs = [(d.prompt.text, d.response) for d in read_demonstrations(world)]
    torch._dynamo.reset()  # a fresh compile cache: the other precision's graphs would count toward its recompile limit
    model = _model(len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    n = _matmul_params(model)
    warm = FinetuneConfig(max_steps=4, batch_size=batch_size, lr=1e-3, precision=precision, compile=True,
                          log_every=10**9)
    finetune(model, tok, pairs, warm, seed=0)  # compiles (shapes vary: a second compile makes them dynamic)
    rates, losses = [], []
    for r in range(repeats):
        torch.manual_seed(0)
        timed = warm.model_copy(update={"max_steps": steps})
        result = finetune(model, tok, pairs[r * 1000:], timed, seed=r)
        rates.append(result.tokens_per_second)
        losses.append(result.final_loss)
    return {"tokens_per_s": statistics.median(rates), "gflops": 6 * n * statistics.median(rates) / 1e9,
            "matmul_params": n, "all_tokens_per_s": [round(x, 1) for x in rates],
            "final_losses": [round(x, 4) for x in losses]}


def run(*, run_dir: Path = ROOT / "runs" / "sandbox", steps: int = 60, batch_size: int = 64, repeats: int = 3,
        quick: bool = False) -> list[dict[str, Any]]:
    world = run_dir / "rounds" / "00-sandbox"
    if not (world / "sft.jsonl").is_file():
        print(f"sft_flops: skipped, no sandbox world in {run_dir} (make demo builds it)")
        return []
    if quick:
        steps, repeats = 10, 1
    out = []
    fp32 = bf16 = None
    for precision, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        peak = matmul_peak_gflops(dtype)
        got = _run(world, precision, steps, batch_size, repeats)
        if precision == "float32":
            fp32 = got
        else:
            bf16 = got
        config = {"model": "Llama hidden 256, MLP 768, 4 layers, 4 heads, vocab 1024 (about 4x the sandbox's)",
                  "data": "sandbox SFT demonstrations", "batch_size": batch_size, "steps": steps, "repeats": repeats,
                  "compile": True, "precision": precision, "threads": torch.get_num_threads(),
                  "matmul_peak_gflops": round(peak, 1), "flops_per_token": f"6 x {got['matmul_params']}",
                  "tokens_per_s": round(got["tokens_per_s"], 1), "all_tokens_per_s": got["all_tokens_per_s"],
                  "final_losses": got["final_losses"]}
        if bf16 is not None and fp32 is not None:
            config |= {"speedup_over_fp32": round(bf16["tokens_per_s"] / fp32["tokens_per_s"], 3),
                       "fp32_final_losses": fp32["final_losses"],
                       "loss_gap_vs_fp32": round(statistics.median(bf16["final_losses"])
                                                 - statistics.median(fp32["final_losses"]), 4)}
        name = "sft/flops_fp32" if precision == "float32" else "sft/flops_bf16"
        out.append(entry(name, got["gflops"], peak, f"achieved training GFLOP/s; peer: the measured {precision} "
                         "matmul peak (ratio = share of peak)", config, higher_is_better=True, digits=1))
    return out
