"""The one training loop: every stage that trains a model (SFT, the reward models, the RS fine-tune,
and PPO's updates) takes its optimiser steps here.

A stage brings its model, its examples with their collate function, and an ``Objective``: the loss
of one micro-batch and the running values it wants logged. The loop owns the rest:

1. ``Learner``: accelerate prepares the model, AdamW (Llama 2: betas 0.9, 0.95) and the linear
   warm-up + cosine schedule;
2. batches: a ``DataLoader`` over length-grouped batches (little padding), prepared by accelerate;
3. each optimiser step: ``gradient_accumulation_steps`` micro-batches, each loss divided by their
   number and backpropagated, the gradient norm clipped, one optimiser and scheduler step;
4. step metrics (``losses/*``, ``charts/*``) to ``metrics.jsonl`` and the tracker, a progress bar.

Under ``accelerate launch`` (DDP, FSDP, DeepSpeed: the accelerate config's choice) the loop is the same:
``batch_size`` is the global batch, each process takes its slice of every batch (``ShardedBatches``),
accelerate averages the gradients, the logged loss is the mean over processes, and only the main
process writes files or logs to a tracker. ``Learner.update`` is the step alone, for stages that make
their own batches (PPO).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, send_to_device, set_seed
from torch.utils.data import DataLoader

from align import distributed
from align.config import TrackingConfig, TrainingConfig
from align.errors import AlignError
from align.progress import bar
from align.store import crash_point

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ADAM_BETAS = (0.9, 0.95)  # Llama 2 section 2.2 (and 3.2.3 for PPO)

Batch = Any


class Objective(Protocol):
    """What a stage trains for: the loss of a micro-batch and the values to log."""

    name: str  # the progress bar's label

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The micro-batch's scalar loss and its per-step values (``losses/<part>``)."""
        ...

    def charts(self, elapsed: float) -> dict[str, float]:
        """Running values for each logged step (``charts/<name>``), ``elapsed`` seconds into training."""
        ...


@dataclass(frozen=True)
class TrainResult:
    """What a training run reports: optimiser steps, losses, wall time."""

    steps: int
    first_loss: float
    final_loss: float  # mean over the last tenth of the steps
    seconds: float


def make_accelerator(tracking: TrackingConfig | None, tracking_dir: Path | None) -> Accelerator:
    """An Accelerator, with the configured experiment tracker (tensorboard, mlflow, wandb) if any.

    Mixed precision is the training config's own (``precision``, applied by ``Learner``), never
    accelerate's: its state is one per process, and a library that set it earlier (TRL's trainers set
    bf16) would otherwise run every later stage of the process under bf16 autocast, unasked."""
    from accelerate.state import AcceleratorState

    distributed.state()  # the process group, on the CPU (gloo) where there is no GPU
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != "no":
        AcceleratorState._reset_state()  # the process's distributed set-up (PartialState) is kept
    # the loop shards its own batches (``ShardedBatches``): ``split_batches`` tells accelerate that a step is one
    # global batch, so the prepared scheduler steps once per optimiser step, not once per process
    loader = DataLoaderConfiguration(split_batches=True)
    if tracking is None or tracking.backend == "none":
        return Accelerator(mixed_precision="no", dataloader_config=loader)
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "mlflow": is_mlflow_available,
                 "wandb": is_wandb_available}[tracking.backend]()
    if not available:
        raise AlignError(f"tracking.backend: {tracking.backend!r} is not installed (pip install {tracking.backend})")
    return Accelerator(mixed_precision="no", dataloader_config=loader, log_with=tracking.backend,
                       project_dir=str(tracking_dir) if tracking_dir else None)


def adamw_cosine(params: list[torch.nn.Parameter], *, lr: float, weight_decay: float, warmup_steps: int,
                 total_steps: int, min_lr_ratio: float, eps: float = 1e-8):
    """AdamW and a linear warm-up then cosine decay to ``min_lr_ratio * lr`` (Llama 2's schedule;
    ``min_lr_ratio`` 1 is a constant rate)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    # the fused kernel (one pass over all parameters: 5x the default's speed on a CPU) where torch has one
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
                for p in params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=ADAM_BETAS, eps=eps,
                                  fused=fused or None)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps, min_lr_rate=min_lr_ratio)
    return optimizer, scheduler


@dataclass
class Learner:
    """A model prepared by accelerate with its optimiser and schedule: what one update changes."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    params: list[torch.nn.Parameter]
    grad_clip: float
    autocast: torch.dtype | None = None  # the forward's autocast dtype (None: the weights' own)

    @classmethod
    def prepare(cls, model: PreTrainedModel, cfg: TrainingConfig, *, total_steps: int, warmup_steps: int,
                accelerator: Accelerator, params: list[torch.nn.Parameter] | None = None,
                eps: float = 1e-8) -> Learner:
        """Train ``params`` (default: every parameter that requires a gradient) of ``model``; ``eps`` is
        AdamW's (PPO: 1e-5)."""
        params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
        if cfg.activation_checkpointing:  # the Hugging Face model itself, or the one a wrapper (a critic) holds
            hf = next((m for m in model.modules() if getattr(m, "supports_gradient_checkpointing", False)), None)
            if hf is None:
                raise AlignError(f"activation_checkpointing: {type(model).__name__} does not support it")
            hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        optimizer, scheduler = adamw_cosine(params, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=warmup_steps,
                                            total_steps=total_steps, min_lr_ratio=cfg.min_lr_ratio, eps=eps)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        model.train()
        autocast = None
        if cfg.precision == "bfloat16":
            if accelerator.device.type == "cuda" and not torch.cuda.is_bf16_supported():
                raise AlignError("precision: bfloat16 needs a GPU that supports it (Ampere or newer): use float32")
            autocast = torch.bfloat16
        if cfg.compile:
            # the stage keeps its reference to the uncompiled module: it shares the weights, so saving reads them
            model = torch.compile(model)
        return cls(accelerator, model, optimizer, scheduler, params, cfg.grad_clip, autocast)

    def update(self, micro_batches: Sequence[Batch], loss_fn: Callable[[torch.nn.Module, Batch],
               tuple[torch.Tensor, dict[str, float]]]) -> tuple[float, dict[str, float], float]:
        """One optimiser step over ``micro_batches`` (gradient accumulation: each loss divided by their
        number); returns the mean loss, the mean of each logged value, and the gradient norm before clipping."""
        n = len(micro_batches)
        total, values = 0.0, {}
        for i, batch in enumerate(micro_batches):
            # gradients of all but the last micro-batch stay local (no all-reduce under DDP)
            sync = nullcontext() if i == n - 1 else self.accelerator.no_sync(self.model)
            with sync:
                with torch.autocast(self.accelerator.device.type, dtype=self.autocast or torch.float32,
                                    enabled=self.autocast is not None):
                    loss, parts = loss_fn(self.model, batch)
                self.accelerator.backward(loss / n)
            total += loss.item() / n
            for k, v in parts.items():
                values[k] = values.get(k, 0.0) + v / n
        if self.accelerator.num_processes > 1:  # the global batch's values: the means over the processes' slices
            total, values = _mean_over_processes(total, values)
        grad_norm = self.accelerator.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, values, float(grad_norm)


def _mean_over_processes(total: float, values: dict[str, float]) -> tuple[float, dict[str, float]]:
    """The mean of ``total`` and of each logged value over the processes that have it (a process's slice may
    lack a term, e.g. no safety label)."""
    everyone = distributed.gather([(total, values)])
    keys = {k for _, v in everyone for k in v}
    means = {k: sum(v[k] for _, v in everyone if k in v) / sum(k in v for _, v in everyone) for k in sorted(keys)}
    return sum(t for t, _ in everyone) / len(everyone), means


class LengthGroupedBatches:
    """Batches of indices of similar length, reshuffled every epoch (cuts padding): shuffle, sort within
    mega-batches of ``group`` batches, split, shuffle the batches. A ``batch_sampler`` for a DataLoader."""

    def __init__(self, lengths: Sequence[int], batch_size: int, rng: random.Random, group: int = 50):
        self.lengths, self.batch_size, self.rng, self.group = lengths, batch_size, rng, group

    def __iter__(self) -> Iterator[list[int]]:
        batches = length_grouped_batches(self.lengths, self.batch_size, self.rng, self.group)
        while batches:
            yield batches.pop()

    def __len__(self) -> int:
        span = self.batch_size * self.group
        return sum(math.ceil(min(span, len(self.lengths) - s) / self.batch_size)
                   for s in range(0, len(self.lengths), span))


class ShardedBatches:
    """This process's slice of each batch of ``batches`` (contiguous, so it keeps the batch's similar
    lengths): the global batch split over the processes, every process seeing every batch in the same
    order. A slice that would be empty (a last batch smaller than the number of processes) repeats an
    example of the batch, so every process takes every step."""

    def __init__(self, batches: Any, rank: int, size: int):
        self.batches, self.rank, self.size = batches, rank, size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield list(distributed.my_slice(batch, self.rank, self.size))

    def __len__(self) -> int:
        return len(self.batches)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random,
                           group: int = 50) -> list[list[int]]:
    """One epoch of ``LengthGroupedBatches``, as a list (consumed from the end)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * group
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def total_steps(n_examples: int, cfg: TrainingConfig) -> int:
    """Optimiser steps of a run: ``max_steps``, else ``epochs`` passes of the examples."""
    per_step = cfg.batch_size * cfg.gradient_accumulation_steps
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * math.ceil(n_examples / per_step)))


class StepLog:
    """Step metrics to a JSONL file and to the accelerator's tracker (main process only)."""

    def __init__(self, accelerator: Accelerator, path: Path | None, *, project: str | None = None,
                 config: dict[str, Any] | None = None):
        self.accelerator, self.start = accelerator, time.perf_counter()
        main = accelerator.is_main_process
        self.file = open(path, "a", encoding="utf-8") if path and main else None
        self.tracked = bool(accelerator.log_with) and main
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


def train(model: PreTrainedModel, examples: Sequence[Any], collate: Callable[[list[Any]], Batch],
          objective: Objective, cfg: TrainingConfig, *, lengths: Sequence[int], seed: int, stream: str,
          warmup_steps: Callable[[int], int], params: list[torch.nn.Parameter] | None = None,
          metrics_path: Path | None = None, tracking: TrackingConfig | None = None,
          tracking_dir: Path | None = None) -> TrainResult:
    """Train ``model`` in place on ``examples`` for ``objective``; returns a TrainResult.

    Batches are drawn by ``LengthGroupedBatches`` with the random stream ``"{stream}:{seed}"``;
    ``warmup_steps(total)`` gives the warm-up of a run of ``total`` optimiser steps.
    """
    set_seed(seed)
    if not examples:
        raise AlignError(f"{stream}: no training examples")
    total = total_steps(len(examples), cfg)
    per_epoch = math.ceil(len(examples) / (cfg.batch_size * cfg.gradient_accumulation_steps))
    accelerator = make_accelerator(tracking, tracking_dir)
    rank, size = accelerator.process_index, accelerator.num_processes
    if cfg.batch_size % size:
        raise AlignError(f"{stream}: batch_size {cfg.batch_size} is the global batch and must divide evenly among "
                         f"the {size} processes")
    learner = Learner.prepare(model, cfg, total_steps=total, warmup_steps=warmup_steps(total),
                              accelerator=accelerator, params=params)
    sampler = LengthGroupedBatches(lengths, cfg.batch_size, random.Random(f"{stream}:{seed}"))
    # every process draws the same global batches and takes its slice; a generator of its own: creating the
    # loader's iterator must not draw from the global torch RNG
    loader = DataLoader(list(examples), batch_sampler=ShardedBatches(sampler, rank, size), collate_fn=collate,
                        generator=torch.Generator())
    log = StepLog(accelerator, metrics_path, project=tracking.project if tracking else None, config=cfg.model_dump())
    batches = _forever(loader)
    losses: list[float] = []
    steps = bar(range(total), desc=objective.name, unit="step", enabled=accelerator.is_local_main_process)
    for step in steps:
        micro = [send_to_device(next(batches), accelerator.device)
                 for _ in range(cfg.gradient_accumulation_steps)]
        loss, values, grad_norm = learner.update(micro, objective.loss)
        crash_point(f"step-{step + 1}", stream)  # fault injection for the resume tests (ALIGN_CRASH_AT)
        losses.append(loss)
        if step % cfg.log_every == 0 or step == total - 1:
            log.write(step + 1, {"epoch": round((step + 1) / per_epoch, 4),
                                 **{k: round(v, 5) for k, v in values.items()}, **objective.charts(log.elapsed),
                                 "charts/lr": learner.scheduler.get_last_lr()[0], "charts/grad_norm": round(grad_norm, 4)})
        steps.set_postfix(loss=f"{loss:.3f}")
    log.close()
    tail = losses[-max(1, len(losses) // 10):]
    return TrainResult(steps=total, first_loss=losses[0], final_loss=sum(tail) / len(tail), seconds=log.elapsed)


def _forever(loader: DataLoader) -> Iterator[Batch]:
    """The loader's batches, epoch after epoch (each epoch reshuffled by its batch sampler)."""
    while True:
        yield from loader
