"""Progress bars for the steps that take more than a few seconds (tqdm, on stderr).

A bar shows only on a terminal (tqdm's ``disable=None``) and never under ``--quiet``
(``set_quiet``, or ``ALIGN_QUIET=1`` in the environment, which worker processes inherit).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def quiet() -> bool:
    return os.environ.get("ALIGN_QUIET", "") not in ("", "0")


def set_quiet(on: bool) -> None:
    """No progress bars (nor stage log lines) in this process and the ones it starts."""
    if on:
        os.environ["ALIGN_QUIET"] = "1"
    else:
        os.environ.pop("ALIGN_QUIET", None)


def bar(iterable: Iterable[T], *, desc: str, unit: str = "batch", total: int | None = None,
        enabled: bool = True) -> tqdm:
    """``iterable`` with a bar (``set_postfix`` on it shows a loss); silent off a terminal or when quiet."""
    return tqdm(iterable, desc=desc, unit=unit, total=total, leave=False, dynamic_ncols=True,
                disable=True if (quiet() or not enabled) else None)


def batches(n: int, batch_size: int, *, desc: str) -> Iterator[int]:
    """The start index of each batch of ``batch_size`` over ``n`` items, with a bar."""
    return iter(bar(range(0, n, batch_size), desc=desc))
