"""A leaderboard from pairwise votes: Bradley-Terry ratings with bootstrap confidence intervals.

Each vote says which of two models answered a prompt better: ``a``, ``b``, ``tie`` or ``both_bad``.

Model (Bradley & Terry 1952): model *i* has a strength gamma_i > 0 and

    P(i beats j) = gamma_i / (gamma_i + gamma_j).

Fit: maximum likelihood by the MM algorithm of Hunter (2004), "MM algorithms for generalized
Bradley-Terry models", Ann. Statist. 32(1), eq. (3):

    gamma_i  <-  W_i / sum_{j != i} N_ij / (gamma_i + gamma_j)

where W_i is i's number of wins and N_ij the number of games between i and j. A tie counts as half a
win for each side (and one game); "both bad" says nothing about which is better, so it is left out
of the fit but counted in the vote totals.

Finite ratings: the maximum-likelihood strengths do not exist when a model never wins (gamma -> 0)
or never loses (gamma -> inf), or when the models fall into groups that never met. So every model
also plays ``prior`` virtual games (default 1), spread evenly over the other rated models and all
tied: a weak prior towards equal strengths, worth one game per model, which keeps every rating
finite and the comparison graph connected. With hundreds of votes it moves ratings by a point or
two; with a handful it keeps a model that won its only vote from an infinite rating.

Scale: Elo-like ratings ``R_i = 1000 + 400 * log10(gamma_i / g)``, so a gap of 400 points means
10:1 odds (P(i beats j) = 1 / (1 + 10 ** ((R_j - R_i) / 400))). The anchor ``g`` is the geometric
mean strength of the rated models by default (their mean rating is 1000), or, when ``anchor`` names
a model (e.g. the base model), that model's strength (it is rated exactly 1000 and the others are
read as "points above or below it").

Confidence intervals: percentile bootstrap (Efron & Tibshirani 1993, ch. 13). The decided votes
are resampled with replacement ``n_bootstrap`` times (a seeded generator: the same votes and seed
give the same intervals), the ratings refitted and anchored the same way each time, and the
(alpha/2, 1 - alpha/2) percentiles reported. Resampling is done as a multinomial draw over the
distinct (pair, outcome) cells, which is the same distribution as drawing votes one by one, and all
replicates are fitted together as one batch of arrays.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

OUTCOMES = ("a", "b", "tie", "both_bad")
DECIDED = ("a", "b", "tie")  # the outcomes that enter the fit
BASE_RATING = 1000.0
SCALE = 400.0 / math.log(10.0)  # Elo points per unit of natural log-strength (about 173.7)


@dataclass(frozen=True)
class Vote:
    """One comparison: ``model_a`` against ``model_b`` and who won (``a``, ``b``, ``tie``, ``both_bad``)."""

    model_a: str
    model_b: str
    outcome: str


@dataclass
class Rating:
    model: str
    rating: float | None  # None: no decided vote yet (only "both bad"), so nothing to rate
    ci_low: float | None
    ci_high: float | None
    votes: int  # every vote the model took part in, "both bad" included
    wins: int
    losses: int
    ties: int
    both_bad: int

    @property
    def decided(self) -> int:
        return self.wins + self.losses + self.ties


@dataclass
class Leaderboard:
    """Ratings best first, with the pairwise tables in the same model order."""

    ratings: list[Rating]
    models: list[str]  # the order of the rows and columns below (same as ``ratings``)
    win_rates: list[list[float | None]]  # [i][j]: (wins + ties/2) / decided games of i against j
    pair_votes: list[list[int]]  # [i][j]: votes between i and j, "both bad" included
    total_votes: int
    anchor: str  # "mean" or the name of the model rated exactly 1000
    n_bootstrap: int
    confidence: float
    prior: float
    notes: list[str] = field(default_factory=list)

    def rating_of(self, model: str) -> Rating:
        for row in self.ratings:
            if row.model == model:
                return row
        raise KeyError(model)


def check_votes(votes: Iterable[Vote | tuple[str, str, str]]) -> list[Vote]:
    """The votes as :class:`Vote`, or ValueError naming the first bad one."""
    clean = []
    for index, vote in enumerate(votes):
        try:
            model_a, model_b, outcome = (vote.model_a, vote.model_b, vote.outcome) if isinstance(vote, Vote) else vote
        except (TypeError, ValueError):
            raise ValueError(f"vote {index + 1}: expected (model_a, model_b, outcome), got {vote!r}") from None
        for name in (model_a, model_b):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"vote {index + 1}: model names must be non-empty strings, got {name!r}")
        if model_a == model_b:
            raise ValueError(f"vote {index + 1}: a model cannot play itself ({model_a!r})")
        if outcome not in OUTCOMES:
            raise ValueError(f"vote {index + 1}: unknown outcome {outcome!r} (use {', '.join(OUTCOMES)})")
        clean.append(Vote(model_a, model_b, outcome))
    return clean


def expected_score(rating_i: float, rating_j: float) -> float:
    """P(i beats j) under Bradley-Terry on the Elo-like scale."""
    return 1.0 / (1.0 + 10.0 ** ((rating_j - rating_i) / 400.0))


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------

def _cells(votes: Sequence[Vote], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (i, j, outcome) cells among the decided votes and how many votes fall in each."""
    counts: dict[tuple[int, int, int], int] = {}
    for v in votes:
        if v.outcome in DECIDED:
            key = (index[v.model_a], index[v.model_b], DECIDED.index(v.outcome))
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    keys = np.array(list(counts), dtype=np.int64)
    return keys, np.array(list(counts.values()), dtype=np.int64), keys[:, 2]


def _tables(keys: np.ndarray, counts: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Wins W[..., i, j] of i over j (ties as halves) and games N[..., i, j], for a batch of count vectors.

    ``counts`` has shape (B, cells); the result has shape (B, m, m).
    """
    batch = counts.shape[0]
    wins = np.zeros((batch, m, m))
    i, j, outcome = keys[:, 0], keys[:, 1], keys[:, 2]
    win_a = np.where(outcome == 0, 1.0, np.where(outcome == 2, 0.5, 0.0))
    # np.add.at sums repeated (i, j) cells; ties give half a win to each side.
    np.add.at(wins, (slice(None), i, j), counts * win_a)
    np.add.at(wins, (slice(None), j, i), counts * (1.0 - win_a))
    return wins, wins + np.swapaxes(wins, 1, 2)


def fit_log_strengths(wins: np.ndarray, games: np.ndarray, prior: float = 1.0, tol: float = 1e-9,
                      max_iter: int = 10_000) -> np.ndarray:
    """Natural log-strengths (mean 0) by Hunter's MM iteration, for a batch of (B, m, m) win/game tables.

    ``prior`` virtual games per model are added as ties spread evenly over its opponents (see the
    module docstring). Likelihood and prior depend only on strength ratios, so each step is
    rescaled to a geometric mean of 1 (Hunter 2004, section 3), which also keeps the iteration from
    drifting along that flat direction. Returns shape (B, m).
    """
    batch, m, _ = wins.shape
    virtual = prior / (m - 1) if m > 1 else 0.0
    off_diagonal = 1.0 - np.eye(m)
    wins = wins + virtual / 2.0 * off_diagonal
    games = games + virtual * off_diagonal
    w = wins.sum(axis=2)  # W_i: total wins, ties as halves
    log_gamma = np.zeros((batch, m))
    for _ in range(max_iter):
        gamma = np.exp(log_gamma)
        pair_sum = gamma[:, :, None] + gamma[:, None, :]
        new = np.log(w) - np.log((games / pair_sum).sum(axis=2))  # Hunter (2004), eq. (3), in logs
        new -= new.mean(axis=1, keepdims=True)
        # Largest change in log-strength: the scale the ratings are reported on.
        change = np.max(np.abs(new - log_gamma))
        log_gamma = new
        if change < tol:
            break
    return log_gamma


def _anchored(log_strengths: np.ndarray, anchor_index: int | None) -> np.ndarray:
    """Elo-like ratings: 1000 at the anchor model, or mean 1000 over the rated models."""
    ref = log_strengths[..., anchor_index] if anchor_index is not None else log_strengths.mean(axis=-1)
    return BASE_RATING + SCALE * (log_strengths - ref[..., None])


def _confidence(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {value!r}")
    return value


def leaderboard(votes: Iterable[Vote | tuple[str, str, str]], *, n_bootstrap: int = 1000, seed: int = 0,
                confidence: float = 0.95, anchor: str | None = None, prior: float = 1.0,
                models: Sequence[str] = ()) -> Leaderboard:
    """Bradley-Terry ratings with percentile-bootstrap intervals, win rates and vote counts.

    ``anchor``: a model rated exactly 1000 (e.g. the base model); None (default) makes the mean
    rating 1000. ``models`` lists models to show even without votes. ``n_bootstrap`` 0 gives no
    intervals. Raises ValueError for bad votes or settings.
    """
    votes = check_votes(votes)
    _confidence(confidence)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a whole number >= 0, got {n_bootstrap!r}")
    if not (isinstance(prior, (int, float)) and prior > 0 and math.isfinite(prior)):
        raise ValueError(f"prior must be a positive number of virtual games, got {prior!r}")

    names = sorted({*models, *(v.model_a for v in votes), *(v.model_b for v in votes)})
    counts = _vote_counts(votes, names)
    rated = [name for name in names if counts[name]["decided"] > 0]
    if anchor is not None and anchor not in rated:
        raise ValueError(f"anchor model {anchor!r} has no decided vote (a, b or tie), so it cannot be rated")
    index = {name: i for i, name in enumerate(rated)}
    keys, cell_counts, _ = _cells(votes, index)
    anchor_index = index[anchor] if anchor is not None else None

    point: dict[str, float] = {}
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    notes = []
    if rated:
        wins, games = _tables(keys, cell_counts[None, :], len(rated))
        ratings = _anchored(fit_log_strengths(wins, games, prior), anchor_index)[0]
        point = dict(zip(rated, ratings.tolist()))
        if n_bootstrap:
            rng = np.random.default_rng(seed)
            total = int(cell_counts.sum())
            draws = rng.multinomial(total, cell_counts / total, size=n_bootstrap)
            boot_wins, boot_games = _tables(keys, draws, len(rated))
            boot = _anchored(fit_log_strengths(boot_wins, boot_games, prior), anchor_index)
            tail = (1.0 - confidence) / 2.0
            lo, hi = np.quantile(boot, [tail, 1.0 - tail], axis=0)
            low, high = dict(zip(rated, lo.tolist())), dict(zip(rated, hi.tolist()))
    unrated = [name for name in names if name not in point]
    if unrated:
        notes.append(f"not rated yet (no decided vote): {', '.join(unrated)}")

    rows = [Rating(model=name, rating=point.get(name), ci_low=low.get(name), ci_high=high.get(name),
                   votes=counts[name]["votes"], wins=counts[name]["wins"], losses=counts[name]["losses"],
                   ties=counts[name]["ties"], both_bad=counts[name]["both_bad"]) for name in names]
    rows.sort(key=lambda r: (r.rating is None, -(r.rating or 0.0), r.model))
    order = [r.model for r in rows]
    win_rates, pair_votes = _pair_tables(votes, order)
    return Leaderboard(ratings=rows, models=order, win_rates=win_rates, pair_votes=pair_votes,
                       total_votes=len(votes), anchor=anchor or "mean", n_bootstrap=n_bootstrap if rated else 0,
                       confidence=confidence, prior=float(prior), notes=notes)


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------

def _vote_counts(votes: Sequence[Vote], names: Sequence[str]) -> dict[str, dict[str, int]]:
    counts = {name: dict(votes=0, wins=0, losses=0, ties=0, both_bad=0, decided=0) for name in names}
    for v in votes:
        a, b = counts[v.model_a], counts[v.model_b]
        a["votes"] += 1
        b["votes"] += 1
        if v.outcome == "a":
            a["wins"] += 1
            b["losses"] += 1
        elif v.outcome == "b":
            b["wins"] += 1
            a["losses"] += 1
        elif v.outcome == "tie":
            a["ties"] += 1
            b["ties"] += 1
        else:
            a["both_bad"] += 1
            b["both_bad"] += 1
        if v.outcome in DECIDED:
            a["decided"] += 1
            b["decided"] += 1
    return counts


def _pair_tables(votes: Sequence[Vote], order: Sequence[str]) -> tuple[list[list[float | None]], list[list[int]]]:
    """Win rate of row against column, (wins + ties/2) / decided games (None when they never had a
    decided game), and the number of votes between them ("both bad" included)."""
    index = {name: i for i, name in enumerate(order)}
    m = len(order)
    score = np.zeros((m, m))
    decided = np.zeros((m, m), dtype=np.int64)
    pair_votes = np.zeros((m, m), dtype=np.int64)
    for v in votes:
        i, j = index[v.model_a], index[v.model_b]
        pair_votes[i, j] += 1
        pair_votes[j, i] += 1
        if v.outcome not in DECIDED:
            continue
        decided[i, j] += 1
        decided[j, i] += 1
        a_score = {"a": 1.0, "b": 0.0, "tie": 0.5}[v.outcome]
        score[i, j] += a_score
        score[j, i] += 1.0 - a_score
    rates = [[float(score[i, j] / decided[i, j]) if decided[i, j] else None for j in range(m)] for i in range(m)]
    return rates, pair_votes.tolist()
