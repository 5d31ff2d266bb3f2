"""Solution types: clusters of members on outcome columns, and outliers."""

import numpy as np
import pandas as pd
import pytest

from ontogeny.analysis.solutions import SolutionTypes, esd_critical_value, generalized_esd

COLUMNS = ["test_acc", "weight_norm"]


def members(groups, *, random_state=0):
    """One row per member; groups: list of (n_members, mean test_acc, mean weight_norm)."""
    rng = np.random.default_rng(random_state)
    rows = [rng.normal([acc, norm], [0.01, 0.2], (n, 2)) for n, acc, norm in groups]
    frame = pd.DataFrame(np.vstack(rows), columns=COLUMNS)
    frame.insert(0, "member", np.arange(len(frame)) + 100)
    return frame


def test_two_separated_groups_are_two_types():
    frame = members([(10, 0.5, 20.0), (6, 0.99, 35.0)])
    types = SolutionTypes(random_state=0).fit(frame, COLUMNS)
    assert types.n_clusters_ == 2
    assert types.labels_.loc[100:109].eq(0).all() and types.labels_.loc[110:115].eq(1).all()
    assert not types.outliers_.any()
    assert types.centers_["n_members"].tolist() == [10, 6]
    assert types.centers_.loc[1, "test_acc"] == pytest.approx(0.99, abs=0.02)


def test_one_homogeneous_group_is_one_type():
    types = SolutionTypes().fit(members([(16, 0.9, 30.0)]), COLUMNS)
    assert types.n_clusters_ == 1 and (types.labels_ == 0).all() and not types.outliers_.any()


def test_planted_outlier_is_flagged_and_kept_out_of_the_types():
    frame = members([(10, 0.5, 20.0), (6, 0.99, 35.0)])
    frame.loc[3, "weight_norm"] = 60.0  # one seed far from every type
    types = SolutionTypes().fit(frame, COLUMNS)
    assert types.outliers_.tolist() == [i == 3 for i in range(16)]
    assert types.labels_[103] == -1 and types.n_clusters_ == 2


def test_missing_outcome_is_an_outlier():
    frame = members([(8, 0.9, 30.0)])
    frame.loc[0, "test_acc"] = np.nan  # e.g. a diverged member
    types = SolutionTypes().fit(frame, COLUMNS)
    assert types.outliers_[100] and types.labels_[100] == -1 and types.n_clusters_ == 1


# Rosner's (1983) 54 values, the NIST/SEMATECH e-Handbook's worked example (section 1.3.5.17.3): with up to 10
# outliers at alpha 0.05 it finds 3 (5.34, 5.42, 6.01); the handbook prints lambda_1..10 to three decimals.
ROSNER = [-0.25, 0.68, 0.94, 1.15, 1.20, 1.26, 1.26, 1.34, 1.38, 1.43, 1.49, 1.49, 1.55, 1.56, 1.58, 1.65, 1.69, 1.70,
          1.76, 1.77, 1.81, 1.91, 1.94, 1.96, 1.99, 2.06, 2.09, 2.10, 2.14, 2.15, 2.23, 2.24, 2.26, 2.35, 2.37, 2.40,
          2.47, 2.54, 2.62, 2.64, 2.90, 2.92, 2.92, 2.93, 3.21, 3.26, 3.30, 3.59, 3.68, 4.30, 4.64, 5.34, 5.42, 6.01]
NIST_LAMBDA = [3.158, 3.151, 3.143, 3.136, 3.128, 3.120, 3.111, 3.103, 3.094, 3.085]


def test_generalized_esd_matches_the_nist_worked_example():
    flagged = generalized_esd(ROSNER, alpha=0.05, max_outliers=10)
    assert sorted(np.array(ROSNER)[flagged]) == [5.34, 5.42, 6.01]
    lambdas = [esd_critical_value(54, i, 0.05) for i in range(1, 11)]
    assert np.allclose(lambdas, NIST_LAMBDA, atol=1e-3)


@pytest.mark.parametrize("n, published", [(5, 1.715), (10, 2.290), (20, 2.709), (30, 2.908)])
def test_the_first_critical_value_is_grubbs_two_sided(n, published):
    assert esd_critical_value(n, 1, 0.05) == pytest.approx(published, abs=1e-3)


@pytest.mark.parametrize("n", [4, 8, 16])
def test_identical_seeds_are_flagged_in_few_runs(n):
    """Members of one distribution: any outlier or more than one type in at most 5% of runs (the benchmark's
    table, 300 runs each); here at most 6 of 60 (BIC and modified z-scores flagged 25-58% of such runs)."""
    flagged = 0
    for seed in range(60):
        frame = pd.DataFrame(np.random.default_rng(seed).normal(size=(n, 2)), columns=COLUMNS)
        types = SolutionTypes(random_state=seed).fit(frame, COLUMNS)
        flagged += types.outliers_.any() or types.n_clusters_ > 1
    assert flagged <= 6


def test_accuracies_tied_at_a_finite_test_set_are_one_type():
    """Accuracies on 200 examples: most seeds tie at 100%, a few miss one or two examples. The ties are the test
    set's grid, not a cluster (BIC with a free variance per type called this two types)."""
    frame = pd.DataFrame({"test_acc": [1.0, 1.0, 1.0, 1.0, 1.0, 0.995, 0.995, 0.99]})
    types = SolutionTypes().fit(frame, ["test_acc"])
    assert types.n_clusters_ == 1 and not types.outliers_.any()
    assert types.p_values_[0] > 0.025
    # three seeds at 100% and one at 99.5% are the most extreme sample four values can form: the ties need the
    # grid's rounding variance, or it is an "outlier" whatever the seeds
    assert not SolutionTypes().fit(pd.DataFrame({"test_acc": [1.0, 1.0, 1.0, 0.995]}), ["test_acc"]).outliers_.any()


def test_sixteen_seeds_crowding_at_100_percent_are_one_type_and_grokked_vs_not_two():
    """16 draws of accuracy 0.995 on 200 examples: on the raw scale the tail below 100% read as a second type
    (p = 0.0025); on the arcsine scale, with the null rounded back to the test set's grid, it is one type."""
    crowded = [0.985, 0.985] + [0.995] * 7 + [1.0] * 7
    types = SolutionTypes().fit(pd.DataFrame({"test_acc": crowded}), ["test_acc"])
    assert types.n_clusters_ == 1 and not types.outliers_.any() and types.p_values_[0] > 0.5
    rng = np.random.default_rng(1)
    accuracies = np.r_[rng.binomial(200, 0.7, 4), rng.binomial(200, 0.995, 4)] / 200  # not grokked, grokked
    types = SolutionTypes().fit(pd.DataFrame({"test_acc": accuracies}), ["test_acc"])
    assert types.n_clusters_ == 2 and types.labels_.tolist() == [0] * 4 + [1] * 4


def test_two_types_of_four_members_are_found():
    """8 members, two types 8 sd apart on one column: found in 18 of 20 such samples (at 4 sd a mixture can hardly
    tell 8 members from one normal sample: such types are found in 15% of runs at 8 members, 35% at 16)."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(8, 1)) + np.repeat([0.0, 8.0], 4)[:, None]
    types = SolutionTypes().fit(pd.DataFrame(values, columns=["score"]), ["score"])
    assert types.n_clusters_ == 2 and types.labels_.tolist() == [0] * 4 + [1] * 4
    assert types.p_values_[0] < 0.025


def test_the_step_ignores_a_subset_a_grid_point_never_records():
    """A letter-counting grid point with one piece per letter has no `present_inside_token` subset: its all-NaN
    column must not drop every member (it used to raise "no member has finite values")."""
    from ontogeny.analysis.analyze import Context
    from ontogeny.analysis.steps.solutions import solutions

    rng = np.random.default_rng(0)
    members = pd.DataFrame({"member": range(6), "config": "task.vocab_size=10"})
    rows = [(m, step, name, value) for m in range(6) for step in (0, 100)
            for name, value in (("test/acc", 0.5 + 0.4 * (m % 2) + 0.01 * rng.standard_normal()),
                                ("test/present_inside_token/acc", np.nan))]
    scalars = pd.DataFrame(rows, columns=["member", "step", "name", "value"])
    result = solutions(Context(run=None, scalars=scalars, members=members, random_state=0))
    table = result.tables["solutions"]
    assert sorted(table.member) == list(range(6))
    assert table.groupby("cluster").member.apply(lambda m: len(set(m % 2))).eq(1).all()  # 0.5 vs 0.9: two types


# the final accuracies of 4 letter-counting seeds (one piece per letter; 13 subsets), as `ontogeny analyze` met them
LETTERS = [[1.000, 0.9905, 1.0000, 0.8416, 0.25, 0.9811, 1.0000, 0.991, 1.0000, 0.8696, 0.250, 0.9818, 0.9844],
           [1.000, 0.9895, 0.9900, 0.8911, 0.75, 0.9791, 1.0000, 0.991, 0.9887, 0.9457, 0.625, 0.9818, 1.0000],
           [0.994, 0.9855, 0.9922, 0.8812, 0.00, 0.9771, 0.9921, 0.987, 0.9944, 0.9457, 0.000, 0.9818, 0.9844],
           [0.996, 0.9700, 0.9567, 0.8317, 1.00, 0.9443, 0.9970, 0.975, 0.9605, 0.8696, 1.000, 0.9524, 0.9844]]


def test_a_significant_split_with_a_lone_member_says_why_it_is_one_type():
    """Member 3 stands apart on several columns: the types test finds a split, the outlier test (at 4 members) does
    not flag it, and a type of one member is refused; the line must say so rather than print p = 0.0025 beside
    "1 type"."""
    from ontogeny.analysis.analyze import Context
    from ontogeny.analysis.steps.solutions import solutions

    names = [f"test/s{i}/acc" for i in range(13)]
    types = SolutionTypes(random_state=0).fit(pd.DataFrame(LETTERS, columns=names), names)
    assert types.n_clusters_ == 1 and types.too_small_ == 1 and types.p_values_[-1] <= 0.025
    assert SolutionTypes().fit(members([(8, 0.9, 30.0)]), COLUMNS).too_small_ is None
    scalars = pd.DataFrame([(m, 100, name, value) for m, row in enumerate(LETTERS) for name, value in zip(names, row)],
                           columns=["member", "step", "name", "value"])
    context = Context(run=None, scalars=scalars, members=pd.DataFrame({"member": range(4), "config": "all"}),
                      random_state=0)
    line = solutions(context).summary[0]
    assert "1 type(s) among 4 members (a split into 2 has p = 0.0" in line
    assert "one type would hold 1 member(s), under the 2 a type needs: kept together)" in line


def test_the_outlier_line_names_the_spread_it_assumes():
    """A flagged seed is farther out than a normal spread of seeds allows, which heavy-tailed seeds also are: the
    line says which test decided, so a real extreme is not read as a broken run."""
    from ontogeny.analysis.analyze import Context
    from ontogeny.analysis.steps.solutions import solutions

    final = [0.90, 0.91, 0.89, 0.905, 0.895, 0.90, 0.91, 0.30]  # member 7 far below the others
    scalars = pd.DataFrame([(m, 100, "test/acc", value) for m, value in enumerate(final)],
                           columns=["member", "step", "name", "value"])
    context = Context(run=None, scalars=scalars, members=pd.DataFrame({"member": range(8), "config": "all"}),
                      random_state=0)
    line = solutions(context).summary[0]
    assert line.endswith("; outliers beyond a normal spread of seeds (generalized ESD): members [7]"), line
