"""The one training loop (align/training.py): batches, gradient accumulation, step logs, trackers."""

from __future__ import annotations

import copy
import json
import random
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from align.config import TrackingConfig, TrainingConfig
from align.errors import AlignError
from align.training import (Learner, LengthGroupedBatches, StepLog, length_grouped_batches, make_accelerator,
                            total_steps, train)


def test_length_grouped_batches_cover_every_index_once():
    lengths = [random.Random(i).randint(5, 50) for i in range(103)]
    batches = length_grouped_batches(lengths, 8, random.Random(0), group=4)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103))
    sampler = LengthGroupedBatches(lengths, 8, random.Random(0), group=4)
    epochs = [list(sampler), list(sampler)]
    assert len(epochs[0]) == len(sampler) == len(batches) and epochs[0] != epochs[1]  # reshuffled each epoch


def test_total_steps_count_optimiser_steps_of_accumulated_micro_batches():
    assert total_steps(100, TrainingConfig(batch_size=10, epochs=2)) == 20
    assert total_steps(100, TrainingConfig(batch_size=10, gradient_accumulation_steps=4, epochs=2)) == 6  # ceil(2.5)*2
    assert total_steps(100, TrainingConfig(batch_size=10, max_steps=7)) == 7


def _sgd_learner(model: torch.nn.Module) -> Learner:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    return Learner(Accelerator(cpu=True), model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0),
                   list(model.parameters()), grad_clip=1e9)


def test_eight_micro_batches_of_one_step_like_one_batch_of_eight():
    """Gradient accumulation: 8 micro-batches of 1 make the same update as 1 batch of 8 (TRL's invariant)."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randn(8)
    base = torch.nn.Linear(5, 1)

    def mse(model, batch):
        loss = ((model(batch[0]).squeeze(-1) - batch[1]) ** 2).mean()
        return loss, {"losses/mse": loss.item()}

    one, many = _sgd_learner(copy.deepcopy(base)), _sgd_learner(copy.deepcopy(base))
    loss_one, logged_one, _ = one.update([(x, y)], mse)
    loss_many, logged_many, _ = many.update([(x[i:i + 1], y[i:i + 1]) for i in range(8)], mse)
    for a, b in zip(one.model.parameters(), many.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert loss_one == pytest.approx(loss_many, abs=1e-6) and logged_one["losses/mse"] == pytest.approx(loss_one)


def test_only_the_main_process_writes_step_metrics(tmp_path):
    worker = SimpleNamespace(is_main_process=False, log_with=[])
    log = StepLog(worker, tmp_path / "worker.jsonl")
    log.write(1, {"losses/x": 1.0})
    log.close()
    assert not (tmp_path / "worker.jsonl").exists()
    main = StepLog(Accelerator(cpu=True), tmp_path / "main.jsonl")
    main.write(1, {"losses/x": 1.0})
    main.close()
    assert json.loads((tmp_path / "main.jsonl").read_text()) == {"step": 1, "losses/x": 1.0}


class _Regression:
    """A toy objective: mean squared error of a linear model, logging its examples seen."""

    name = "toy"

    def __init__(self):
        self.seen = 0

    def loss(self, model, batch):
        x, y = batch
        self.seen += len(y)
        loss = ((model(x).squeeze(-1) - y) ** 2).mean()
        return loss, {"losses/mse": loss.item()}

    def charts(self, elapsed):
        return {"charts/seen": self.seen}


def test_the_loop_trains_any_objective_and_logs_its_values(tmp_path):
    torch.manual_seed(0)
    w = torch.randn(4)
    examples = [(x, (x @ w).item()) for x in torch.randn(64, 4)]

    def collate(batch):
        return torch.stack([x for x, _ in batch]), torch.tensor([y for _, y in batch])

    model, objective = torch.nn.Linear(4, 1), _Regression()
    cfg = TrainingConfig(epochs=30, batch_size=8, gradient_accumulation_steps=2, lr=0.05, weight_decay=0.0,
                         warmup_ratio=0.0, log_every=10)
    result = train(model, examples, collate, objective, cfg, lengths=[1] * 64, seed=0, stream="toy",
                   warmup_steps=lambda total: 0, metrics_path=tmp_path / "m.jsonl")
    assert result.steps == 120 and objective.seen == 120 * 16  # every step: 2 micro-batches of 8
    assert result.final_loss < 0.01 * result.first_loss
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 101, 111, 120]
    assert rows[-1]["epoch"] == 30.0 and rows[-1]["charts/seen"] == 1920
    assert {"losses/mse", "charts/lr", "charts/grad_norm"} <= set(rows[0])


def test_missing_tracker_backend_is_a_clear_error():
    from accelerate.utils import is_wandb_available

    if is_wandb_available():
        pytest.skip("wandb is installed here")
    with pytest.raises(AlignError, match=r"tracking.backend: 'wandb' is not installed"):
        make_accelerator(TrackingConfig(backend="wandb"), None)
    assert make_accelerator(TrackingConfig(backend="none"), None).log_with == []


class _DtypeSeen(_Regression):
    """The toy objective, also recording the dtype its forward computes in and the model class it reads."""

    def __init__(self):
        super().__init__()
        self.dtypes, self.models = set(), set()

    def loss(self, model, batch):
        x, _ = batch
        self.dtypes.add(model(x).dtype)
        self.models.add(type(model).__name__)
        return super().loss(model, batch)


@pytest.mark.parametrize("precision,expected", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_precision_runs_the_forward_under_autocast_and_keeps_fp32_weights(precision, expected):
    torch.manual_seed(0)
    w = torch.randn(4)
    examples = [(x, (x @ w).item()) for x in torch.randn(64, 4)]
    model, objective = torch.nn.Linear(4, 1), _DtypeSeen()
    cfg = TrainingConfig(epochs=20, batch_size=8, lr=0.05, weight_decay=0.0, warmup_ratio=0.0, precision=precision)
    result = train(model, examples, lambda b: (torch.stack([x for x, _ in b]), torch.tensor([y for _, y in b])),
                   objective, cfg, lengths=[1] * 64, seed=0, stream="toy", warmup_steps=lambda total: 0)
    assert objective.dtypes == {expected}
    assert model.weight.dtype == torch.float32  # the optimiser updates fp32 master weights
    assert result.final_loss < 0.05 * result.first_loss  # and bf16 still learns the regression


def test_adamw_takes_the_fused_kernel_and_compile_wraps_the_model():
    model = torch.nn.Linear(4, 1)
    cfg = TrainingConfig(compile=True)
    learner = Learner.prepare(model, cfg, total_steps=2, warmup_steps=0, accelerator=Accelerator(cpu=True))
    assert learner.optimizer.param_groups[0]["fused"] is True
    assert type(learner.model).__name__ == "OptimizedModule" and learner.model._orig_mod is model


def test_a_mixed_precision_set_earlier_in_the_process_is_not_inherited():
    """accelerate's state is one per process: a library that set bf16 before (TRL's trainers do) must not
    put the campaign's training under autocast; precision is the training config's."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # as in a new process, where a library then sets bf16 first
    Accelerator(cpu=True, mixed_precision="bf16")
    try:
        accelerator = make_accelerator(None, None)
        assert accelerator.mixed_precision == "no" and not accelerator.native_amp
        model = accelerator.prepare(torch.nn.Linear(3, 1))
        assert model(torch.randn(2, 3)).dtype == torch.float32 and "convert_outputs" not in repr(model.forward)
    finally:
        AcceleratorState._reset_state()


def test_activation_checkpointing_recomputes_the_same_update(policy):
    """activation_checkpointing keeps each layer's input and recomputes the rest in the backward pass: the same
    loss and the same weights after a step as keeping everything (it only trades memory for compute)."""
    from align.sft import answer_only_loss

    ids = torch.randint(3, 200, (4, 12), generator=torch.Generator().manual_seed(0))

    def loss_fn(model, batch):
        loss = answer_only_loss(model(input_ids=batch, use_cache=False).logits, batch)
        return loss, {}

    results = []
    for checkpointing in (False, True):
        model = copy.deepcopy(policy)
        learner = Learner.prepare(model, TrainingConfig(lr=1e-2, activation_checkpointing=checkpointing),
                                  total_steps=2, warmup_steps=0, accelerator=make_accelerator(None, None))
        assert model.is_activation_checkpointing == checkpointing
        loss, _, grad_norm = learner.update([ids], loss_fn)
        results.append((loss, grad_norm, [p.detach().clone() for p in model.parameters()]))
    (loss_a, norm_a, weights_a), (loss_b, norm_b, weights_b) = results
    assert loss_a == pytest.approx(loss_b, abs=1e-6) and norm_a == pytest.approx(norm_b, rel=1e-5)
    for a, b in zip(weights_a, weights_b):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_activation_checkpointing_names_a_model_that_cannot():
    with pytest.raises(AlignError, match="activation_checkpointing: Linear does not support it"):
        Learner.prepare(torch.nn.Linear(2, 2), TrainingConfig(activation_checkpointing=True), total_steps=1,
                        warmup_steps=0, accelerator=make_accelerator(None, None))
