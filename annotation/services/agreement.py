"""Inter-annotator agreement on a reliability table: pure statistics (numpy and `krippendorff`, no SQL).

A reliability table has one row per annotator and one column per unit (a pairwise item, or one
response of a listwise / pointwise item); a cell holds the value that annotator gave the unit, or NaN
where they gave none. Values are codes: pairwise choices are nominal categories, ranks and ratings
are ordinal.

- Krippendorff's alpha (the `krippendorff` package): any number of annotators, missing values,
  nominal or ordinal distances. Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability".
- Cohen's kappa, nominal, two annotators: kappa = (p_o - p_e) / (1 - p_e) over the units both labelled,
  p_e from each annotator's own marginals. Cohen (1960).
- Fleiss' kappa, nominal, a fixed number m of ratings per unit: P_i = (sum_j n_ij^2 - m) / (m (m - 1)),
  P_e = sum_j p_j^2, kappa = (mean P_i - P_e) / (1 - P_e). Fleiss (1971). Units with another number of
  ratings are left out (an item still waiting for its overlap).
- Bootstrap intervals: resample units with replacement and take percentiles of the statistic
  (units, not single labels, are the independent draws).
- Pairwise agreement: for two annotators, the share of the units both labelled where they gave the same value.
- Agreement with the majority: for each annotator, over units where the *other* annotators have a
  single most common value, the share where theirs equals it (leaving the annotator out keeps
  their own label from making the majority).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

import krippendorff
import numpy as np

NOMINAL, ORDINAL = "nominal", "ordinal"
BOOTSTRAP_SAMPLES = 1000
CONFIDENCE = 0.95


@dataclass
class ReliabilityTable:
    """Annotators x units, NaN where an annotator gave the unit no value."""

    raters: list[str]
    units: list[Hashable]
    values: np.ndarray  # shape (len(raters), len(units)), float

    @classmethod
    def from_triples(cls, triples: Iterable[tuple[Hashable, str, float]]) -> ReliabilityTable:
        """Build from (unit, rater, value) triples; a later triple for the same cell replaces an earlier one."""
        cells = {(unit, rater): float(value) for unit, rater, value in triples}
        raters = sorted({rater for _, rater in cells})
        units = sorted({unit for unit, _ in cells}, key=lambda u: (str(type(u)), u))
        row, col = {r: i for i, r in enumerate(raters)}, {u: j for j, u in enumerate(units)}
        values = np.full((len(raters), len(units)), np.nan)
        for (unit, rater), value in cells.items():
            values[row[rater], col[unit]] = value
        return cls(raters, units, values)

    def take_units(self, columns: np.ndarray) -> ReliabilityTable:
        return ReliabilityTable(self.raters, [self.units[j] for j in columns], self.values[:, columns])

    @property
    def pairable_units(self) -> int:
        """Units with at least two values: the only ones agreement can be measured on."""
        return int((np.sum(~np.isnan(self.values), axis=0) >= 2).sum())


def krippendorff_alpha(table: ReliabilityTable, level: str) -> float | None:
    """Alpha at the given level of measurement; None when it is undefined (fewer than two pairable
    units' worth of values, or a single value used throughout, so that no disagreement is expected)."""
    if level not in (NOMINAL, ORDINAL):
        raise ValueError(f"level must be {NOMINAL!r} or {ORDINAL!r}, got {level!r}")
    pairable = table.values[:, np.sum(~np.isnan(table.values), axis=0) >= 2]
    if pairable.shape[1] == 0 or len(np.unique(pairable[~np.isnan(pairable)])) < 2:
        return None
    return float(krippendorff.alpha(reliability_data=pairable, level_of_measurement=level))


def cohens_kappa(first: np.ndarray, second: np.ndarray) -> float | None:
    """Cohen's kappa of two annotators' nominal values (NaN = not labelled; such units are left out)."""
    both = ~np.isnan(first) & ~np.isnan(second)
    a, b = first[both], second[both]
    if len(a) == 0:
        return None
    categories = np.unique(np.concatenate([a, b]))
    p_o = float(np.mean(a == b))
    p_e = float(sum(np.mean(a == c) * np.mean(b == c) for c in categories))
    if p_e == 1.0:  # both annotators used one and the same category throughout: kappa is undefined
        return None
    return (p_o - p_e) / (1.0 - p_e)


def fleiss_kappa(table: ReliabilityTable, ratings_per_unit: int | None = None) -> float | None:
    """Fleiss' kappa over the units with exactly `ratings_per_unit` values (default: the most any unit has)."""
    counts = np.sum(~np.isnan(table.values), axis=0)
    m = ratings_per_unit or (int(counts.max()) if counts.size else 0)
    if m < 2:
        return None
    complete = table.values[:, counts == m]
    if complete.shape[1] == 0:
        return None
    categories = np.unique(complete[~np.isnan(complete)])
    n_ij = np.stack([np.sum(complete == c, axis=0) for c in categories], axis=1)  # units x categories
    p_i = (np.sum(n_ij ** 2, axis=1) - m) / (m * (m - 1))
    p_j = n_ij.sum(axis=0) / n_ij.sum()
    p_e = float(np.sum(p_j ** 2))
    if p_e == 1.0:
        return None
    return (float(p_i.mean()) - p_e) / (1.0 - p_e)


@dataclass
class Interval:
    estimate: float | None
    low: float | None = None
    high: float | None = None
    samples: int = 0  # bootstrap resamples on which the statistic was defined

    def __str__(self) -> str:
        if self.estimate is None:
            return "–"
        if self.low is None:
            return f"{self.estimate:.3f}"
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(table: ReliabilityTable, statistic: Callable[[ReliabilityTable], float | None],
              samples: int = BOOTSTRAP_SAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """The statistic on the table, with a percentile interval from resampling its units (columns)."""
    estimate = statistic(table)
    n = len(table.units)
    if estimate is None or n < 2:
        return Interval(estimate)
    rng = np.random.default_rng(seed)
    draws = [statistic(table.take_units(rng.integers(0, n, size=n))) for _ in range(samples)]
    defined = np.array([d for d in draws if d is not None and not math.isnan(d)])
    if defined.size == 0:
        return Interval(estimate)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(defined, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), samples=int(defined.size))


@dataclass
class PairAgreement:
    first: str
    second: str
    shared: int  # units both labelled
    agreement: float | None  # share of those with the same value


def pairwise_agreement(table: ReliabilityTable) -> list[PairAgreement]:
    """Every pair of annotators who share at least one unit."""
    pairs = []
    for i, first in enumerate(table.raters):
        for j in range(i + 1, len(table.raters)):
            a, b = table.values[i], table.values[j]
            both = ~np.isnan(a) & ~np.isnan(b)
            shared = int(both.sum())
            if shared:
                pairs.append(PairAgreement(first, table.raters[j], shared, float(np.mean(a[both] == b[both]))))
    return pairs


@dataclass
class MajorityAgreement:
    rater: str
    units: int  # units where the other annotators had a single most common value
    agreement: float | None


def majority_agreement(table: ReliabilityTable) -> dict[str, MajorityAgreement]:
    """Each annotator against the most common value of the others on each unit (ties in the others'
    vote leave the unit out)."""
    result = {}
    for i, rater in enumerate(table.raters):
        matches = counted = 0
        for j in range(len(table.units)):
            own = table.values[i, j]
            others = [v for r, v in enumerate(table.values[:, j]) if r != i and not np.isnan(v)]
            if np.isnan(own) or not others:
                continue
            top = Counter(others).most_common(2)
            if len(top) > 1 and top[0][1] == top[1][1]:
                continue
            counted += 1
            matches += int(own == top[0][0])
        result[rater] = MajorityAgreement(rater, counted, matches / counted if counted else None)
    return result


@dataclass
class AgreementReport:
    """What the Team view and the datasheet show for one project."""

    level: str
    units: int  # units with two or more values
    raters: int
    alpha: Interval
    cohen: Interval | None = None  # nominal data labelled by exactly two annotators
    fleiss: Interval | None = None  # nominal data, on the units with the most ratings
    pairs: list[PairAgreement] = field(default_factory=list)
    majority: dict[str, MajorityAgreement] = field(default_factory=dict)

    def as_dict(self) -> dict:
        def interval(i: Interval | None) -> dict | None:
            return None if i is None else {"estimate": i.estimate, "low": i.low, "high": i.high,
                                           "confidence": CONFIDENCE, "bootstrap_samples": i.samples}
        return {"level": self.level, "units": self.units, "annotators": self.raters,
                "krippendorff_alpha": interval(self.alpha), "cohens_kappa": interval(self.cohen),
                "fleiss_kappa": interval(self.fleiss),
                "pairwise": [vars(p) for p in self.pairs],
                "agreement_with_majority": {name: vars(m) for name, m in self.majority.items()}}


def agreement_report(table: ReliabilityTable, level: str, samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = 0) -> AgreementReport:
    """Every figure that applies to the table, each with its bootstrap interval."""
    report = AgreementReport(level=level, units=table.pairable_units, raters=len(table.raters),
                             alpha=bootstrap(table, lambda t: krippendorff_alpha(t, level), samples, seed=seed),
                             pairs=pairwise_agreement(table), majority=majority_agreement(table))
    if level == NOMINAL:
        if len(table.raters) == 2:
            report.cohen = bootstrap(table, lambda t: cohens_kappa(t.values[0], t.values[1]), samples, seed=seed)
        # The number of ratings per unit is fixed from the whole table, not from each resample.
        most = int(np.sum(~np.isnan(table.values), axis=0).max()) if table.units else 0
        report.fleiss = bootstrap(table, lambda t: fleiss_kappa(t, most), samples, seed=seed)
    return report
