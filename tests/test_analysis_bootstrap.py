"""Multi-Bootstrap and the variance decomposition against exact and hand computations."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ontogeny.analysis.bootstrap import VarianceDecomposition, compare, multibootstrap
from ontogeny.analysis.synthetic import synthetic_crossed


def exact_distribution(values):
    """Every equally likely resample of seeds (rows) and examples (columns) -> its mean."""
    values = np.atleast_2d(np.asarray(values, dtype=float).T).T
    n_members, n_examples = values.shape
    return np.array([values[np.ix_(rows, cols)].mean()
                     for rows in itertools.product(range(n_members), repeat=n_members)
                     for cols in itertools.product(range(n_examples), repeat=n_examples)])


@pytest.mark.parametrize("values", [[0.0, 1.0, 5.0], [[0.0, 1.0], [10.0, 20.0]]])
def test_bootstrap_distribution_matches_exact_enumeration(values):
    exact = exact_distribution(values)
    result = multibootstrap(values, n_boot=40_000, random_state=0)
    for point in np.unique(exact):  # the empirical CDF matches the exact one everywhere
        assert np.mean(result.distribution <= point) == pytest.approx(np.mean(exact <= point), abs=0.01)
    assert result.estimate == pytest.approx(np.mean(values))


def test_single_factor_interval_matches_scipy_percentile_bootstrap():
    values = np.random.default_rng(0).normal(1.0, 1.0, 15)
    ours = multibootstrap(values, n_boot=20_000, random_state=1)
    theirs = stats.bootstrap((values,), np.mean, n_resamples=20_000, method="percentile", random_state=2)
    standard_error = values.std(ddof=1) / np.sqrt(len(values))
    assert ours.low == pytest.approx(theirs.confidence_interval.low, abs=0.1 * standard_error)
    assert ours.high == pytest.approx(theirs.confidence_interval.high, abs=0.1 * standard_error)


def test_fast_mean_path_equals_generic_statistic():
    values = np.random.default_rng(3).normal(size=(4, 7))
    fast = multibootstrap(values, n_boot=300, random_state=5)
    generic = multibootstrap(values, n_boot=300, random_state=5, statistic=lambda v, axis=None: v.mean(axis))
    assert np.allclose(fast.distribution, generic.distribution)
    median = multibootstrap(values[:, 0], n_boot=300, statistic=np.median, random_state=5)
    assert median.low <= np.median(values[:, 0]) <= median.high


def test_comparison_p_values():
    rng = np.random.default_rng(6)
    base = 0.8 + rng.normal(0, 0.02, (8, 1)) + rng.normal(0, 0.05, (8, 200))  # seed effect + example noise
    same = compare(base, base, paired=True, random_state=0)
    assert same.p_value == 1.0 and same.difference == 0.0 and same.low == same.high == 0.0
    better = compare(base, base + 0.03, paired=True, random_state=0)
    assert better.p_value < 0.01 and better.p_one_sided < 0.01 and better.low > 0
    unpaired = compare(base, base + 0.1 + rng.normal(0, 0.02, (8, 1)), paired=False, random_state=0)
    assert unpaired.p_value < 0.01
    # two draws from one distribution: no evidence of a difference
    other = 0.8 + rng.normal(0, 0.02, (8, 1)) + rng.normal(0, 0.05, (8, 200))
    null = compare(base, other, paired=False, random_state=0)
    assert null.p_value > 0.05 and null.low < 0 < null.high
    # sharing seeds removes the seed noise common to both sides: the paired interval is narrower
    paired, unpaired = (compare(base, base + 0.01, paired=p, random_state=0) for p in (True, False))
    assert paired.high - paired.low < unpaired.high - unpaired.low
    with pytest.raises(ValueError):
        compare(base, base[:5], paired=True)


def test_p_values_never_reach_zero_and_pairs_follow_seed_labels():
    rng = np.random.default_rng(7)
    base = pd.Series(0.8 + rng.normal(0, 0.05, 6), index=[10, 11, 12, 13, 14, 15])
    treatment = base + 0.5  # far beyond every draw
    result = compare(base, treatment, paired=True, n_boot=500, random_state=0)
    assert result.p_value == result.p_one_sided == 1 / 500
    shuffled = treatment.sample(frac=1.0, random_state=1)  # the same seeds in another row order
    by_label = compare(base, shuffled, paired=True, n_boot=500, random_state=0)
    np.testing.assert_allclose(by_label.distribution, result.distribution)
    by_row = compare(base.to_numpy(), shuffled.to_numpy(), paired=True, n_boot=500, random_state=0)
    assert by_row.high - by_row.low > 2 * (result.high - result.low)  # row order pairs the wrong seeds
    with pytest.raises(ValueError, match="same seed labels"):
        compare(base, treatment.rename(index={15: 99}), paired=True)
    ci = multibootstrap(base.to_numpy(), n_boot=500, random_state=0)
    assert ci.estimate_kind == "plug-in" and ci.estimate == pytest.approx(base.mean())
    assert ci.bootstrap_mean == pytest.approx(ci.distribution.mean())


def test_anova_sums_of_squares_by_hand():
    # 2 init seeds x 2 data seeds x 2 replicates
    y = {(0, 0): [1.0, 3.0], (0, 1): [2.0, 4.0], (1, 0): [6.0, 6.0], (1, 1): [9.0, 11.0]}
    frame = pd.DataFrame([{"init_seed": i, "data_seed": d, "outcome": v} for (i, d), vs in y.items() for v in vs])
    grand = np.mean([v for vs in y.values() for v in vs])  # 5.25
    cell = {k: np.mean(v) for k, v in y.items()}
    init = {i: np.mean(y[(i, 0)] + y[(i, 1)]) for i in (0, 1)}
    data = {d: np.mean(y[(0, d)] + y[(1, d)]) for d in (0, 1)}
    ss_init = 4 * sum((init[i] - grand) ** 2 for i in (0, 1))
    ss_data = 4 * sum((data[d] - grand) ** 2 for d in (0, 1))
    ss_inter = 2 * sum((cell[(i, d)] - init[i] - data[d] + grand) ** 2 for i in (0, 1) for d in (0, 1))
    ss_resid = sum((v - cell[k]) ** 2 for k, vs in y.items() for v in vs)
    decomposition = VarianceDecomposition(n_boot=50, random_state=0).fit(frame, "outcome")
    anova = decomposition.anova_
    assert anova["ss"].tolist() == pytest.approx([ss_init, ss_data, ss_inter, ss_resid])
    assert anova["df"].tolist() == [1, 1, 1, 4]
    total_ss = sum((v - grand) ** 2 for vs in y.values() for v in vs)
    assert anova["ss"].sum() == pytest.approx(total_ss)
    ms = dict(zip(anova.index, anova["ms"]))
    components = decomposition.components_["variance"]
    assert components["init_seed"] == pytest.approx(max((ms["init_seed"] - ms["interaction"]) / 4, 0))
    assert components["data_seed"] == pytest.approx(max((ms["data_seed"] - ms["interaction"]) / 4, 0))
    assert components["interaction"] == pytest.approx(max((ms["interaction"] - ms["residual"]) / 2, 0))
    assert components["residual"] == pytest.approx(ms["residual"])


def test_variance_shares_are_recovered():
    truth = {"init_seed": 1.0, "data_seed": 0.5, "interaction": 0.25, "residual": 0.25}
    frame = synthetic_crossed(100, 100, 2, first=1.0, second=0.5, interaction=0.25, residual=0.25,
                              random_state=0)
    components = VarianceDecomposition(n_boot=100, random_state=0).fit(frame, "outcome").components_
    total = sum(truth.values())
    for source, variance in truth.items():
        assert components.loc[source, "share"] == pytest.approx(variance / total, abs=0.08)
        assert components.loc[source, "ci_low"] <= components.loc[source, "share"] <= components.loc[source, "ci_high"]
    assert components["share"].sum() == pytest.approx(1.0)


def test_without_replicates_interaction_and_residual_are_one_source():
    frame = synthetic_crossed(8, 6, 1, random_state=1)
    decomposition = VarianceDecomposition(n_boot=100, random_state=0).fit(frame, "outcome")
    assert decomposition.components_.index.tolist() == ["init_seed", "data_seed", "interaction+residual"]
    assert "residual" not in decomposition.anova_.index
    with pytest.raises(ValueError, match="crossed"):
        VarianceDecomposition().fit(frame.iloc[1:], "outcome")
