"""The PPO pieces (align/rl) against independent float64 loops on random tensors with ragged masks."""

from __future__ import annotations

import math

import pytest
import torch

from align.rl import gae, group_norm_advantages, kl_penalty, masked_whiten, policy_loss, rloo_advantages, value_loss
from align.rl.lagrangian import actor_advantage, lagrange_step
from align.rl.rollout import Rollout, sequence_reward


def ragged(seed: int, b: int = 6, t: int = 9):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t  # one full row, one of length 1
    lengths[1] = 1
    mask = (torch.arange(t)[None, :] < lengths[:, None]).double()
    return g, lengths.tolist(), mask


def rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0)])
def test_gae_equals_a_loop_over_each_response(seed, gamma, lam):
    g, lengths, mask = ragged(seed)
    rewards, values = rand(g, *mask.shape), rand(g, *mask.shape)
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
    for i, n in enumerate(lengths):
        a_next = 0.0
        for t in reversed(range(n)):
            v_next = values[i, t + 1].item() if t + 1 < n else 0.0
            delta = rewards[i, t].item() + gamma * v_next - values[i, t].item()
            a_next = delta + gamma * lam * a_next
            assert adv[i, t].item() == pytest.approx(a_next, abs=1e-6)
            assert ret[i, t].item() == pytest.approx(a_next + values[i, t].item(), abs=1e-6)
        assert adv[i, n:].abs().sum() == 0 and ret[i, n:].abs().sum() == 0  # padding after the response


def test_gae_with_gamma_and_lambda_one_is_the_reward_to_go_minus_the_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 7.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.2, 0.1, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert adv[0].tolist() == pytest.approx([0.5, 0.8, 0.9, 0.0]) and ret[0].tolist() == pytest.approx([1, 1, 1, 0])


@pytest.mark.parametrize("seed", [0, 1])
def test_masked_whiten_uses_only_response_tokens(seed):
    g, lengths, mask = ragged(seed)
    x = rand(g, *mask.shape) * 3 + 1
    x_padded = x + (1 - mask) * 1e6  # huge values on padding change nothing
    out = masked_whiten(x_padded, mask)
    vals = [x[i, t].item() for i, n in enumerate(lengths) for t in range(n)]
    mean = math.fsum(vals) / len(vals)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / len(vals) + 1e-8)
    for i, n in enumerate(lengths):
        for t in range(n):
            assert out[i, t].item() == pytest.approx((x[i, t].item() - mean) / std, abs=1e-6)
    assert (out * (1 - mask)).abs().sum() == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_policy_loss_equals_the_clipped_surrogate_by_hand(seed):
    g, lengths, mask = ragged(seed)
    logp, old = rand(g, *mask.shape) * 0.3, rand(g, *mask.shape) * 0.3
    adv = rand(g, *mask.shape)
    loss, stats = policy_loss(logp, old, adv, mask, clip=0.2)
    terms, clipped = [], 0
    for i, n in enumerate(lengths):
        for t in range(n):
            r = math.exp(logp[i, t].item() - old[i, t].item())
            a = adv[i, t].item()
            terms.append(max(-a * r, -a * min(max(r, 0.8), 1.2)))
            clipped += abs(r - 1) > 0.2
    assert loss.item() == pytest.approx(math.fsum(terms) / len(terms), abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(clipped / len(terms), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_loss_equals_the_clipped_square_by_hand(seed):
    g, lengths, mask = ragged(seed)
    v, v_old, ret = rand(g, *mask.shape), rand(g, *mask.shape), rand(g, *mask.shape)
    loss, _ = value_loss(v, v_old, ret, mask, clip=0.2)
    terms = []
    for i, n in enumerate(lengths):
        for t in range(n):
            vc = v_old[i, t].item() + min(max(v[i, t].item() - v_old[i, t].item(), -0.2), 0.2)
            terms.append(0.5 * max((v[i, t].item() - ret[i, t].item()) ** 2, (vc - ret[i, t].item()) ** 2))
    assert loss.item() == pytest.approx(math.fsum(terms) / len(terms), abs=1e-6)


def test_kl_estimators_by_hand():
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.5, -1.0]], dtype=torch.float64)
    assert kl_penalty(logp, ref, "k1")[0].tolist() == pytest.approx([0.5, -1.0], abs=1e-12)
    # k3 = (r - 1) - log r with r = pi_ref / pi
    expected = [(math.exp(-0.5) - 1) + 0.5, (math.exp(1.0) - 1) - 1.0]
    assert kl_penalty(logp, ref, "k3")[0].tolist() == pytest.approx(expected, abs=1e-12)
    assert (kl_penalty(ref, logp, "k3") >= 0).all()
    with pytest.raises(ValueError, match="k2"):
        kl_penalty(logp, ref, "k2")


def test_rloo_and_group_norm_baselines_by_hand():
    s = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0], dtype=torch.float64)
    # prompt 1: 1 - (2 + 6) / 2 = -3, 2 - 3.5, 6 - 1.5; prompt 2: 0 - 1.5, 0 - 1.5, 3 - 0
    assert rloo_advantages(s, 3).tolist() == pytest.approx([-3.0, -1.5, 4.5, -1.5, -1.5, 3.0])
    out = group_norm_advantages(s, 3)
    m, sd = 3.0, math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2)
    assert out[:3].tolist() == pytest.approx([(1 - m) / sd, (2 - m) / sd, (6 - m) / sd], abs=1e-5)
    with pytest.raises(ValueError):
        rloo_advantages(s, 1)


def test_the_sequence_score_lands_on_the_last_real_token_not_on_padding():
    # pad id == EOS id (2): padding is found from the lengths, never by comparing ids
    rollout = Rollout.build([[5, 6], [5]], [[7, 8, 2], [2]], pad_id=2)
    assert rollout.mask.tolist() == [[1, 1, 1], [1, 0, 0]] and rollout.last.tolist() == [2, 0]
    assert rollout.positions[0].tolist() == [1, 2, 3] and rollout.positions[1, 0].item() == 0
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 9.0, 9.0]])
    rewards = sequence_reward(torch.tensor([1.0, -1.0]), kl, rollout, beta=0.5)
    assert rewards[0].tolist() == pytest.approx([-0.05, -0.1, 1.0 - 0.15])
    assert rewards[1].tolist() == pytest.approx([-1.0 - 0.2, 0.0, 0.0])


def test_lagrange_multiplier_rises_above_the_threshold_and_falls_below_it():
    log_lam, lams = 0.0, []
    for cost in [2.0, 1.5, 1.0, 0.5, -0.5, -1.0, -1.0, -1.0]:  # threshold 0
        log_lam = lagrange_step(log_lam, cost, 0.0, lr=0.1)
        lams.append(math.exp(log_lam))
    assert all(b > a for a, b in zip(lams[:4], lams[1:4]))  # rising while the cost is above
    assert all(b < a for a, b in zip(lams[3:], lams[4:]))  # falling once it is below
    assert lagrange_step(0.0, 5.0, 0.0, lr=1.0, max_lambda=2.0) == pytest.approx(math.log(2.0))
    # one step by hand: log lambda += lr * lambda * (C - d)
    assert lagrange_step(math.log(2.0), 1.0, 0.25, lr=0.1) == pytest.approx(math.log(2.0) + 0.1 * 2.0 * 0.75)
    with pytest.raises(ValueError):
        lagrange_step(0.0, float("nan"), 0.0, lr=0.1)
    a_r, a_c = torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.0])
    assert actor_advantage(a_r, a_c, 3.0).tolist() == pytest.approx([(1 - 6) / 4, -1 / 4])
