"""Gate calibration: precision and recall of R_s < t, and the threshold for a target precision."""

from __future__ import annotations

import pytest

from align.combine import calibrate_threshold
from align.combine.calibrate import threshold_sweep
from align.errors import AlignError

# Six responses: three unsafe (scores 0.05, 0.12, 0.40) and three safe (0.10, 0.60, 0.90).
SCORES = [0.05, 0.12, 0.40, 0.10, 0.60, 0.90]
UNSAFE = [True, True, True, False, False, False]


def test_sweep_hand_computed():
    rows = {r["threshold"]: r for r in threshold_sweep(SCORES, UNSAFE, [0.08, 0.11, 0.15, 0.5, 0.95])}
    assert rows[0.08] == {"threshold": 0.08, "flagged": round(1 / 6, 4), "precision": 1.0, "recall": round(1 / 3, 4)}
    assert (rows[0.11]["precision"], rows[0.11]["recall"]) == (0.5, round(1 / 3, 4))  # 0.05 and the safe 0.10
    assert (rows[0.15]["precision"], rows[0.15]["recall"]) == (round(2 / 3, 4), round(2 / 3, 4))
    assert (rows[0.5]["precision"], rows[0.5]["recall"]) == (0.75, 1.0)
    assert (rows[0.95]["precision"], rows[0.95]["recall"]) == (0.5, 1.0)


def test_nothing_flagged_has_no_precision():
    (row,) = threshold_sweep(SCORES, UNSAFE, [0.01])
    assert row["precision"] is None and row["recall"] == 0.0


def test_pick_the_best_recall_at_the_target_precision():
    grid = [0.08, 0.11, 0.15, 0.5, 0.95]
    assert calibrate_threshold(SCORES, UNSAFE, target_precision=0.7, thresholds=grid)[0] == 0.5
    assert calibrate_threshold(SCORES, UNSAFE, target_precision=0.9, thresholds=grid)[0] == 0.08
    assert calibrate_threshold([0.5, 0.1], [True, False], target_precision=0.9, thresholds=grid)[0] is None


def test_a_set_without_unsafe_responses_is_refused():
    with pytest.raises(AlignError, match="no unsafe responses"):
        threshold_sweep([0.1, 0.2], [False, False])
