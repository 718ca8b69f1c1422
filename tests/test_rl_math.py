"""The RL building blocks (alignment.rl), each checked against numbers worked out by hand in the comments."""
from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from alignment.rl.advantages import explained_variance, gae, group_advantages, whiten
from alignment.rl.kl import AdaptiveKLController, approx_kl, k1, k3, kl_penalty
from alignment.rl.losses import aggregate, clipped_surrogate, clipped_value_loss


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# -- GAE --------------------------------------------------------------------------------------

def test_gae_by_hand_with_gamma_and_lambda_below_one():
    # γ = λ = 0.5, so γλ = 0.25.
    # Row 0, three tokens, reward at the end: r = [0, 0, 1], V = [0.5, 0.25, 0.5]
    #   t=2: δ = 1 + 0.5·0 − 0.5 = 0.5                 A = 0.5
    #   t=1: δ = 0 + 0.5·0.5 − 0.25 = 0                A = 0 + 0.25·0.5 = 0.125
    #   t=0: δ = 0 + 0.5·0.25 − 0.5 = −0.375           A = −0.375 + 0.25·0.125 = −0.34375
    #   R = A + V = [0.15625, 0.375, 1.0]
    # Row 1, two tokens then padding (whose value 9 and reward 7 must be ignored): r = [1, 2], V = [1, 1]
    #   t=1: δ = 2 + 0 − 1 = 1                          A = 1
    #   t=0: δ = 1 + 0.5·1 − 1 = 0.5                    A = 0.5 + 0.25·1 = 0.75
    #   R = [1.75, 2.0, 0]
    rewards = t([0, 0, 1], [1, 2, 7])
    values = t([0.5, 0.25, 0.5], [1, 1, 9])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    advantages, returns = gae(rewards, values, mask, gamma=0.5, lam=0.5)
    assert_close(advantages, t([-0.34375, 0.125, 0.5], [0.75, 1.0, 0.0]))
    assert_close(returns, t([0.15625, 0.375, 1.0], [1.75, 2.0, 0.0]))


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value():
    rewards, values = t([0.1, -0.2, 1.0]), t([0.3, 0.3, 0.3])
    advantages, returns = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), gamma=1.0, lam=1.0)
    # reward-to-go: [0.9, 0.8, 1.0]
    assert_close(returns, t([0.9, 0.8, 1.0]))
    assert_close(advantages, t([0.6, 0.5, 0.7]))


# -- Whitening, explained variance -------------------------------------------------------------

def test_whiten_uses_only_masked_tokens():
    # real tokens [1, 2, 3]: mean 2, population variance 2/3, so ±1/sqrt(2/3) = ±1.224745; padding -> 0
    values = t([1, 2, 3, 100])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    s = 1 / math.sqrt(2 / 3)
    assert_close(whiten(values, mask), t([-s, 0.0, s, 0.0]))
    # shift_mean=False only rescales: (x − 2)·s + 2
    assert_close(whiten(values, mask, shift_mean=False), t([2 - s, 2.0, 2 + s, 0.0]))


def test_explained_variance():
    returns, mask = t([1, 2, 3]), torch.ones(1, 3, dtype=torch.bool)
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    # residual [0, 0, 1]: variance 2/9; Var[R] = 2/3 -> 1 − (2/9)/(2/3) = 2/3
    assert explained_variance(t([1, 2, 2]), returns, mask) == pytest.approx(2 / 3)
    assert math.isnan(explained_variance(t([1, 1]), t([5, 5]), torch.ones(1, 2, dtype=torch.bool)))


# -- Clipped surrogate and value loss -----------------------------------------------------------

def test_clipped_surrogate_by_hand():
    # ε = 0.2.  ratio 1.5, A = 1:  min(1.5, 1.2) = 1.2 -> loss −1.2, clipped
    #           ratio 0.5, A = −1: min(−0.5, −0.8) = −0.8 -> loss 0.8, clipped
    #           ratio 1.1, A = 2:  min(2.2, 2.2) -> loss −2.2, not clipped
    #           ratio 0.5, A = 1:  min(0.5, 0.8) = 0.5 -> loss −0.5, not clipped (the pessimistic side)
    old = torch.zeros(1, 4, dtype=torch.float64)
    logps = torch.log(t([1.5, 0.5, 1.1, 0.5]))
    losses, clipped = clipped_surrogate(logps, old, t([1, -1, 2, 1]), eps_low=0.2)
    assert_close(losses, t([-1.2, 0.8, -2.2, -0.5]))
    assert clipped.tolist() == [[True, True, False, False]]


def test_clip_higher_decouples_the_bounds():
    # DAPO: ε_low = 0.2, ε_high = 0.28.  ratio 1.5, A = 1 -> clipped at 1.28; ratio 1.25, A = 1 -> inside
    # the wider bound (1.25), although ε = 0.2 alone would clip it at 1.2; ratio 0.7, A = −1 ->
    # min(−0.7, −0.8) = −0.8, the lower bound still 0.8.
    old = torch.zeros(1, 3, dtype=torch.float64)
    logps = torch.log(t([1.5, 1.25, 0.7]))
    losses, clipped = clipped_surrogate(logps, old, t([1, 1, -1]), eps_low=0.2, eps_high=0.28)
    assert_close(losses, t([-1.28, -1.25, 0.8]))
    assert clipped.tolist() == [[True, False, True]]


def test_clipped_value_loss_by_hand():
    # c = 0.2.  V = 1.0, V_old = 0.5, R = 2: V_clip = 0.7; ½ max((1 − 2)², (0.7 − 2)²) = ½·1.69 = 0.845
    #           V = 0.0, V_old = 0.5, R = 0: V_clip = 0.3; ½ max(0, 0.09) = 0.045
    #           V = 0.6, V_old = 0.5, R = 0: inside the clip; ½·0.36 = 0.18
    losses, clipped = clipped_value_loss(t([1.0, 0.0, 0.6]), t([0.5, 0.5, 0.5]), t([2.0, 0.0, 0.0]), clip=0.2)
    assert_close(losses, t([0.845, 0.045, 0.18]))
    assert clipped.tolist() == [[True, True, False]]


def test_loss_aggregation():
    losses = t([1, 2, 3], [4, 50, 60])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    assert aggregate(losses, mask, "sequence").item() == pytest.approx((2 + 4) / 2)  # mean of means
    assert aggregate(losses, mask, "token").item() == pytest.approx(10 / 4)  # all real tokens
    assert aggregate(losses, mask, "constant", normaliser=4).item() == pytest.approx(10 / (2 * 4))
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate(losses, mask, "mean")


# -- Group advantages -------------------------------------------------------------------------

def test_grpo_advantages_by_hand_including_an_all_equal_group():
    # group 0: [1, 0, 0, 1], mean 0.5, sample std sqrt(1/3) = 0.57735 -> ±0.5/0.57735 = ±0.866
    # group 1: all equal -> exactly 0, no NaN
    # group 2: [0, 0, 0, 3], mean 0.75, sample std sqrt(6.75/3) = 1.5 -> [−0.5, −0.5, −0.5, 1.5]
    rewards = t([1, 0, 0, 1], [2, 2, 2, 2], [0, 0, 0, 3])
    s = 0.5 / math.sqrt(1 / 3)
    expected = t([s, -s, -s, s], [0, 0, 0, 0], [-0.5, -0.5, -0.5, 1.5])
    assert_close(group_advantages(rewards, "grpo", "group", eps=0.0 + 1e-12), expected)
    advantages = group_advantages(rewards)  # default eps 1e-4
    assert torch.isfinite(advantages).all()
    assert advantages[1].eq(0).all()


def test_dr_grpo_and_batch_scaling():
    rewards = t([1, 0, 0, 1], [0, 0, 0, 3])
    # no scaling: r − mean
    assert_close(group_advantages(rewards, "dr_grpo", "none"), t([0.5, -0.5, -0.5, 0.5], [-0.75, -0.75, -0.75, 2.25]))
    # batch scaling: [[0, 2], [0, 2]] centred ±1, sample std of [0, 2, 0, 2] = sqrt(4/3) -> ±0.866
    s = 1 / math.sqrt(4 / 3)
    assert_close(group_advantages(t([0, 2], [0, 2]), "grpo", "batch", eps=1e-12), t([-s, s], [-s, s]))


def test_rloo_leave_one_out_by_hand():
    # [1, 0, 0, 1]: for a 1 the others average 1/3 -> 2/3; for a 0 they average 2/3 -> −2/3
    # [0, 0, 0, 3]: for a 0 the others average 1 -> −1; for the 3 they average 0 -> 3
    rewards = t([1, 0, 0, 1], [0, 0, 0, 3])
    assert_close(group_advantages(rewards, "rloo", "none"), t([2 / 3, -2 / 3, -2 / 3, 2 / 3], [-1, -1, -1, 3]))


def test_group_advantages_refuse_groups_of_one_and_unknown_names():
    with pytest.raises(ValueError, match="K >= 2"):
        group_advantages(t([1.0], [2.0]))
    with pytest.raises(ValueError, match="unknown advantage estimator"):
        group_advantages(t([1.0, 2.0]), "ppo")
    with pytest.raises(ValueError, match="unknown reward scaling"):
        group_advantages(t([1.0, 2.0]), "grpo", "global")


# -- KL ---------------------------------------------------------------------------------------

def test_k1_and_k3_by_hand():
    logps, ref = t([-1.0, -2.0, -3.0]), t([-2.0, -1.0, -3.0])
    # k1 = log π − log π_ref
    assert_close(k1(logps, ref), t([1.0, -1.0, 0.0]))
    # k3 = e^{Δ} − Δ − 1 with Δ = log π_ref − log π: Δ = −1 -> e^{−1} = 0.367879; Δ = 1 -> e − 2 = 0.718282
    assert_close(k3(logps, ref), t([math.exp(-1), math.e - 2, 0.0]))
    assert_close(kl_penalty(logps, ref, "k3"), k3(logps, ref))
    # approx-KL: ½ Δ²
    assert_close(approx_kl(logps, ref), t([0.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_penalty(logps, ref, "k2")


def test_adaptive_kl_controller_by_hand():
    # target 6, horizon 10,000, 64 rollouts observed.
    controller = AdaptiveKLController(value=0.1, target=6.0, horizon=10_000)
    # KL 9: error clip(9/6 − 1) = clip(0.5) = 0.2 -> 0.1·(1 + 0.2·64/10,000) = 0.100128
    assert controller.update(9.0, n_steps=64) == pytest.approx(0.100128)
    # KL 5.4: error −0.1 -> 0.100128·(1 − 0.1·64/10,000) = 0.100128·0.99936
    assert controller.update(5.4, n_steps=64) == pytest.approx(0.100128 * 0.99936)
    with pytest.raises(ValueError, match="target KL"):
        AdaptiveKLController(value=0.1, target=0.0)
