"""Preference losses (alignment.losses), checked against their equations computed by hand."""
from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from alignment.losses import (
    DPO_LOSSES,
    bradley_terry_loss,
    dpo_logits,
    dpo_loss,
    hinge_loss,
    implicit_reward_accuracy,
    ipo_loss,
    per_token_average,
    plackett_luce_loss,
    sigmoid_loss,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def neg_log_sigmoid(x: float) -> float:
    """−log σ(x) = log(1 + e^{−x}), written out."""
    return math.log(1 + math.exp(-x))


# -- Bradley-Terry --------------------------------------------------------------------------

def test_bradley_terry_matches_the_equation():
    losses = bradley_terry_loss(t(1.0, -0.5, 2.0), t(0.0, 0.5, 2.0))
    assert_close(losses, t(math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(1.0)), math.log(2)))


def test_bradley_terry_with_margin():
    # scalar margin: −log σ(r_c − r_r − m)
    losses = bradley_terry_loss(t(1.0, -0.5), t(0.0, 0.5), margin=0.5)
    assert_close(losses, t(neg_log_sigmoid(0.5), neg_log_sigmoid(-1.5)))
    # per-example margins
    losses = bradley_terry_loss(t(1.0, -0.5), t(0.0, 0.5), margin=t(0.0, 1.0))
    assert_close(losses, t(neg_log_sigmoid(1.0), neg_log_sigmoid(-2.0)))


def test_bradley_terry_is_stable_for_large_gaps():
    losses = bradley_terry_loss(torch.tensor([500.0, -500.0]), torch.tensor([0.0, 0.0]))
    assert torch.isfinite(losses).all()
    assert_close(losses, torch.tensor([0.0, 500.0]))


# -- DPO family -----------------------------------------------------------------------------

def test_dpo_logits():
    logits = dpo_logits(t(-10.0, -12.0), t(-11.0, -10.5), t(-10.5, -12.0), t(-10.5, -11.0))
    # (π_c − ref_c) − (π_r − ref_r)
    assert_close(logits, t((-10.0 + 10.5) - (-11.0 + 10.5), (-12.0 + 12.0) - (-10.5 + 11.0)))
    assert_close(logits, t(1.0, -0.5))


def test_sigmoid_loss():
    beta = 0.1
    assert_close(sigmoid_loss(t(2.0, -1.0), beta), t(math.log(1 + math.exp(-0.2)), math.log(1 + math.exp(0.1))))


def test_sigmoid_loss_with_label_smoothing():
    beta, eps = 0.1, 0.1
    # −(1−ε) log σ(βx) − ε log σ(−βx)
    expected = [
        (1 - eps) * math.log(1 + math.exp(-beta * x)) + eps * math.log(1 + math.exp(beta * x))
        for x in (2.0, -1.0)
    ]
    assert_close(sigmoid_loss(t(2.0, -1.0), beta, label_smoothing=eps), t(*expected))


def test_ipo_loss():
    beta = 0.25  # target gap 1/(2β) = 2
    assert_close(ipo_loss(t(2.0, 0.0, 3.5), beta), t(0.0, 4.0, 2.25))


def test_hinge_loss():
    beta = 0.5  # max(0, 1 − βx)
    assert_close(hinge_loss(t(4.0, 1.0, -2.0), beta), t(0.0, 0.5, 2.0))


PAIR = dict(
    policy_chosen_logps=t(-10.0, -12.0),
    policy_rejected_logps=t(-11.0, -10.5),
    ref_chosen_logps=t(-10.5, -12.0),
    ref_rejected_logps=t(-10.5, -11.0),
)


def test_dpo_loss_sigmoid_and_its_metrics():
    out = dpo_loss(**PAIR, beta=0.1)
    # logits (1.0, −0.5) as in test_dpo_logits
    assert_close(out.losses, t(math.log(1 + math.exp(-0.1)), math.log(1 + math.exp(0.05))))
    assert_close(out.loss, out.losses.mean())
    chosen = [0.1 * (-10.0 + 10.5), 0.1 * (-12.0 + 12.0)]  # β(π_c − ref_c) = 0.05, 0.0
    rejected = [0.1 * (-11.0 + 10.5), 0.1 * (-10.5 + 11.0)]  # β(π_r − ref_r) = −0.05, 0.05
    assert_close(out.chosen_rewards, t(*chosen))
    assert_close(out.rejected_rewards, t(*rejected))
    assert_close(out.margins, t(chosen[0] - rejected[0], chosen[1] - rejected[1]))

    metrics = out.metrics()
    assert set(metrics) == {
        "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
        "logps/chosen", "logps/rejected",
    }
    assert all(type(v) is float for v in metrics.values())
    assert metrics["rewards/chosen"] == pytest.approx(0.025)
    assert metrics["rewards/rejected"] == pytest.approx(0.0)
    assert metrics["rewards/accuracies"] == pytest.approx(0.5)
    assert metrics["rewards/margins"] == pytest.approx((0.1 + -0.05) / 2)
    assert metrics["logps/chosen"] == pytest.approx(-11.0)
    assert metrics["logps/rejected"] == pytest.approx(-10.75)


@pytest.mark.parametrize("loss_type, expected", [
    ("hinge", [max(0.0, 1 - 0.1 * 1.0), max(0.0, 1 - 0.1 * -0.5)]),
    ("sigmoid", [neg_log_sigmoid(0.1), neg_log_sigmoid(-0.05)]),
])
def test_dpo_loss_picks_the_loss_by_name(loss_type, expected):
    assert_close(dpo_loss(**PAIR, beta=0.1, loss_type=loss_type).losses, t(*expected))


# Token counts of PAIR's completions: chosen (4, 2), rejected (5, 1).
LENGTHS = dict(chosen_lengths=t(4.0, 2.0), rejected_lengths=t(5.0, 1.0))


def test_ipo_averages_the_log_ratios_per_token():
    out = dpo_loss(**PAIR, beta=0.1, loss_type="ipo", **LENGTHS)
    # per-token log-ratios: chosen (−10+10.5)/4 = 0.125, (−12+12)/2 = 0
    #                       rejected (−11+10.5)/5 = −0.1, (−10.5+11)/1 = 0.5
    # h = (0.225, −0.5); target 1/(2β) = 5
    assert_close(out.losses, t((0.225 - 5) ** 2, (-0.5 - 5) ** 2))
    assert_close(out.chosen_rewards, t(0.1 * 0.125, 0.0))
    assert_close(out.rejected_rewards, t(0.1 * -0.1, 0.1 * 0.5))
    assert_close(out.policy_chosen_logps, t(-10.0 / 4, -12.0 / 2))


def test_ipo_does_not_depend_on_length_the_way_a_sum_would():
    """Twice as long answers with the same per-token log-ratios give the same IPO loss."""
    short = dpo_loss(**PAIR, beta=0.1, loss_type="ipo", **LENGTHS)
    doubled = dpo_loss(**{k: 2 * v for k, v in PAIR.items()}, beta=0.1, loss_type="ipo",
                       **{k: 2 * v for k, v in LENGTHS.items()})
    assert_close(doubled.losses, short.losses)


def test_ipo_needs_the_token_counts():
    with pytest.raises(ValueError, match="lengths must be a tensor"):
        dpo_loss(**PAIR, beta=0.1, loss_type="ipo")
    with pytest.raises(ValueError, match="at least one token"):
        per_token_average(t(-1.0), t(0.0))


def test_dpo_loss_with_label_smoothing():
    out = dpo_loss(**PAIR, beta=0.1, label_smoothing=0.2)
    expected = [0.8 * neg_log_sigmoid(b) + 0.2 * neg_log_sigmoid(-b) for b in (0.1, -0.05)]
    assert_close(out.losses, t(*expected))


def test_unknown_loss_type_lists_the_choices():
    with pytest.raises(ValueError, match="unknown loss_type 'kto'") as info:
        dpo_loss(**PAIR, beta=0.1, loss_type="kto")
    for name in DPO_LOSSES:
        assert name in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": 0.0}, "beta must be positive"),
    ({"beta": 0.1, "label_smoothing": 0.5}, "label_smoothing must be in"),
    ({"beta": 0.1, "loss_type": "ipo", "label_smoothing": 0.1}, "only to the 'sigmoid' loss"),
])
def test_invalid_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dpo_loss(**PAIR, **kwargs)


def test_implicit_reward_accuracy_counts_ties_as_wrong():
    assert implicit_reward_accuracy(t(1.0, 0.0, 2.0, -1.0), t(0.0, 0.0, 3.0, -2.0)) == pytest.approx(0.5)
    assert implicit_reward_accuracy(t(), t()) == 0.0


# -- Plackett-Luce --------------------------------------------------------------------------

def test_plackett_luce_with_two_completions_is_dpo():
    torch.manual_seed(0)
    policy = (-20 * torch.rand(16, 2)).requires_grad_()
    ref = -20 * torch.rand(16, 2)
    beta = 0.3
    pl = plackett_luce_loss(policy, ref, beta)
    dpo = dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta, loss_type="sigmoid")
    assert_close(pl.losses, dpo.losses)
    assert_close(pl.rewards[:, 0], dpo.chosen_rewards)
    assert_close(pl.rewards[:, 1], dpo.rejected_rewards)
    (pl_grad,) = torch.autograd.grad(pl.losses.sum(), policy)
    (dpo_grad,) = torch.autograd.grad(dpo.losses.sum(), policy)
    assert_close(pl_grad, dpo_grad)


def test_plackett_luce_three_way_ranking_by_hand():
    beta = 0.5
    policy, ref = [-3.0, -5.0, -4.0], [-4.0, -4.0, -4.5]
    s0, s1, s2 = (beta * (p - r) for p, r in zip(policy, ref))  # 0.5, −0.5, 0.25
    expected = -(s0 - math.log(math.exp(s0) + math.exp(s1) + math.exp(s2))) - (
        s1 - math.log(math.exp(s1) + math.exp(s2))
    )
    out = plackett_luce_loss(torch.tensor([policy], dtype=torch.float64), torch.tensor([ref], dtype=torch.float64), beta)
    assert_close(out.losses, t(expected))
    assert_close(out.rewards, torch.tensor([[s0, s1, s2]], dtype=torch.float64))


# Rewards s = (ln 3, ln 2, 0) (β = 1, reference 0): weights exp(s) = (3, 2, 1).
WEIGHTS = torch.tensor([[math.log(3), math.log(2), 0.0]], dtype=torch.float64)


@pytest.mark.parametrize("ranks, ties, likelihood", [
    # strict: 3/6 · 2/3
    ([0, 1, 2], "efron", 3 / 6 * 2 / 3),
    ([0, 1, 2], "breslow", 3 / 6 * 2 / 3),
    # the best two tied: Efron 3·2 / (6 · (6 − ½·5)); Breslow 3·2 / 6²; the last group is 1/1
    ([0, 0, 1], "efron", 3 * 2 / (6 * (6 - 0.5 * 5))),
    ([0, 0, 1], "breslow", 3 * 2 / 6 ** 2),
    # the worst two tied: first 3/6, then Efron 2·1 / (3 · (3 − ½·3)); Breslow 2·1 / 3²
    ([0, 1, 1], "efron", 3 / 6 * 2 * 1 / (3 * (3 - 0.5 * 3))),
    ([0, 1, 1], "breslow", 3 / 6 * 2 * 1 / 3 ** 2),
    # all three tied: Efron 6 / (6 · (6 − 6/3) · (6 − 2·6/3))
    ([0, 0, 0], "efron", 6 / (6 * 4 * 2)),
])
def test_plackett_luce_with_ties_by_hand(ranks, ties, likelihood):
    out = plackett_luce_loss(WEIGHTS, torch.zeros_like(WEIGHTS), 1.0, ranks=torch.tensor([ranks]), ties=ties)
    assert_close(out.losses, t(-math.log(likelihood)))


def test_plackett_luce_with_distinct_ranks_is_the_strict_loss():
    torch.manual_seed(0)
    policy, ref = -20 * torch.rand(8, 5, dtype=torch.float64), -20 * torch.rand(8, 5, dtype=torch.float64)
    strict = plackett_luce_loss(policy, ref, 0.3).losses
    gapped = torch.tensor([0, 2, 3, 7, 9]).expand(8, 5)  # any strictly increasing places
    for ties in ("efron", "breslow"):
        assert_close(plackett_luce_loss(policy, ref, 0.3, ranks=gapped, ties=ties).losses, strict)
    # the strict loss written out from the equation, for one row
    s = 0.3 * (policy[0] - ref[0])
    by_hand = -sum(s[k] - torch.logsumexp(s[k:], 0) for k in range(5))
    assert_close(strict[0], by_hand)


def test_plackett_luce_ties_with_a_mask_and_gradients():
    policy = torch.tensor([[-3.0, -5.0, -4.0, 1e6], [-2.0, -6.0, -1.0, -3.0]], requires_grad=True)
    ref = torch.tensor([[-4.0, -4.0, -4.5, -1e6], [-2.5, -5.0, -2.0, -3.5]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    ranks = torch.tensor([[0, 1, 1, 0], [0, 0, 2, 2]])  # the padding's rank is ignored
    out = plackett_luce_loss(policy, ref, 0.5, mask=mask, ranks=ranks)
    alone = plackett_luce_loss(policy[:1, :3].detach(), ref[:1, :3], 0.5, ranks=ranks[:1, :3]).losses
    assert_close(out.losses[0], alone[0])
    out.losses.sum().backward()
    assert torch.isfinite(policy.grad).all() and policy.grad[0, 3] == 0.0
    # rewards: row 0 (0.5, −0.5, 0.25, ·), row 1 (0.25, −0.5, 0.5, 0.25); adjacent pairs in strict
    # order only (ties skipped): row 0 (0, 1) gap 1.0; row 1 (1, 2) gap −1.0
    assert out.metrics() == {"rewards/accuracies": pytest.approx(0.5), "rewards/margins": pytest.approx(0.0)}


def test_plackett_luce_rejects_unordered_ranks_and_unknown_ties():
    x = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="non-decreasing"):
        plackett_luce_loss(x, x, 0.1, ranks=torch.tensor([[0, 2, 1]]))
    with pytest.raises(ValueError, match="ties must be one of efron, breslow"):
        plackett_luce_loss(x, x, 0.1, ties="exact")


def test_plackett_luce_mask_pads_shorter_rankings():
    beta = 0.5
    policy3, ref3 = torch.tensor([[-3.0, -5.0, -4.0]]), torch.tensor([[-4.0, -4.0, -4.5]])
    unpadded = plackett_luce_loss(policy3, ref3, beta).losses

    # pad to K = 4 with junk (including a huge value) and batch it with a full K = 4 ranking
    policy4 = torch.tensor([[-3.0, -5.0, -4.0, 1e6], [-2.0, -6.0, -1.0, -3.0]], requires_grad=True)
    ref4 = torch.tensor([[-4.0, -4.0, -4.5, -1e6], [-2.5, -5.0, -2.0, -3.5]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    padded = plackett_luce_loss(policy4, ref4, beta, mask=mask)

    assert_close(padded.losses[0], unpadded[0])
    assert_close(padded.losses[1], plackett_luce_loss(policy4[1:].detach(), ref4[1:], beta).losses[0])
    assert padded.rewards[0, 3] == 0.0

    padded.losses.sum().backward()
    assert torch.isfinite(policy4.grad).all()
    assert policy4.grad[0, 3] == 0.0
    assert (policy4.grad[:, :3] != 0).all()


def test_plackett_luce_rejects_gaps_in_the_mask():
    x = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="must all come after"):
        plackett_luce_loss(x, x, 0.1, mask=torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        plackett_luce_loss(torch.zeros(3), torch.zeros(3), 0.1)


def test_plackett_luce_metrics():
    # rewards β(π − ref) with β = 1: row 0 = (3, 1, 2), row 1 = (2, 1, masked)
    policy = torch.tensor([[3.0, 1.0, 2.0], [2.0, 1.0, 9.0]])
    out = plackett_luce_loss(policy, torch.zeros(2, 3), 1.0, mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))
    metrics = out.metrics()
    # adjacent pairs: 3>1 yes, 1>2 no, 2>1 yes
    assert metrics["rewards/accuracies"] == pytest.approx(2 / 3)
    assert metrics["rewards/margins"] == pytest.approx((2.0 - 1.0 + 1.0) / 3)


# -- gradients ------------------------------------------------------------------------------

@pytest.mark.parametrize("loss_type", sorted(DPO_LOSSES))
def test_dpo_losses_backpropagate(loss_type):
    torch.manual_seed(1)
    policy_chosen = torch.randn(8, requires_grad=True)
    policy_rejected = torch.randn(8, requires_grad=True)
    lengths = {"chosen_lengths": torch.full((8,), 3.0), "rejected_lengths": torch.full((8,), 5.0)}
    out = dpo_loss(policy_chosen, policy_rejected, torch.randn(8), torch.randn(8), beta=0.5, loss_type=loss_type,
                   **(lengths if loss_type == "ipo" else {}))
    out.loss.backward()
    for grad in (policy_chosen.grad, policy_rejected.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


def test_bradley_terry_and_plackett_luce_backpropagate():
    chosen, rejected = torch.randn(4, requires_grad=True), torch.randn(4, requires_grad=True)
    bradley_terry_loss(chosen, rejected, margin=0.5).mean().backward()
    assert chosen.grad.abs().sum() > 0 and rejected.grad.abs().sum() > 0

    policy = torch.randn(4, 5, requires_grad=True)
    plackett_luce_loss(policy, torch.randn(4, 5), 0.1).loss.backward()
    assert torch.isfinite(policy.grad).all() and policy.grad.abs().sum() > 0
