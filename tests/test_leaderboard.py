"""Bradley-Terry ratings and bootstrap intervals on synthetic votes drawn from known strengths."""
from __future__ import annotations

import math

import numpy as np
import pytest

from alignment.leaderboard import SCALE, Vote, expected_score, fit_log_strengths, leaderboard

TRUTH = {"base": 0.0, "sft": 0.7, "dpo": 1.5}  # natural log-strengths


def draw_votes(n: int, seed: int, truth: dict[str, float] = TRUTH, both_bad: float = 0.0) -> list[Vote]:
    """Random pairs on random sides; the winner drawn from P(i beats j) = g_i / (g_i + g_j)."""
    rng = np.random.default_rng(seed)
    names = list(truth)
    votes = []
    for _ in range(n):
        i, j = rng.choice(len(names), size=2, replace=False)
        a, b = names[i], names[j]
        if rng.random() < both_bad:
            votes.append(Vote(a, b, "both_bad"))
            continue
        p_a = 1.0 / (1.0 + math.exp(truth[b] - truth[a]))
        votes.append(Vote(a, b, "a" if rng.random() < p_a else "b"))
    return votes


def true_ratings(truth: dict[str, float] = TRUTH) -> dict[str, float]:
    mean = sum(truth.values()) / len(truth)
    return {name: 1000 + SCALE * (value - mean) for name, value in truth.items()}


def width(board, model: str) -> float:
    row = board.rating_of(model)
    return row.ci_high - row.ci_low


def test_recovers_order_and_log_strength_gaps():
    board = leaderboard(draw_votes(2000, seed=1), n_bootstrap=500, seed=0)
    assert board.models == ["dpo", "sft", "base"]
    for model, truth in TRUTH.items():
        fitted_gap = (board.rating_of(model).rating - board.rating_of("base").rating) / SCALE
        assert fitted_gap == pytest.approx(truth, abs=0.15)
    # Anchored by the mean by default.
    assert sum(r.rating for r in board.ratings) / 3 == pytest.approx(1000)
    assert board.anchor == "mean" and board.total_votes == 2000


def test_intervals_cover_the_truth_and_shrink_with_more_votes():
    truth = true_ratings()
    small = leaderboard(draw_votes(500, seed=2), n_bootstrap=500, seed=0)
    large = leaderboard(draw_votes(8000, seed=3), n_bootstrap=500, seed=0)
    for board in (small, large):
        for model, value in truth.items():
            row = board.rating_of(model)
            assert row.ci_low <= row.rating <= row.ci_high
            assert row.ci_low <= value <= row.ci_high, (model, row, value)
    for model in TRUTH:
        # 16x the votes: about a quarter of the width (1/sqrt(16)); leave room for sampling noise.
        assert width(large, model) < 0.4 * width(small, model)


def test_coverage_over_many_synthetic_vote_sets_is_near_nominal():
    """The 90% intervals of 150 independent vote sets cover each true rating about 90% of the time:
    neither too narrow nor too wide (an interval twice too wide would cover ~100%). The prior's
    shrinkage makes them cover a little less (0.85 here); a 70% interval covers about 0.64."""
    truth = true_ratings()
    covered = total = 0
    for seed in range(150):
        board = leaderboard(draw_votes(300, seed=100 + seed), n_bootstrap=200, seed=seed, confidence=0.9)
        for model, value in truth.items():
            row = board.rating_of(model)
            covered += row.ci_low <= value <= row.ci_high
            total += 1
    assert 0.80 <= covered / total <= 0.95


def test_fit_solves_the_bradley_terry_likelihood_equations():
    """At the maximum, each model's wins equal its expected wins: W_i = sum_j N_ij g_i / (g_i + g_j)
    (Hunter 2004, eq. 2), with the prior's virtual tied games included in W and N."""
    votes = draw_votes(300, seed=4) + [Vote("sft", "base", "tie")] * 7
    names = ["base", "sft", "dpo"]
    index = {n: i for i, n in enumerate(names)}
    wins = np.zeros((3, 3))
    for v in votes:
        i, j = index[v.model_a], index[v.model_b]
        score = {"a": 1.0, "b": 0.0, "tie": 0.5}[v.outcome]
        wins[i, j] += score
        wins[j, i] += 1 - score
    games = wins + wins.T
    prior = 1.0
    log_g = fit_log_strengths(wins[None], games[None], prior=prior)[0]
    g = np.exp(log_g)
    virtual_games = prior / (3 - 1) * (1 - np.eye(3))  # one game per model, spread over its 2 opponents
    expected = ((games + virtual_games) * g[:, None] / (g[:, None] + g[None, :])).sum(axis=1)
    np.testing.assert_allclose((wins + virtual_games / 2).sum(axis=1), expected, rtol=1e-7)


def test_two_models_closed_form_with_the_prior():
    """Two models: g_a / g_b = (wins_a + prior/2) / (wins_b + prior/2), so one vote is 400 log10 3 points."""
    board = leaderboard([("x", "y", "a")], n_bootstrap=50)
    gap = board.rating_of("x").rating - board.rating_of("y").rating
    assert gap == pytest.approx(400 * math.log10(3), abs=1e-4)
    assert all(math.isfinite(v) for r in board.ratings for v in (r.rating, r.ci_low, r.ci_high))
    board = leaderboard([("x", "y", "a")] * 7 + [("x", "y", "b")] * 2, n_bootstrap=0)
    gap = board.rating_of("x").rating - board.rating_of("y").rating
    assert gap == pytest.approx(400 * math.log10(7.5 / 2.5), abs=1e-4)
    assert board.rating_of("x").ci_low is None  # no bootstrap asked for
    assert expected_score(board.rating_of("x").rating, board.rating_of("y").rating) == pytest.approx(0.75)


def test_ties_only_and_a_model_that_never_wins_stay_finite():
    ties = leaderboard([("x", "y", "tie"), ("y", "z", "tie"), ("z", "x", "tie")], n_bootstrap=100)
    assert [r.rating for r in ties.ratings] == pytest.approx([1000, 1000, 1000])
    assert ties.win_rates[0][1] == 0.5 and ties.rating_of("x").ties == 2

    loser = leaderboard([("x", "y", "a")] * 30 + [("z", "x", "b")] * 30 + [("y", "z", "a")] * 5, n_bootstrap=200)
    row = loser.rating_of("x")
    assert loser.models[0] == "x" and row.losses == 0 and row.wins == 60
    for r in loser.ratings:
        assert all(math.isfinite(v) for v in (r.rating, r.ci_low, r.ci_high))
    assert loser.rating_of("z").wins == 0 and loser.models[-1] == "z"


def test_both_bad_is_counted_but_left_out_of_the_fit():
    votes = draw_votes(400, seed=5)
    board = leaderboard(votes, n_bootstrap=100, seed=0)
    more = leaderboard(votes + [Vote("base", "dpo", "both_bad")] * 25, n_bootstrap=100, seed=0)
    for model in TRUTH:
        assert more.rating_of(model).rating == pytest.approx(board.rating_of(model).rating)
        assert more.rating_of(model).ci_low == pytest.approx(board.rating_of(model).ci_low)
    assert more.rating_of("dpo").both_bad == 25 and more.rating_of("dpo").votes == board.rating_of("dpo").votes + 25
    i, j = more.models.index("base"), more.models.index("dpo")
    assert more.pair_votes[i][j] == more.pair_votes[j][i] == board.pair_votes[i][j] + 25
    assert more.win_rates[i][j] == board.win_rates[i][j]
    assert more.total_votes == 425

    only_bad = leaderboard([("x", "y", "both_bad")], models=["w"])
    assert [r.rating for r in only_bad.ratings] == [None, None, None]
    assert only_bad.rating_of("x").votes == 1 and "not rated yet" in only_bad.notes[0]


def test_win_rate_matrix_counts_ties_as_halves():
    votes = [("x", "y", "a")] * 3 + [("y", "x", "a")] + [("x", "y", "tie")] * 2 + [("x", "y", "both_bad")]
    board = leaderboard(votes, n_bootstrap=0, models=["lonely"])
    i, j = board.models.index("x"), board.models.index("y")
    assert board.win_rates[i][j] == pytest.approx((3 + 1) / 6)
    assert board.win_rates[j][i] == pytest.approx((1 + 1) / 6)
    assert board.win_rates[i][i] is None
    assert board.pair_votes[i][j] == 7
    lonely = board.models.index("lonely")
    assert board.win_rates[i][lonely] is None and board.pair_votes[i][lonely] == 0
    assert board.rating_of("lonely").rating is None and board.models[-1] == "lonely"


def test_anchoring_at_a_model_shifts_ratings_without_changing_gaps():
    votes = draw_votes(600, seed=6)
    by_mean = leaderboard(votes, n_bootstrap=200, seed=1)
    by_base = leaderboard(votes, n_bootstrap=200, seed=1, anchor="base")
    assert by_base.rating_of("base").rating == pytest.approx(1000)
    assert by_base.anchor == "base"
    shift = by_base.rating_of("dpo").rating - by_mean.rating_of("dpo").rating
    for model in TRUTH:
        assert by_base.rating_of(model).rating - by_mean.rating_of(model).rating == pytest.approx(shift)
    # Every replicate pins the anchor too: its interval is a point, the others' are relative to it.
    assert by_base.rating_of("base").ci_low == pytest.approx(1000)
    assert by_base.rating_of("base").ci_high == pytest.approx(1000)


def test_bootstrap_is_reproducible_with_a_seed():
    votes = draw_votes(300, seed=7)
    one, two = leaderboard(votes, n_bootstrap=200, seed=3), leaderboard(votes, n_bootstrap=200, seed=3)
    other = leaderboard(votes, n_bootstrap=200, seed=4)
    assert [(r.ci_low, r.ci_high) for r in one.ratings] == [(r.ci_low, r.ci_high) for r in two.ratings]
    assert [(r.ci_low, r.ci_high) for r in one.ratings] != [(r.ci_low, r.ci_high) for r in other.ratings]


@pytest.mark.parametrize("votes, message", [
    ([("x", "y", "c")], "unknown outcome 'c'"),
    ([("x", "y", "A")], "unknown outcome"),
    ([("x", "x", "a")], "cannot play itself"),
    ([("", "y", "a")], "non-empty"),
    ([("x", None, "a")], "non-empty"),
    ([("x", "y")], "expected (model_a, model_b, outcome)"),
])
def test_bad_votes_are_refused(votes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        leaderboard(votes)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_bootstrap": -1}, "n_bootstrap"),
    ({"confidence": 1.0}, "confidence"),
    ({"prior": 0}, "prior"),
    ({"anchor": "nobody"}, "anchor model 'nobody'"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        leaderboard([("x", "y", "a")], **kwargs)


def test_no_votes_gives_an_empty_board():
    board = leaderboard([])
    assert board.ratings == [] and board.win_rates == [] and board.total_votes == 0
