"""Reward-model training throughput on the sandbox: align's trainer against TRL's ``RewardTrainer``.

Both train the same model from the same weights on the same token ids (align's encoding of the
sandbox world's helpfulness pairs: chat prompt + answer + EOS, cut to ``max_len``; TRL gets them
pre-tokenized as ``chosen_ids`` / ``rejected_ids``), with the same batch, learning rate, warm-up,
cosine schedule, AdamW betas, weight decay, clipping and one epoch, ranking loss without margin.
Throughput is training pairs per second of ``train()``; accuracy is each trained model's share of
held-out pairs (the world's ``prefs_helpfulness_eval``) where the chosen answer scores higher, read
by the same scoring function. Ours and the peer alternate, 3 repeats each, medians.

- ``rm_train/sandbox``: the sandbox's policy (``runs/sandbox``'s 01-sft: hidden 128, 4 layers).
- ``rm_train/sandbox_4x``: a Llama about 4x larger (hidden 256, MLP 768, 4 layers), initialised from
  seed 0 and saved once, with the sandbox tokenizer.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from align.config import ModelConfig
from align.reward.config import RewardModelConfig
from align.reward.data import encode_pairs
from align.reward.model import load_reward_model, score
from align.reward.train import MIN_WARMUP_STEPS, train_reward_model
from align.training import ADAM_BETAS, total_steps
from bench.common import alternate, entry, median

ROOT = Path(__file__).parent.parent


def _accuracy(model, tok, pairs, max_len: int) -> float:
    prompts = [p.prompt.text for p in pairs]
    r_c, r_r = (score(model, tok, prompts, [getattr(p, s) for p in pairs], max_seq_len=max_len, batch_size=256)
                for s in ("chosen", "rejected"))
    return float(np.mean(r_c > r_r))


def _big_model(world: Path, out: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from align.models import load_tokenizer

    tok = load_tokenizer(world / "tokenizer")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _case(name: str, model_dir: Path, train, test, *, lr: float, batch_size: int, max_len: int,
          repeats: int) -> dict[str, Any]:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    cfg = RewardModelConfig(lr=lr, epochs=1.0, batch_size=batch_size, max_seq_len=max_len, margin="none",
                            weight_decay=0.0, lm_coef=0.0, log_every=10**9)
    steps = total_steps(len(train), cfg)
    warmup = min(max(MIN_WARMUP_STEPS, int(cfg.warmup_ratio * steps)), steps // 2)

    def ours():
        torch.manual_seed(0)  # the new score head: the same initialisation on both sides, every repeat
        model, tok = load_reward_model(model_dir, ModelConfig())
        t0 = time.perf_counter()
        train_reward_model(model, tok, train, cfg, seed=0)
        return time.perf_counter() - t0, _accuracy(model, tok, test, max_len)

    def peer():
        torch.manual_seed(0)
        model, tok = load_reward_model(model_dir, ModelConfig())
        enc = encode_pairs(tok, train, max_len)
        data = Dataset.from_dict({"chosen_ids": [e.chosen for e in enc], "rejected_ids": [e.rejected for e in enc]})
        with tempfile.TemporaryDirectory() as out:
            args = RewardConfig(output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=1,
                                learning_rate=lr, lr_scheduler_type="cosine_with_min_lr",
                                lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_ratio}, warmup_steps=warmup,
                                weight_decay=0.0, adam_beta1=ADAM_BETAS[0], adam_beta2=ADAM_BETAS[1],
                                max_grad_norm=cfg.grad_clip, max_length=max_len, report_to=[],
                                logging_steps=10**9, save_strategy="no", seed=0, use_cpu=True,
                                dataloader_num_workers=0, disable_tqdm=True, bf16=False)  # fp32, as ours
            trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
            t0 = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - t0
        return seconds, _accuracy(model, tok, test, max_len)

    ours_runs, peer_runs = alternate(ours, peer, repeats)
    o, p = median([s for s, _ in ours_runs]), median([s for s, _ in peer_runs])
    ours_acc, peer_acc = median([a for _, a in ours_runs]), median([a for _, a in peer_runs])
    config = {"model": str(model_dir), "train_pairs": len(train), "test_pairs": len(test), "batch_pairs": batch_size,
              "max_len": max_len, "lr": lr, "epochs": 1, "optimizer_steps": steps, "warmup_steps": warmup,
              "threads": torch.get_num_threads(), "repeats": repeats,
              "ours_accuracy": round(ours_acc, 4), "peer_accuracy": round(peer_acc, 4),
              "accuracy_gap_points": round(100 * (ours_acc - peer_acc), 2),
              "ours_s": [round(s, 2) for s, _ in ours_runs], "peer_s": [round(s, 2) for s, _ in peer_runs],
              "ours_accuracies": [round(a, 4) for _, a in ours_runs],
              "peer_accuracies": [round(a, 4) for _, a in peer_runs]}
    return entry(f"rm_train/{name}", len(train) / o, len(train) / p,
                 "training pairs/s; peer: TRL RewardTrainer", config, higher_is_better=True, digits=1)


def run(*, run_dir: Path = ROOT / "runs" / "sandbox", pairs: int = 2048, repeats: int = 3,
        quick: bool = False) -> list[dict[str, Any]]:
    from align.sandbox.build import read_preferences

    world, policy = run_dir / "rounds" / "00-sandbox", run_dir / "rounds" / "01-sft" / "model"
    if not (policy / "config.json").is_file():
        print(f"rm_train: skipped, no sandbox policy in {run_dir} (make demo builds it)")
        return []
    if quick:
        pairs, repeats = 256, 1
    train = read_preferences(world, "helpfulness", "train")[:pairs]
    test = read_preferences(world, "helpfulness", "eval")
    out = [_case("sandbox", policy, train, test, lr=2e-3, batch_size=32, max_len=128, repeats=repeats)]
    with tempfile.TemporaryDirectory() as tmp:
        big = _big_model(world, Path(tmp) / "llama_4x")
        out.append(_case("sandbox_4x", big, train, test, lr=1e-3, batch_size=32, max_len=128, repeats=repeats))
    return out
