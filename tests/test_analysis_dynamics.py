"""Per-example dynamics on hand-built curves with known answers."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import expit

from ontogeny.analysis._sigmoid import fit_sigmoids
from ontogeny.analysis.dynamics import (
    ExampleDynamics,
    abruptness,
    age_of_acquisition,
    cartography,
    forgetting_events,
    sigmoid_summary,
)

STEPS = np.unique(np.round(np.geomspace(1, 1e5, 120)))  # log-spaced checkpoints
X = np.log10(1 + STEPS)


def test_age_of_acquisition_recovers_sigmoid_midpoints():
    centers = np.array([1.5, 2.5, 3.0, 4.0])  # log10(1 + step)
    loss = 2.3 * (1 - expit((X[None] - centers[:, None]) / 0.1))  # symmetric drops: halfway = centre
    aoa = age_of_acquisition(STEPS, loss, increasing=False)
    assert np.allclose(np.log10(1 + aoa), centers, atol=0.01)


def test_age_of_acquisition_of_a_correctness_step_lies_between_the_checkpoints():
    k = 70
    correct = (np.arange(len(STEPS)) >= k).astype(float)
    aoa = age_of_acquisition(STEPS, correct, increasing=True)[0]
    assert STEPS[k - 1] < aoa <= STEPS[k]


def test_age_of_acquisition_direction_and_constant_curves():
    rising = expit((X - 3) / 0.1)
    curves = np.stack([rising, 1 - rising, np.full_like(X, 0.3)])
    assert np.isnan(age_of_acquisition(STEPS, curves)[2])
    up, down, flat = age_of_acquisition(STEPS, curves, increasing=True)
    assert np.isfinite(up) and np.isnan(down) and np.isnan(flat)


def test_vectorised_sigmoid_fit_matches_per_curve_least_squares():
    # reference: scipy's curve_fit on each curve, started at the truth; the grid search must be as good
    rng = np.random.default_rng(0)
    truth = [(0.2, 0.7, 2.0, 0.2), (1.0, -0.8, 3.5, 0.05), (0.5, 0.3, 2.8, 0.4)]
    curves = np.stack([lo + amp * expit((X - m) / w) for lo, amp, m, w in truth])
    curves += rng.normal(0, 0.03, curves.shape)
    fit = fit_sigmoids(X, curves)
    ours = ((fit.at(X) - curves) ** 2).sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        for curve, start, rss in zip(curves, truth, ours):
            params, _ = curve_fit(lambda x, lo, amp, m, w: lo + amp * expit((x - m) / w), X, curve, p0=start)
            reference = ((params[0] + params[1] * expit((X - params[2]) / params[3]) - curve) ** 2).sum()
            assert rss <= reference * 1.01


def test_sigmoid_summary_columns_and_rise():
    summary = sigmoid_summary(STEPS, expit((X - 3) / 0.1)[None])
    assert list(summary.columns) == ["halfway_step", "rise_decades", "start", "end", "r2"]
    assert summary.loc[0, "rise_decades"] == pytest.approx(2 * np.log(9) * 0.1, rel=0.05)
    assert summary.loc[0, "r2"] > 0.999


def test_abruptness_by_hand():
    curves = np.array([[0, 0, 1, 1], [0, 0.25, 0.5, 0.75], [1, 1, 1, 1], [0, 1, 0, 1]], dtype=float)
    assert np.allclose(abruptness(curves)[[0, 1, 3]], [1.0, 1 / 3, 1.0])
    assert np.isnan(abruptness(curves)[2])


def test_forgetting_events_by_hand():
    correct = np.array([
        [0, 1, 1, 0, 1, 0],  # learned twice, forgotten twice
        [0, 0, 1, 1, 1, 1],  # learned once, never forgotten
        [0, 0, 0, 0, 0, 0],  # never learned
        [1, 1, 1, 1, 1, 1],  # correct from the start
    ], dtype=bool)
    steps = [0, 10, 20, 30, 40, 50]
    table = forgetting_events(correct, steps)
    assert table["n_forgetting"].tolist() == [2, 0, 0, 0]
    assert table["n_learning"].tolist() == [2, 1, 0, 0]
    assert table["ever_learned"].tolist() == [True, True, False, True]
    assert table["unforgettable"].tolist() == [False, True, False, True]
    assert table["final_correct"].tolist() == [False, True, False, True]
    assert table["first_learned_step"].tolist()[:2] == [10.0, 20.0]
    assert np.isnan(table["first_learned_step"][2]) and table["first_learned_step"][3] == 0.0


def test_cartography_by_hand():
    loss = np.log([[2.0, 2.0, 4.0], [1.0, 1.0, 1.0]])  # p_true = [.5, .5, .25] and [1, 1, 1]
    correct = np.array([[1, 1, 0], [1, 1, 1]], dtype=bool)
    table = cartography(loss=loss, correct=correct)
    assert np.allclose(table["confidence"], [(0.5 + 0.5 + 0.25) / 3, 1.0])
    assert np.allclose(table["variability"], [np.std([0.5, 0.5, 0.25]), 0.0])
    assert np.allclose(table["correctness"], [2 / 3, 1.0])
    only_correct = cartography(correct=correct)
    assert only_correct["confidence"].isna().all() and np.allclose(only_correct["correctness"], [2 / 3, 1])
    with pytest.raises(ValueError):
        cartography()


def test_example_dynamics_table():
    centers = np.array([2.0, 3.0, 4.0])
    loss = 2.3 * (1 - expit((X[None] - centers[:, None]) / 0.05)) + 0.01
    correct = loss < np.log(2)
    index = pd.MultiIndex.from_tuples([(0, 7), (0, 8), (1, 7)], names=["member", "example"])
    table = ExampleDynamics().fit(STEPS, loss=loss, correct=correct, index=index).table_
    assert table.index.equals(index)
    assert np.allclose(np.log10(1 + table["aoa_step"].to_numpy()), centers, atol=0.02)
    assert table["n_forgetting"].tolist() == [0, 0, 0] and table["unforgettable"].all()
    assert {"confidence", "variability", "correctness", "abruptness", "rise_decades"} <= set(table.columns)
    from_correct = ExampleDynamics(aoa_from="correct").fit(STEPS, correct=correct).table_
    assert "confidence" in from_correct and from_correct["confidence"].isna().all()
    with pytest.raises(ValueError):
        ExampleDynamics(aoa_from="loss").fit(STEPS, correct=correct)
