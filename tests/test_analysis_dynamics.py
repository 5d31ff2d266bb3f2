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
    chance_aoa,
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
    hinge = cartography(loss=loss, correct=correct, loss_kind="hinge")  # exp(-hinge) is no probability
    assert hinge["confidence"].isna().all() and hinge["variability"].isna().all()


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


# ---- age of acquisition as Chang et al. 2024 define it -------------------------------------------------------

CHANCE = np.log(10.0)  # ten classes
LOG = np.log10(STEPS)  # their axis: log10(step), step 0 dropped


def drop(start: float, end: float, center: float, width: float = 0.1) -> np.ndarray:
    """A loss falling from `start` to `end` around log10(step) = center."""
    return start + (end - start) * expit((LOG - center) / width)


def chang_reference(steps, loss, chance, proportion=0.5):
    """Their procedure, written out from the paper and its released code: scipy's curve_fit of the 4-parameter
    sigmoid start + (end - start) / (1 + exp((xmid - x) / scale)) to -loss on log10(step), from p0 = (min, max,
    mean x, 1); threshold `proportion` of the way from -chance to the best -loss; the max-x / min-x rules."""
    keep = steps > 0
    x, y = np.log10(steps[keep]), -loss[keep]

    def sigmoid(x, start, end, xmid, scale):
        return start + (end - start) / (1.0 + np.exp((xmid - x) / scale))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start, end, xmid, scale = curve_fit(sigmoid, x, y, p0=[y.min(), y.max(), x.mean(), 1.0], maxfev=100000)[0]
    ymin, ymax = -chance, y.max()
    threshold = ymin * (1 - proportion) + ymax * proportion
    if (threshold >= start and threshold >= end) or ymin >= ymax or (end < start and scale > 0) or (
            end > start and scale < 0):
        return 10 ** x.max()
    if threshold <= start and threshold <= end:
        return 10 ** x.min()
    return 10 ** (xmid - scale * np.log((end - start) / (threshold - start) - 1.0))


def test_chance_aoa_hand_cases_with_known_answers():
    starts_at_chance = drop(CHANCE, 0.3, center=2.0)  # halfway between chance and its minimum: the centre
    below_chance = drop(1.5, 0.3, center=3.0)  # starts below chance: the threshold (chance + 0.3) / 2 = 1.30
    never = np.full(len(STEPS), CHANCE) + 0.01 * np.sin(np.arange(len(STEPS)))
    learned_early = drop(0.35, 0.3, center=3.0)  # below the threshold at every checkpoint
    aoa, acquired = chance_aoa(STEPS, np.stack([starts_at_chance, below_chance, never, learned_early]), CHANCE)
    threshold = (CHANCE + below_chance.min()) / 2
    fraction = (1.5 - threshold) / (1.5 - 0.3)  # the share of the drop done when the loss reaches the threshold
    assert np.log10(aoa[0]) == pytest.approx(2.0, abs=0.005)
    assert np.log10(aoa[1]) == pytest.approx(3.0 + 0.1 * np.log(fraction / (1 - fraction)), abs=0.005)
    assert aoa[2] == STEPS[-1] and aoa[3] == STEPS[0]
    assert acquired.tolist() == [True, True, False, True]
    # the first-and-last reading puts the curve that starts below chance at its centre: a different step
    halfway = age_of_acquisition(STEPS, below_chance[None], increasing=False)[0]
    assert np.log10(halfway) == pytest.approx(3.0, abs=0.01) and aoa[1] < halfway / 1.3


def test_chance_aoa_matches_the_reference_procedure():
    rng = np.random.default_rng(0)
    curves = [drop(CHANCE, rng.uniform(0.1, 1.0), rng.uniform(1.0, 4.0), rng.uniform(0.05, 0.5)) for _ in range(12)]
    curves += [drop(1.8, 0.4, 2.5), drop(CHANCE, 0.2, 1.5) + drop(0, 1.5, 3.5),  # learned, then forgotten
               drop(CHANCE, 1.5, 1.5) + drop(0, -1.0, 3.5)]  # two drops
    loss = np.stack(curves) + rng.normal(0, 0.03, (len(curves), len(STEPS)))
    ours, _ = chance_aoa(STEPS, loss, CHANCE)
    theirs = np.array([chang_reference(STEPS, curve, CHANCE) for curve in loss])
    np.testing.assert_allclose(np.log10(ours), np.log10(theirs), atol=0.03)  # decades
