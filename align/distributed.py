"""The processes of a run launched by ``accelerate launch`` (or torchrun): who writes, who waits, and
how work is shared out and gathered back.

One process (or a plain ``align run``) is the case everything reduces to: rank 0 of 1, ``barrier``
returns at once, ``shard`` keeps everything, ``gather`` returns its argument.

- Every process runs every stage (training needs them all); only the main process writes rounds,
  manifests, checkpoints and the lock. The others build in a scratch folder that is thrown away, and
  wait at a barrier until the main process has committed the round before anything reads it.
- Work that splits by item (sampling) is sharded in fixed-size batches, ``shard``: batch ``b`` goes to
  rank ``b mod N`` and is seeded by ``batch_seed(seed, b)``, so the gathered result, put back in batch
  order, does not depend on the number of processes.
"""

from __future__ import annotations

import atexit
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from align.errors import AlignError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
_AT_EXIT: list[bool] = []


class PeerLost(AlignError):
    """Another process of the run stopped (killed, or failed): this one cannot go on."""

    exit_code = 1  # not bad input


def peer_lost(error: BaseException) -> PeerLost | None:
    """``error`` as a PeerLost when it is a collective failing because a peer is gone, else None."""
    if isinstance(error, PeerLost):
        return error
    if not launched() or not isinstance(error, RuntimeError):
        return None
    text = str(error)
    if type(error).__name__ != "DistBackendError" and not any(
            s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "timed out")):
        return None
    return PeerLost(f"process {os.environ.get('RANK', '0')}: another process of this run stopped "
                    f"({text.splitlines()[0][:160]}); the round being built is not committed: align run resumes "
                    "from the last complete round")


def _collective(fn: F) -> F:
    """A collective whose failure (a peer that died: gloo's "Connection closed by peer", NCCL's timeouts)
    is reported as the run stopping, not as a bug."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:  # torch.distributed.DistBackendError is one
            lost = peer_lost(e)
            if lost is None:
                raise
            raise lost from None
    return wrapper  # type: ignore[return-value]


def state() -> Any:
    """accelerate's ``PartialState`` of this process (it sets up the process group under a launcher).
    On a machine without a GPU, or with ``ACCELERATE_USE_CPU``, the processes run on the CPU with gloo."""
    import torch
    from accelerate import PartialState

    flag = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    state = PartialState(cpu=flag or not torch.cuda.is_available())
    if launched() and not _AT_EXIT:  # a process group left up at exit aborts the process (gloo)
        atexit.register(shutdown)
        _AT_EXIT.append(True)
    return state


def launched() -> bool:
    """Whether this process was started by a distributed launcher (torchrun, ``accelerate launch``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) outside a launcher, without touching the process group."""
    if not launched():
        return 0, 1
    s = state()
    return s.process_index, s.num_processes


def is_main() -> bool:
    return world()[0] == 0


@_collective
def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in one process)."""
    if launched():
        state().wait_for_everyone()


@_collective
def gather(items: list[T]) -> list[T]:
    """Every process's ``items``, concatenated in rank order, on every process."""
    if not launched():
        return items
    from accelerate.utils import gather_object

    return gather_object(list(items))


@_collective
def from_main(obj: T) -> T:
    """The main process's ``obj`` on every process (what only the main process may read or decide, such as
    a checkpoint to resume from, which the others must agree on)."""
    if not launched():
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]


def batch_seed(seed: int, batch: int) -> int:
    """The seed of batch ``batch`` of a sharded draw: the same for it whichever process runs it."""
    return (seed * 1_000_003 + batch) % (2**63)


def shard(n_batches: int) -> range:
    """The batch indices this process runs: ``rank, rank + N, ...``."""
    rank, size = world()
    return range(rank, n_batches, size)


def my_batches(order: Sequence[int], batch_size: int) -> list[tuple[int, list[int]]]:
    """This process's batches of ``order`` (cut into batches of ``batch_size``): ``(b, items)`` for each
    batch index ``b`` of ``shard``."""
    n_batches = -(-len(order) // batch_size)
    return [(b, list(order[b * batch_size:(b + 1) * batch_size])) for b in shard(n_batches)]


def my_slice(items: Sequence[T], rank: int | None = None, size: int | None = None) -> Sequence[T]:
    """This process's contiguous share of ``items`` (one global batch split over the processes). A share that
    would be empty (fewer items than processes) repeats an item, so every process takes every step."""
    if rank is None or size is None:
        rank, size = world()
    per = -(-len(items) // size)
    share = items[rank * per:(rank + 1) * per]
    return share if len(share) else items[rank % len(items):rank % len(items) + 1]


def gather_batches(local: Sequence[tuple[int, T]]) -> list[T]:
    """``(batch index, result)`` pairs from every process, as one list in batch order."""
    return [result for _, result in sorted(gather(list(local)), key=lambda pair: pair[0])]


def shutdown() -> None:
    """Tear the process group down at exit (gloo aborts the process otherwise)."""
    if launched():
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
