"""Agreement statistics checked against values computed by hand, and alpha against the `krippendorff`
package on random tables through our own coincidence-matrix computation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from annotation.services.agreement import (
    NOMINAL,
    ORDINAL,
    ReliabilityTable,
    agreement_report,
    bootstrap,
    cohens_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    majority_agreement,
    pairwise_agreement,
)

NAN = math.nan


def table(rows: list[list[float]]) -> ReliabilityTable:
    values = np.array(rows, dtype=float)
    return ReliabilityTable([f"r{i}" for i in range(len(rows))], list(range(values.shape[1])), values)


# Two annotators, five pairwise items; codes 0 = first response, 1 = second, 2 = tie.
TWO = table([[0, 0, 1, 1, 2],
             [0, 1, 1, 1, 2]])

# Three annotators, four units, two categories.
THREE = table([[0, 0, 1, 0],
               [0, 0, 1, 1],
               [0, 1, 1, 1]])


def test_nominal_alpha_two_annotators_by_hand():
    # Coincidences (each unit has 2 values, so each ordered pair counts 1/(2-1) = 1):
    # unit (0,0) -> o00 += 2; (0,1) -> o01 += 1, o10 += 1; (1,1) twice -> o11 += 4; (2,2) -> o22 += 2.
    # o = [[2,1,0],[1,4,0],[0,0,2]], n_c = (3, 5, 2), n = 10.
    # alpha = 1 - (n - 1) * sum_{c!=k} o_ck / (n^2 - sum n_c^2) = 1 - 9 * 2 / (100 - 38) = 44/62.
    assert krippendorff_alpha(TWO, NOMINAL) == pytest.approx(44 / 62)


def test_cohens_kappa_by_hand():
    # p_o = 4/5 agree. Marginals: first (0:2, 1:2, 2:1), second (0:1, 1:3, 2:1) of 5 each.
    # p_e = (2*1 + 2*3 + 1*1) / 25 = 9/25; kappa = (0.8 - 0.36) / (1 - 0.36) = 0.44 / 0.64 = 0.6875.
    assert cohens_kappa(TWO.values[0], TWO.values[1]) == pytest.approx(0.6875)


def test_cohens_kappa_leaves_out_units_only_one_annotator_labelled():
    # The third unit is the second annotator's only: it drops out and what is left is TWO's first
    # four units: p_o = 3/4, marginals (0:2, 1:2) and (0:1, 1:3): p_e = (2 + 6)/16 = 1/2, kappa = 1/2.
    first = np.array([0, 0, NAN, 1, 1])
    second = np.array([0, 1, 1, 1, 1])
    assert cohens_kappa(first, second) == pytest.approx(0.5)


def test_fleiss_kappa_by_hand():
    # Per unit, counts of (0, 1): (3,0) (2,1) (0,3) (1,2). With m = 3 ratings per unit,
    # P_i = (sum_j n_ij^2 - 3) / 6 = 1, 1/3, 1, 1/3: mean 2/3. p_0 = 6/12, p_1 = 6/12: P_e = 1/2.
    # kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3.
    assert fleiss_kappa(THREE) == pytest.approx(1 / 3)


def test_fleiss_kappa_uses_only_units_with_the_fixed_number_of_ratings():
    # The last unit has two ratings: with m = 3 it is left out and the value is THREE's.
    extra = table([[0, 0, 1, 0, 1],
                   [0, 0, 1, 1, 0],
                   [0, 1, 1, 1, NAN]])
    assert fleiss_kappa(extra) == pytest.approx(1 / 3)


def test_fleiss_equals_the_two_rater_formula_on_two_annotators():
    # Pooled categories over TWO's 10 ratings: p = (0.3, 0.5, 0.2), P_e = 0.09 + 0.25 + 0.04 = 0.38;
    # P_i = 1 for the 4 agreeing units, 0 for the other: mean 0.8. kappa = 0.42 / 0.62.
    assert fleiss_kappa(TWO) == pytest.approx(0.42 / 0.62)


def test_nominal_alpha_three_annotators_by_hand():
    # Each unit has 3 values: an ordered pair counts 1/(3-1) = 1/2. Unit (0,0,0): 6 pairs (0,0) -> o00 += 3;
    # (0,0,1): 2 (0,0), 2 (0,1), 2 (1,0) -> o00 += 1, o01 += 1, o10 += 1; (1,1,1) -> o11 += 3;
    # (0,1,1) -> o11 += 1, o01 += 1, o10 += 1. o = [[4,2],[2,4]], n_c = (6, 6), n = 12.
    # alpha = 1 - 11 * 4 / (144 - 72) = 28/72.
    assert krippendorff_alpha(THREE, NOMINAL) == pytest.approx(28 / 72)


def test_ordinal_alpha_by_hand():
    # Ranks of two annotators on three units: (1,1) (2,3) (3,3). o11 = 2, o23 = o32 = 1, o33 = 2;
    # n_1 = 2, n_2 = 1, n_3 = 3, n = 6. Ordinal delta^2_ck = (sum_{g=c..k} n_g - (n_c + n_k)/2)^2:
    # d12 = (3 - 1.5)^2 = 2.25, d23 = (4 - 2)^2 = 4, d13 = (6 - 2.5)^2 = 12.25.
    # D_o = sum o_ck d_ck / n = (1*4 + 1*4) / 6 = 8/6.
    # D_e = sum_{c,k} n_c n_k d_ck / (n (n-1)) = 2 (2*1*2.25 + 1*3*4 + 2*3*12.25) / 30 = 180/30 = 6.
    # alpha = 1 - D_o / D_e = 1 - 8/36 = 7/9.
    ranks = table([[1, 2, 3],
                   [1, 3, 3]])
    assert krippendorff_alpha(ranks, ORDINAL) == pytest.approx(7 / 9)


def test_pairwise_and_majority_agreement_by_hand():
    # Pairs: r0-r1 agree on units 0,1,2 (3/4); r0-r2 on 0,2 (2/4); r1-r2 on 0,2,3 (3/4).
    pairs = {(p.first, p.second): (p.shared, p.agreement) for p in pairwise_agreement(THREE)}
    assert pairs == {("r0", "r1"): (4, 0.75), ("r0", "r2"): (4, 0.5), ("r1", "r2"): (4, 0.75)}
    # Against the others' majority (a tie among the others leaves the unit out):
    # r0: unit0 others (0,0) yes; unit1 others (0,1) tie; unit2 (1,1) yes; unit3 (1,1) no -> 2/3.
    # r1: unit0 yes; unit1 tie; unit2 yes; unit3 others (0,1) tie -> 2/2.
    # r2: unit0 yes; unit1 others (0,0) no; unit2 yes; unit3 tie -> 2/3.
    majority = majority_agreement(THREE)
    assert {r: (m.units, m.agreement) for r, m in majority.items()} == {
        "r0": (3, pytest.approx(2 / 3)), "r1": (2, 1.0), "r2": (3, pytest.approx(2 / 3))}


def test_undefined_figures_are_none_not_a_number():
    assert krippendorff_alpha(table([[1, 1], [1, 1]]), NOMINAL) is None  # one value: no expected disagreement
    assert krippendorff_alpha(table([[1, NAN], [NAN, 2]]), NOMINAL) is None  # no unit with two values
    assert cohens_kappa(np.array([0.0, 0.0]), np.array([0.0, 0.0])) is None
    assert fleiss_kappa(table([[0, 1]])) is None  # one rating per unit


def test_triples_build_the_table_with_missing_cells():
    t = ReliabilityTable.from_triples([(10, "bo", 1), (10, "al", 0), (11, "al", 1)])
    assert t.raters == ["al", "bo"] and t.units == [10, 11]
    np.testing.assert_array_equal(t.values, np.array([[0, 1], [1, NAN]]))


# ---------------------------------------------------------------------------------------------
# Our own alpha, from the coincidence matrix (Krippendorff 2011, section C), against the package.
# ---------------------------------------------------------------------------------------------

def reference_alpha(values: np.ndarray, level: str) -> float:
    codes = np.unique(values[~np.isnan(values)])
    index = {c: i for i, c in enumerate(codes)}
    o = np.zeros((len(codes), len(codes)))
    for unit in values.T:
        present = unit[~np.isnan(unit)]
        m = len(present)
        if m < 2:
            continue
        for a in range(m):
            for b in range(m):
                if a != b:
                    o[index[present[a]], index[present[b]]] += 1 / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    delta = np.zeros_like(o)
    for c in range(len(codes)):
        for k in range(len(codes)):
            if level == NOMINAL:
                delta[c, k] = float(c != k)
            else:
                lo, hi = min(c, k), max(c, k)
                delta[c, k] = (n_c[lo:hi + 1].sum() - (n_c[c] + n_c[k]) / 2) ** 2
    d_o = (o * delta).sum() / n
    d_e = (np.outer(n_c, n_c) * delta).sum() / (n * (n - 1))
    return 1 - d_o / d_e


@pytest.mark.parametrize("level", [NOMINAL, ORDINAL])
@pytest.mark.parametrize("seed", range(20))
def test_alpha_matches_the_reference_on_random_tables(level, seed):
    rng = np.random.default_rng(seed)
    raters, units = rng.integers(2, 6), rng.integers(4, 30)
    truth = rng.integers(1, 6, size=units)
    # Annotators who mostly agree with a hidden truth, some noise, and cells left empty.
    values = np.where(rng.random((raters, units)) < 0.6, truth, rng.integers(1, 6, size=(raters, units))).astype(float)
    values[rng.random((raters, units)) < 0.3] = NAN
    t = table(values.tolist())
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = reference_alpha(t.values, level)
    if math.isnan(expected):  # no pairable unit, or one value throughout: undefined, and we say so
        assert krippendorff_alpha(t, level) is None
    else:
        assert krippendorff_alpha(t, level) == pytest.approx(expected, abs=1e-9)
    assert reference_alpha(TWO.values, NOMINAL) == pytest.approx(44 / 62)  # the reference itself, by hand


def test_bootstrap_interval_is_reproducible_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, size=120)
    values = np.where(rng.random((3, 120)) < 0.8, truth, rng.integers(0, 3, size=(3, 120))).astype(float)
    t = table(values.tolist())
    first = bootstrap(t, lambda x: krippendorff_alpha(x, NOMINAL), samples=300, seed=7)
    again = bootstrap(t, lambda x: krippendorff_alpha(x, NOMINAL), samples=300, seed=7)
    assert (first.low, first.high) == (again.low, again.high)
    assert first.low < first.estimate < first.high
    # 120 units: a tight interval; the first 12 units alone: a wider one.
    small = bootstrap(t.take_units(np.arange(12)), lambda x: krippendorff_alpha(x, NOMINAL), samples=300, seed=7)
    assert first.high - first.low < small.high - small.low
    assert first.samples == 300


def test_perfect_agreement_has_a_degenerate_interval_at_one():
    t = table([[0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2]])
    report = agreement_report(t, NOMINAL, samples=200)
    assert report.alpha.estimate == pytest.approx(1.0)
    assert report.alpha.low == pytest.approx(1.0) and report.alpha.high == pytest.approx(1.0)
    assert report.cohen.estimate == pytest.approx(1.0)


def test_report_has_kappas_only_where_they_apply():
    nominal = agreement_report(THREE, NOMINAL, samples=50)
    assert nominal.cohen is None  # three annotators
    assert nominal.fleiss.estimate == pytest.approx(1 / 3)
    assert nominal.alpha.estimate == pytest.approx(28 / 72)
    ordinal = agreement_report(THREE, ORDINAL, samples=50)
    assert ordinal.cohen is None and ordinal.fleiss is None
    as_dict = nominal.as_dict()
    assert as_dict["krippendorff_alpha"]["estimate"] == pytest.approx(28 / 72)
    assert as_dict["agreement_with_majority"]["r1"]["agreement"] == 1.0
