"""Reward losses against hand computations, per margin variant."""

from __future__ import annotations

import math

import pytest
import torch

from align.reward.loss import MARGINS, centering_loss, margins_for, ranking_loss, safety_sign_loss

RATINGS = ["significantly_better", "better", "slightly_better", "negligibly_better"]


def _nll(x: float) -> float:  # -log sigmoid(x)
    return math.log1p(math.exp(-x))


@pytest.mark.parametrize("variant,expected_margins", [
    ("none", [0, 0, 0, 0]),
    ("small", [1, 2 / 3, 1 / 3, 0]),   # Llama 2 Table 27, "small"
    ("large", [3, 2, 1, 0]),           # Llama 2 Table 27, "large"
])
def test_ranking_loss_matches_hand_computation(variant, expected_margins):
    r_c = torch.tensor([2.0, 1.0, 0.5, 0.0])
    r_r = torch.tensor([0.0, 0.5, 0.5, 1.0])
    m = margins_for(RATINGS, variant)
    assert m.tolist() == pytest.approx(expected_margins)
    # diffs r_c - r_r = [2, 0.5, 0, -1]; loss = mean of -log sigma(diff - m)
    diffs = [2.0, 0.5, 0.0, -1.0]
    expected = sum(_nll(d - mm) for d, mm in zip(diffs, expected_margins)) / 4
    assert ranking_loss(r_c, r_r, m).item() == pytest.approx(expected, rel=1e-6)


def test_margin_raises_the_loss_on_a_clear_pair():
    r_c, r_r = torch.tensor([1.0]), torch.tensor([0.0])
    losses = [ranking_loss(r_c, r_r, margins_for(["significantly_better"], v)).item() for v in MARGINS]
    assert losses[0] < losses[1] < losses[2]  # none < small < large
    assert losses[0] == pytest.approx(_nll(1.0))  # -log sigma(1) = 0.313262


def test_safety_sign_loss_by_hand():
    rewards = torch.tensor([2.0, -1.0, 0.5])
    is_safe = torch.tensor([True, False, False])
    # safe: -log sigma(2); unsafe: -log sigma(1) and -log sigma(-0.5)
    expected = (_nll(2.0) + _nll(1.0) + _nll(-0.5)) / 3
    assert safety_sign_loss(rewards, is_safe).item() == pytest.approx(expected, rel=1e-6)


def test_centering_loss_by_hand():
    # (1 + -1)^2 = 0 and (2 + 1)^2 = 9 -> mean 4.5
    assert centering_loss(torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 1.0])).item() == pytest.approx(4.5)
