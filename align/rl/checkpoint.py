"""Checkpoints of a long training stage inside its campaign: a killed run resumes from the last one.

A checkpoint is a folder ``it-<NNNNNN>`` under the round's checkpoint folder (outside the round, which
is only written when it completes): model weights as safetensors (``<name>.safetensors``), optimiser
and scheduler states (``<name>.optim.pt``, tensors and numbers only, loaded with ``weights_only``) and
``state.json`` (the iteration, the loop's own state, and a fingerprint of the config and inputs). It is
written in a temporary folder and renamed into place, so a kill mid-write leaves the previous one. A
checkpoint whose fingerprint differs from the current run's (the config or a parent changed) is
discarded, never resumed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from align import distributed
from align.errors import AlignError
from align.models import full_state, sharded, zero3_partitioned

STATE = "state.json"


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint: where it is, the iteration it resumes at, the loop's saved state."""

    path: Path
    iteration: int
    state: dict[str, Any]

    def load_model(self, name: str, model: torch.nn.Module) -> None:
        if sharded(model):
            from torch.distributed.checkpoint.state_dict import set_model_state_dict

            state = load_file(self.path / f"{name}.safetensors")
            result = set_model_state_dict(model, state, options=_full(cpu_offload=False))
            missing, unexpected = result.missing_keys, result.unexpected_keys
        else:
            missing, unexpected = load_model(model, self.path / f"{name}.safetensors", strict=True)
        if missing or unexpected:
            raise AlignError(f"{self.path}: {name} does not match the model ({missing or unexpected})")

    def load_optimizer(self, name: str, optimizer: Any, scheduler: Any | None = None,
                       model: torch.nn.Module | None = None) -> None:
        """The optimiser's (and scheduler's) state; ``model``: the one it trains, needed when FSDP shards it."""
        saved = torch.load(self.path / f"{name}.optim.pt", weights_only=True)
        if model is not None and sharded(model):
            from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

            set_optimizer_state_dict(model, _inner(optimizer), saved["optimizer"], options=_full(cpu_offload=False))
        else:
            optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])

    def tensors(self, name: str) -> dict[str, torch.Tensor] | None:
        """A saved set of tensors (``save(..., tensors=)``), or None."""
        path = self.path / f"{name}.tensors.safetensors"
        return load_file(path) if path.is_file() else None


class Checkpoints:
    """The checkpoints of one round: ``save`` a new one (the older ones go), ``latest`` to resume."""

    def __init__(self, folder: Path, fingerprint: str, *, keep: int = 1):
        self.folder, self.fingerprint, self.keep = folder, fingerprint, keep

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint of this fingerprint; checkpoints of another one are removed. Under a
        multi-process launch the main process looks and every process gets its answer."""
        return distributed.from_main(self._latest() if distributed.is_main() else None)

    def _latest(self) -> Checkpoint | None:
        if not self.folder.is_dir():
            return None
        found = []
        for d in sorted(self.folder.glob("it-*")):
            try:
                state = json.loads((d / STATE).read_text())
            except (OSError, ValueError):
                continue  # incomplete: state.json is written last
            if state.get("fingerprint") != self.fingerprint:
                shutil.rmtree(d, ignore_errors=True)
                continue
            found.append(Checkpoint(d, int(state["iteration"]), state))
        return max(found, key=lambda c: c.iteration) if found else None

    def save(self, iteration: int, models: dict[str, torch.nn.Module], optimizers: dict[str, tuple[Any, Any]],
             state: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
        """Write a checkpoint that resumes at ``iteration``: ``models`` by name, ``optimizers`` by name as
        (optimizer, scheduler), the loop's JSON-able ``state`` and other named sets of ``tensors``. Only the
        main process writes; what FSDP shards is gathered by every process first (an optimiser is matched to
        the model of the same name)."""
        final = self.folder / f"it-{iteration:06d}"
        if any(zero3_partitioned(p) for model in models.values() for p in model.parameters()):
            raise AlignError("checkpoints of a model DeepSpeed ZeRO-3 partitions are not supported: use FSDP or ZeRO-2 "
                             "(configs/accelerate/), or a checkpoint_every above the iterations")
        from torch.distributed.tensor import DTensor

        model_states = {name: full_state(model) for name, model in models.items()}
        optim_states = {name: _gathered_optimizer(models.get(name), optimizer)
                        for name, (optimizer, _) in optimizers.items()}
        tensors = {name: {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in named.items()}
                   for name, named in (tensors or {}).items()}
        if not distributed.is_main():
            return final
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".tmp-it-{iteration:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, model in models.items():
            if model_states[name] is not None:
                save_file({k: v.contiguous() for k, v in model_states[name].items()}, str(tmp / f"{name}.safetensors"))
            else:
                save_model(model, str(tmp / f"{name}.safetensors"))
        for name, named in tensors.items():
            save_file({k: v.contiguous() for k, v in named.items()}, str(tmp / f"{name}.tensors.safetensors"))
        for name, (optimizer, scheduler) in optimizers.items():
            torch.save({"optimizer": optim_states[name] if optim_states[name] is not None else optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None},
                       tmp / f"{name}.optim.pt")
        with open(tmp / STATE, "w", encoding="utf-8") as f:
            json.dump({**state, "iteration": iteration, "fingerprint": self.fingerprint}, f)
            f.flush()
            os.fsync(f.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(self.folder.glob("it-*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def clear(self) -> None:
        if distributed.is_main():
            shutil.rmtree(self.folder, ignore_errors=True)


def _full(*, cpu_offload: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def _inner(optimizer: Any) -> Any:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimiser


def _gathered_optimizer(model: torch.nn.Module | None, optimizer: Any) -> dict[str, Any] | None:
    """The full optimiser state of a sharded model's optimiser on the main process (a collective)."""
    if model is None or not sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, _inner(optimizer), options=_full(cpu_offload=True))
