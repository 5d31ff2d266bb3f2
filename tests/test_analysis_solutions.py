"""Solution types: clusters of members on outcome columns, and outliers."""

import numpy as np
import pandas as pd
import pytest

from ontogeny.analysis.solutions import SolutionTypes, modified_z_scores

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
    assert types.z_scores_.loc[103, "weight_norm"] > 3.5


def test_missing_outcome_is_an_outlier():
    frame = members([(8, 0.9, 30.0)])
    frame.loc[0, "test_acc"] = np.nan  # e.g. a diverged member
    types = SolutionTypes().fit(frame, COLUMNS)
    assert types.outliers_[100] and types.labels_[100] == -1 and types.n_clusters_ == 1


def test_modified_z_scores_by_hand():
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0])  # median 3, MAD 1
    assert np.allclose(modified_z_scores(values)[:, 0], 0.6745 * (values - 3.0))
    # MAD 0: mean absolute deviation stands in (Iglewicz & Hoaglin)
    values = np.array([1.0, 1.0, 1.0, 1.0, 6.0])
    assert modified_z_scores(values)[4, 0] == pytest.approx(5.0 / (1.253314 * 1.0))
    assert np.all(modified_z_scores(np.ones(4)) == 0)


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
