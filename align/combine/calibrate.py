"""Calibrating the gate's threshold: ``R_s < t`` as a detector of unsafe responses.

Llama 2 (section 3.2.2): t = 0.15 gave precision 0.89 and recall 0.55 on the Meta Safety test
set. Given safety scores (probabilities) and gold unsafe labels, sweep t and pick the threshold
with the highest recall among those reaching a target precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from align.errors import AlignError

DEFAULT_GRID = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))


def threshold_sweep(r_s: Sequence[float], unsafe: Sequence[bool],
                    thresholds: Sequence[float] = DEFAULT_GRID) -> list[dict[str, Any]]:
    """Precision, recall and flagged share of ``R_s < t`` for each ``t``."""
    from sklearn.metrics import precision_score, recall_score  # here: loading the config needs no sklearn (1 s)

    r_s, unsafe = np.asarray(r_s, dtype=float), np.asarray(unsafe, dtype=bool)
    if len(r_s) != len(unsafe) or not len(r_s):
        raise AlignError(f"need as many labels as scores, at least one: {len(r_s)} scores, {len(unsafe)} labels")
    if not unsafe.any():
        raise AlignError("the labelled set holds no unsafe responses: precision and recall are undefined")
    rows = []
    for t in thresholds:
        flagged = r_s < t
        rows.append({"threshold": round(float(t), 4), "flagged": round(float(flagged.mean()), 4),
                     "precision": round(float(precision_score(unsafe, flagged, zero_division=0)), 4)
                     if flagged.any() else None,
                     "recall": round(float(recall_score(unsafe, flagged)), 4)})
    return rows


def calibrate_threshold(r_s: Sequence[float], unsafe: Sequence[bool], *, target_precision: float,
                        thresholds: Sequence[float] = DEFAULT_GRID) -> tuple[float | None, list[dict[str, Any]]]:
    """The threshold with the best recall whose precision reaches ``target_precision`` (None if none
    does), and the whole sweep."""
    if not 0 < target_precision <= 1:
        raise AlignError(f"target precision {target_precision:g} is outside (0, 1] (a precision; Llama 2: 0.89)")
    rows = threshold_sweep(r_s, unsafe, thresholds)
    ok = [r for r in rows if r["precision"] is not None and r["precision"] >= target_precision]
    best = max(ok, key=lambda r: (r["recall"], r["threshold"]))["threshold"] if ok else None
    return best, rows
