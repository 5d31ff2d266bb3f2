"""Hidden transitions: sharp sub-curves at spread-out times average into a smooth aggregate."""

import numpy as np
import pytest

from ontogeny.analysis.hidden import HiddenTransitions, onset_groups
from ontogeny.analysis.synthetic import synthetic_hidden


def test_smooth_aggregate_of_sharp_drops():
    steps, curves, truth = synthetic_hidden(20, 160, spread_decades=2.0, width=0.03, random_state=0)
    hidden = HiddenTransitions().fit(steps, curves)
    # each sub-curve is sharp, the aggregate is not: its rise is many times the median sub-curve's
    assert np.median(hidden.rises_) < 0.25
    assert hidden.aggregate_rise_ > 1.0
    assert hidden.sharpness_ratio_ > 5
    # recovered onsets match the planted ones
    assert np.allclose(np.log10(1 + hidden.onsets_), np.log10(1 + truth), atol=0.02)
    assert hidden.onset_spread_decades_ == pytest.approx(
        np.subtract(*np.quantile(np.log10(1 + truth), [0.75, 0.25])), abs=0.05)
    assert list(hidden.table_.columns) == ["onset_step", "rise_decades", "r2", "group"]


@pytest.mark.parametrize("n_groups", [1, 2, 3])
def test_onset_groups_are_counted(n_groups):
    steps, curves, truth = synthetic_hidden(18, 160, n_groups=n_groups, spread_decades=2.0, random_state=1)
    hidden = HiddenTransitions(random_state=0).fit(steps, curves)
    assert hidden.n_groups_ == n_groups
    assert hidden.groups_["n_curves"].sum() == 18
    # groups are numbered in time order and hold the planted members (curve i is in group i % n_groups)
    assert hidden.table_["group"].tolist() == (np.arange(18) % n_groups).tolist()
    assert np.all(np.diff(hidden.groups_["center_step"].to_numpy()) > 0)


def test_aggregate_given_and_constant_sub_curves():
    steps, curves, _ = synthetic_hidden(6, 120, n_groups=1, noise=0.0, random_state=2)
    curves[0] = 0.5  # a sub-curve that never moves has no onset
    hidden = HiddenTransitions().fit(steps, curves, aggregate=curves[1:].mean(axis=0))
    assert np.isnan(hidden.onsets_[0]) and hidden.table_["group"][0] == -1
    assert np.isfinite(hidden.onsets_[1:]).all()


def test_onset_groups_resolution_floor():
    # onsets closer than the checkpoint resolution are one group, however many points
    labels, n_groups, _, _ = onset_groups(np.r_[np.full(5, 2.0), np.full(5, 2.001)], resolution=0.05)
    assert n_groups == 1 and set(labels) == {0}
    labels, n_groups, _, _ = onset_groups(np.r_[np.full(5, 2.0), np.full(5, 3.0), np.nan], resolution=0.05)
    assert n_groups == 2 and labels[-1] == -1 and labels[:5].tolist() == [0] * 5


def test_one_group_is_fitted_in_closed_form_as_scikit_learn_fits_it_and_a_lone_onset_is_one_group():
    from sklearn.mixture import GaussianMixture

    from ontogeny.analysis._mixture import fit_mixture

    points = np.random.default_rng(0).normal(size=(30, 1))
    mixture = fit_mixture(points, 1, variance_floor=0.01)
    reference = GaussianMixture(1, covariance_type="diag", reg_covar=0.01).fit(points)
    assert mixture.log_likelihood == pytest.approx(reference.score(points) * 30)
    assert mixture.bic == pytest.approx(reference.bic(points))
    labels, n_groups, _, _ = onset_groups(np.array([np.nan, 2.5, np.nan]), resolution=0.1)
    assert labels.tolist() == [-1, 0, -1] and n_groups == 1  # a user's loop with one sub-curve that rose
