"""What every benchmark shares: ours and the peer alternated with medians, one results entry with its
ratio oriented so that higher is better for us, and the machine's measured matmul peak."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def alternate(ours: Callable[[], Any], peer: Callable[[], Any], repeats: int = 3) -> tuple[list[Any], list[Any]]:
    """Run ``ours`` then ``peer``, ``repeats`` times each, alternating (a noisy machine slows both alike);
    returns each side's results in order."""
    a, b = [], []
    for _ in range(repeats):
        a.append(ours())
        b.append(peer())
    return a, b


def median(values: list[float]) -> float:
    return statistics.median(values)


def entry(name: str, ours: float, peer: float, unit: str, config: dict[str, Any], *,
          higher_is_better: bool, digits: int = 4) -> dict[str, Any]:
    """A results.json entry (DESIGN.md section 9). ``ratio`` is ours/peer for throughputs and accuracies,
    peer/ours for times: above 1 always means we are better."""
    ratio = ours / peer if higher_is_better else peer / ours
    return {"name": name, "ours": round(ours, digits), "peer": round(peer, digits), "ratio": round(ratio, 4),
            "unit": f"{unit} ({'higher' if higher_is_better else 'lower'} is better; ratio "
                    f"{'ours/peer' if higher_is_better else 'peer/ours'})", "config": config}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 10) -> float:
    """The machine's measured matmul rate for ``dtype`` (GFLOP/s), best of 3: the roof for achieved FLOP/s."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9)
    return best
