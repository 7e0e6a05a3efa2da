"""Training plumbing shared by the stages: accelerator (with an optional tracker), AdamW with a
cosine schedule, and step metrics to ``metrics.jsonl`` and the tracker."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from align.config import TrackingConfig
from align.errors import AlignError


def make_accelerator(tracking: TrackingConfig | None, tracking_dir: Path | None) -> Accelerator:
    """An Accelerator, with the configured experiment tracker (tensorboard, mlflow, wandb) if any."""
    if tracking is None or tracking.backend == "none":
        return Accelerator()
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "mlflow": is_mlflow_available,
                 "wandb": is_wandb_available}[tracking.backend]()
    if not available:
        raise AlignError(f"tracking.backend: {tracking.backend!r} is not installed (pip install {tracking.backend})")
    return Accelerator(log_with=tracking.backend, project_dir=str(tracking_dir) if tracking_dir else None)


def adamw_cosine(params: list[torch.nn.Parameter], *, lr: float, weight_decay: float, warmup_steps: int,
                 total_steps: int, min_lr_ratio: float, betas: tuple[float, float] = (0.9, 0.95)):
    """AdamW and a linear warm-up then cosine decay to ``min_lr_ratio * lr`` (Llama 2's schedule)."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps, min_lr_rate=min_lr_ratio)
    return optimizer, scheduler


class StepLog:
    """Step metrics to a JSONL file and to the accelerator's tracker; adds ``step`` and ``charts/elapsed_s``."""

    def __init__(self, accelerator: Accelerator, path: Path | None, *, project: str | None = None,
                 config: dict[str, Any] | None = None):
        self.accelerator, self.start = accelerator, time.perf_counter()
        self.file = open(path, "a", encoding="utf-8") if path else None
        self.tracked = bool(accelerator.log_with)
        if self.tracked:
            flat = {k: v for k, v in (config or {}).items() if isinstance(v, (int, float, str, bool))}
            accelerator.init_trackers(project or "align", config=flat)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def write(self, step: int, values: dict[str, Any]) -> None:
        if self.file:
            self.file.write(json.dumps({"step": step, **values}) + "\n")
        if self.tracked:
            self.accelerator.log(values, step=step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tracked:
            self.accelerator.end_training()


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random,
                           group: int = 50) -> list[list[int]]:
    """Shuffled batches of indices of similar length (cuts padding): shuffle, sort within
    mega-batches of ``group`` batches, split, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * group
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
