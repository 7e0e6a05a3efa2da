"""Memory estimates (``align.memory``, ``align run --dry-run``): the arithmetic of sharding and LoRA, the
estimate against what a small Llama takes to train on this CPU, and the 7B campaign's plan offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, align_cli

from align.memory import (ACT_HIDDEN, ACT_MLP, Architecture, Estimate, Sharding, activation_bytes,
                          sharding_from_accelerate, train)

GIB = 2**30


def _llama(h: int, layers: int, i: int, vocab: int):
    from transformers import LlamaConfig

    from align.memory import architecture

    return architecture(LlamaConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=layers, num_attention_heads=8,
                                    num_key_value_heads=8, intermediate_size=i, tie_word_embeddings=False), "llama")


def test_parameter_counts_are_exact_and_lora_counts_its_matrices():
    arch = _llama(64, 2, 128, 100)
    per_layer = 4 * 64 * 64 + 3 * 64 * 128 + 2 * 64  # q, k, v, o; gate, up, down; two norms
    assert arch.params == 2 * per_layer + 2 * 100 * 64 + 64  # + embeddings, untied head, final norm
    assert arch.lora_params(8, ["q_proj", "v_proj"]) == 2 * 2 * 8 * (64 + 64)
    assert arch.lora_params(4, ["down_proj"]) == 2 * 4 * (128 + 64)


def test_sharding_divides_what_each_engine_shards():
    arch = Architecture("m", params=1000, hidden=8, layers=1, intermediate=8, vocab=10, kv_width=8)

    def parts(sharding):
        est = Estimate()
        train(est, arch, name="p", dtype="float32", trainable=1000, sequences=8, seq_len=4, sharding=sharding,
              logits=False)
        return est.held["p weights"], est.held["p optimizer"], est.phases["p update"]["p gradients"]

    assert parts(Sharding()) == (4000, 8000, 4000)
    assert parts(Sharding(8, "ddp")) == (4000, 8000, 4000)  # DDP replicates
    assert parts(Sharding(8, "zero2")) == (4000, 1000, 500)  # gradients and optimiser states sharded
    assert parts(Sharding(8, "fsdp")) == parts(Sharding(8, "zero3")) == (500, 1000, 500)
    # the micro-batch is global: each of 8 processes keeps the activations of 1 of the 8 sequences
    one, eight = Estimate(), Estimate()
    train(one, arch, name="p", dtype="float32", trainable=0, sequences=1, seq_len=4, sharding=Sharding(), logits=False)
    train(eight, arch, name="p", dtype="float32", trainable=0, sequences=8, seq_len=4, sharding=Sharding(8, "ddp"),
          logits=False)
    assert one.phases["p update"]["activations"] == eight.phases["p update"]["activations"] == \
        4 * (ACT_HIDDEN * 8 + ACT_MLP * 8 + 2 * 8) * 4


def test_accelerate_configs_are_read(tmp_path):
    accelerate = ROOT / "configs" / "accelerate"
    assert sharding_from_accelerate(accelerate / "ddp.yaml") == Sharding(8, "ddp")
    assert sharding_from_accelerate(accelerate / "fsdp.yaml") == Sharding(8, "fsdp")
    assert sharding_from_accelerate(accelerate / "deepspeed-zero2.yaml") == Sharding(8, "zero2")
    assert sharding_from_accelerate(accelerate / "deepspeed-zero3.yaml") == Sharding(8, "zero3")
    assert sharding_from_accelerate(accelerate / "multi-node.yaml") == Sharding(16, "ddp")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(Exception, match="bad.yaml"):
        sharding_from_accelerate(bad)


MEASURE = """
import json, os, resource, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from align.config import TrainingConfig
from align.sft import answer_only_loss
from align.training import Learner, make_accelerator
h, layers, i, vocab, b, s = map(int, sys.argv[1:7])
torch.manual_seed(0)
ids = torch.randint(0, vocab, (b, s))
accelerator = make_accelerator(None, None)
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
base = rss()
model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=layers, num_attention_heads=8,
                                     num_key_value_heads=8, intermediate_size=i, max_position_embeddings=s,
                                     tie_word_embeddings=False))
learner = Learner.prepare(model, TrainingConfig(lr=1e-4), total_steps=10, warmup_steps=1, accelerator=accelerator)
for _ in range(3):
    learner.update([ids], lambda m, batch: (answer_only_loss(m(input_ids=batch, use_cache=False).logits, batch), {}))
print(json.dumps({"used": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set from /proc")
def test_estimate_matches_the_memory_a_small_llama_takes_to_train(tmp_path):
    # a shape the coefficients were not measured on: hidden 384, 6 layers, MLP 1024, vocab 6000, 8 x 192 tokens
    shape = (384, 6, 1024, 6000, 8, 192)
    script = tmp_path / "measure.py"
    script.write_text(MEASURE)
    done = subprocess.run([sys.executable, str(script), *map(str, shape)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])["used"]
    arch = _llama(*shape[:4])
    est = Estimate()
    train(est, arch, name="policy", dtype="float32", trainable=arch.params, sequences=shape[4], seq_len=shape[5],
          sharding=Sharding())
    assert 0.75 <= est.total / measured <= 1.25, f"estimate {est.total / GIB:.2f} GiB, measured {measured / GIB:.2f}"
    # and the activations are most of it at this batch: the estimate is not weights alone
    assert activation_bytes(arch, sequences=8, seq_len=192, dtype="float32") > 16 * arch.params


def test_llama2_7b_campaign_dry_runs_offline_with_memory_per_gpu():
    result = align_cli("run", "configs/llama2-7b.yaml", "--dry-run", "--accelerate-config",
                       "configs/accelerate/fsdp.yaml", env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    out = result.stdout
    assert "memory per process: 8 processes, fsdp" in out
    for round_id in ("00-sft", "01-rm-helpfulness", "02-rm-safety", "03-rs", "04-rs", "05-ppo"):
        assert f"{round_id} " in out
    assert out.count("    memory ") == 6
    # Llama-2-7B: 6,738,415,616 parameters; bf16 weights sharded over 8 GPUs: 12.55 GiB / 8 = 1.6 GiB
    assert "policy weights 1.6 GiB" in out and "helpfulness RM weights 12.6 GiB" in out
    # what is missing on this machine is named (the checkpoint and the data files), nothing else
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert problems and all("not found" in p or "no such" in p for p in problems), problems
    assert result.returncode == 2 and "would stop align run" in result.stderr
