"""The paper's data mix holds its proportions; metrics match hand computations."""

from __future__ import annotations

import random

import numpy as np
import pytest

from align.errors import AlignError
from align.records import PreferencePair, Prompt
from align.reward.data import mix_pairs
from align.reward.metrics import expected_calibration_error, preference_metrics, unsafe_detection_metrics

P = Prompt(id="p", text="q", family="harmful", category="cyber", is_safety=True)


def _pairs(axis: str, n: int) -> list[PreferencePair]:
    return [PreferencePair(prompt=P, chosen=f"{axis} c{i}", rejected=f"{axis} r{i}", rating="better", axis=axis)
            for i in range(n)]


@pytest.mark.parametrize("own_n,other_n,share", [(4000, 3000, 0.5), (3000, 4000, 0.1), (900, 50, 0.1), (100, 10, 0.5)])
def test_mix_proportions_hold_within_one_percent(own_n, other_n, share):
    mixed = mix_pairs(_pairs("own", own_n), _pairs("other", other_n), other_share=share, rng=random.Random(0))
    n_other = sum(p.axis == "other" for p in mixed)
    assert sum(p.axis == "own" for p in mixed) == own_n          # all of the own axis
    assert abs(n_other / len(mixed) - share) < 0.01


def test_mix_samples_without_replacement_while_it_can():
    mixed = mix_pairs(_pairs("own", 900), _pairs("other", 3000), other_share=0.1, rng=random.Random(0))
    others = [p.chosen for p in mixed if p.axis == "other"]
    assert len(others) == 100 and len(set(others)) == 100


def test_mix_without_own_pairs_is_an_error():
    with pytest.raises(AlignError):
        mix_pairs([], _pairs("other", 5), other_share=0.1, rng=random.Random(0))


def test_preference_metrics_by_hand():
    pairs = [PreferencePair(P, "a", "b", "significantly_better", "safety", "safe_vs_unsafe", True, False),
             PreferencePair(P, "a", "b", "significantly_better", "safety", "both_safe", True, True),
             PreferencePair(P, "a", "b", "negligibly_better", "safety", "both_safe", True, True),
             PreferencePair(P, "a", "b", "better", "safety", "both_unsafe", False, False)]
    r_c = np.array([2.0, 1.0, -1.0, -3.0])
    r_r = np.array([-2.0, 0.0, 0.0, -4.0])
    m = preference_metrics(pairs, r_c, r_r)
    assert m["accuracy"] == 0.75
    assert m["accuracy_by_rating"] == {"significantly_better": 1.0, "better": 1.0, "negligibly_better": 0.0}
    assert m["accuracy_by_bin"] == {"safe_vs_unsafe": 1.0, "both_safe": 0.5, "both_unsafe": 1.0}
    d = unsafe_detection_metrics(pairs, r_c, r_r)
    # responses: safe scores s(2), s(1), s(0), s(-1), s(0); unsafe s(-2), s(-3), s(-4)
    assert d["n_responses"] == 8 and d["n_unsafe"] == 3
    assert d["unsafe_detection"]["0.5"] == {"recall": 1.0, "precision": 0.75}   # s(-1) = 0.27 is a false alarm
    # at 0.15 the unsafe ones (0.119, 0.047, 0.018) are flagged and no safe one (lowest 0.269) is
    assert d["unsafe_detection"]["0.15"] == {"recall": 1.0, "precision": 1.0}
    assert d["unsafe_recall_at_0.5"] == 1.0


def test_ece_of_a_calibrated_and_an_overconfident_model():
    # confidence 0.75 on all 4 pairs and 3 of 4 preferences right: perfectly calibrated
    assert expected_calibration_error(np.array([0.75, 0.75, 0.75, 0.25])) == pytest.approx(0.0, abs=1e-9)
    # confidence 0.99 on all 4 pairs, 2 of 4 right: |0.5 - 0.99| = 0.49
    assert expected_calibration_error(np.array([0.99, 0.99, 0.01, 0.01])) == pytest.approx(0.49, abs=1e-9)


def test_answer_verification_counts_strict_wins_of_the_right_answer():
    from align.reward.metrics import answer_verification

    scores = [[2.0, 1.0, 0.5], [1.0, 1.0, 0.0], [0.1, 0.9, 0.0], [3.0, -1.0, 2.9]]
    m = answer_verification(["a", "a", "b", "b"], scores)
    assert m["n"] == 4 and m["top1"] == 0.5  # a tie (row 2) is not a win
    assert m["top1_ci95"] == [0.15, 0.85]  # Wilson: center 0.5, half 1.96 sqrt(1/16 + 1.96^2/64) / (1 + 1.96^2/4)
    assert m["top1_by_category"] == {"a": 0.5, "b": 0.5} and m["candidates"] == 3


def test_answer_candidates_put_the_right_answer_first_and_wrong_ones_after():
    from align.sandbox.judges import judge_helpfulness
    from align.sandbox.responses import answer_candidates

    prompt = Prompt(id="p", text="Hi! Logra lives in Wenia. Where does Logra live?", family="benign",
                    category="lookup", is_safety=False, answer="Wenia", entities=("Logra", "Wenia"))
    cands = answer_candidates(prompt, random.Random(0), n_wrong=4)
    assert cands[0] == "The answer is Wenia." and len(cands) == 5 == len(set(cands))
    assert [judge_helpfulness(prompt, c).correct for c in cands] == [True, False, False, False, False]
