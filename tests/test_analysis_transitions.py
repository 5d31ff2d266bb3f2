"""Transition detection against synthetic curves with known change points."""

import numpy as np
import pytest

from ontogeny.analysis.synthetic import synthetic_curves
from ontogeny.analysis.transition_corpus import breakpoint_scores
from ontogeny.analysis.transitions import RELAXATION_RISE_DECADES, TRANSITION_COLUMNS, TransitionDetector


def found_steps(detector, n_curves):
    table = detector.transitions_
    return [table.loc[table.curve == c, "step"].to_numpy(float) for c in range(n_curves)]


@pytest.mark.parametrize("kind", ["sigmoid", "step"])
def test_precision_and_recall_on_noisy_synthetic_curves(kind):
    steps, values, truth = synthetic_curves(16, 160, n_transitions=2, noise=0.05, kind=kind, random_state=0)
    detector = TransitionDetector().fit(steps, values)
    precision, recall = breakpoint_scores(truth, found_steps(detector, 16), margin=0.1)
    assert precision >= 0.8 and recall >= 0.8
    assert list(detector.transitions_.columns) == list(TRANSITION_COLUMNS)


def test_direction_size_and_window_are_consistent():
    steps, values, truth = synthetic_curves(8, 160, n_transitions=1, noise=0.02, random_state=1)
    table = TransitionDetector().fit(steps, values).transitions_
    assert (np.sign(table["after"] - table["before"]) == table["direction"]).all()
    assert np.allclose(table["size"], table["after"] - table["before"])
    assert ((table["onset_step"] <= table["step"]) & (table["step"] <= table["end_step"])).all()


def test_pure_noise_has_no_transitions():
    steps, values, _ = synthetic_curves(40, 160, n_transitions=0, noise=0.05, random_state=2)
    assert len(TransitionDetector().fit(steps, values).transitions_) == 0


@pytest.mark.parametrize("t0", [1.0, 100.0, 1000.0])
def test_smooth_power_law_losses_have_no_transitions(t0):
    # L(t) = 0.5 + 2 (1 + t / t0)^-alpha: flat until t0, then a power law; noise-free and with noise 0.01
    steps, _, _ = synthetic_curves(1, 160, n_transitions=0, random_state=3)
    exponents = np.array([0.3, 0.5, 1.0, 0.3, 0.5, 1.0])[:, None]
    noise = np.array([0.0, 0.0, 0.0, 0.01, 0.01, 0.01])[:, None]
    losses = 0.5 + 2.0 * (1 + steps / t0) ** -exponents
    losses += noise * np.random.default_rng(4).normal(size=losses.shape)
    assert len(TransitionDetector().fit(steps, losses).transitions_) == 0


def test_clean_step_is_found_at_the_exact_checkpoint():
    # a log-then-linear schedule like evaluation.schedule: 0, log-spaced, then every 500 steps
    steps = np.array(sorted({0, *[round(2 ** (i / 4)) for i in range(40)], *range(1000, 20001, 500)}))
    for jump_at in (38, 181, 1000, 5000):
        values = np.where(steps >= jump_at, 0.2, 1.0)
        table = TransitionDetector().fit(steps, values).transitions_
        assert len(table) == 1
        row = table.iloc[0]
        assert row.step == row.onset_step == row.end_step == jump_at
        assert row.direction == -1
        assert row.before == pytest.approx(1.0, abs=1e-3) and row.after == pytest.approx(0.2, abs=1e-3)


def test_linear_step_axis_and_names():
    steps, values, truth = synthetic_curves(3, 120, n_transitions=1, noise=0.02, kind="step", random_state=5)
    detector = TransitionDetector(log_steps=False).fit(steps, values, names=["a", "b", "c"])
    assert set(detector.transitions_.curve) <= {"a", "b", "c"}
    assert len(detector.transitions_) >= 2


def test_constant_curve_and_bad_penalty():
    steps = np.arange(1, 50)
    assert len(TransitionDetector().fit(steps, np.ones(49)).transitions_) == 0
    with pytest.raises(ValueError, match="penalty"):
        TransitionDetector(penalty="aic").fit(steps, np.ones(49))


def test_relaxation_rise_constant():
    tau = 1.0
    t10, t90 = tau * np.log(10 / 9), tau * np.log(10)  # 1 - exp(-t) reaches 10% and 90%
    assert RELAXATION_RISE_DECADES == pytest.approx(np.log10(t90 / t10))


def test_breakpoint_scores_by_hand():
    assert breakpoint_scores([100, 10_000], [105, 5_000], margin=0.1) == (0.5, 0.5)
    # one-to-one: two found near one true step count once
    assert breakpoint_scores([100], [100, 101], margin=0.1) == (0.5, 1.0)
    assert breakpoint_scores([[100], []], [[100], [50]], margin=0.1) == (0.5, 1.0)
    assert breakpoint_scores([], [], margin=0.1) == (1.0, 1.0)
    assert breakpoint_scores([100], [150], margin=40, log_steps=False) == (0.0, 0.0)


def test_synthetic_curves_shapes_and_truth():
    steps, values, truth = synthetic_curves(4, 100, n_transitions=2, kind="step", noise=0.0, random_state=6)
    assert steps.shape == (100,) and values.shape == (4, 100) and np.all(np.diff(steps) > 0)
    for curve, true_steps in zip(values, truth):
        jumps = steps[1:][np.abs(np.diff(curve)) > 0]
        assert np.array_equal(jumps, true_steps)


# ---- held to a corpus of known kinds, and noise that is not independent -------------------------------------


def test_targets_on_the_corpus_of_known_kinds():
    from ontogeny.analysis.transition_corpus import SMOOTH, corpus, evaluate

    steps, rows = corpus(60, random_state=1)
    result = evaluate(TransitionDetector(), steps, rows)
    assert result["precision"] >= 0.95 and result["recall"] >= 0.90, result
    for kind in SMOOTH:  # exponential relaxations and power laws under correlated noise included
        assert result["by_kind"][kind] <= 0.2, (kind, result)


def test_targets_on_the_held_out_corpus():
    """Other schedules (60 checkpoints, probes merged with a logger), slow rises, a stretched exponential, and
    Student-t (2 df) and AR(1) noise on every kind. Before the spike filter and the second noise estimate: precision
    0.86, recall 0.84, 0.27 false transitions per smooth curve under t2 noise. On this draw, recall 0.917 before
    the fits by generalized least squares under correlated noise, 0.938 with them."""
    from ontogeny.analysis.transition_corpus import HELD_OUT_SMOOTH, evaluate_held_out, held_out_corpus

    table = evaluate_held_out(TransitionDetector(), held_out_corpus(20)).set_index(["kind", "noise"])
    overall = table.loc[("all", "all")]
    assert overall.precision >= 0.95 and overall.recall >= 0.90, overall
    smooth = table[table.index.get_level_values("kind").isin(HELD_OUT_SMOOTH)]
    assert (smooth["false per smooth curve"] <= 0.2).all(), smooth


def test_targets_on_the_unseen_corpus():
    """The third corpus (Laplace, heteroscedastic and AR noise of correlation 0.2-0.7; a step on a falling power
    law, Gompertz rises, overshoots; two relaxations, a line and a log-saturating rise). On this draw: precision 0.741,
    recall 0.872 before the local noise scale; recall 0.861 before the second window for a rise whose foot the group
    before took, 0.906 with it."""
    from ontogeny.analysis.transition_corpus import UNSEEN_SMOOTH, evaluate_held_out, unseen_corpus

    table = evaluate_held_out(TransitionDetector(), unseen_corpus(20), UNSEEN_SMOOTH).set_index(["kind", "noise"])
    overall = table.loc[("all", "all")]
    assert overall.precision >= 0.85 and overall.recall >= 0.89, overall
    assert overall["false per smooth curve"] <= 0.1, overall


def test_noise_that_shrinks_as_the_loss_falls_is_not_a_transition():
    from ontogeny.analysis.transition_corpus import checkpoints

    steps = checkpoints(120, 3e4)
    clean = 1 + 2 * (1 + steps / 30.0) ** -0.6
    sd = 0.1 * (0.2 + (clean - clean.min()) / (clean.max() - clean.min()))  # 6x noisier at the start than the end
    curves = [clean + np.random.default_rng(seed).normal(0, 1, len(steps)) * sd for seed in range(20)]
    # the curve's one sigma: 33; the local scale: 2; with correlated-noise fits (a correlation read into the
    # changing noise): 3
    assert len(TransitionDetector().fit(steps, np.stack(curves)).transitions_) <= 3


def test_one_example_wiggles_of_an_accuracy_at_its_ceiling_are_not_transitions():
    from ontogeny.analysis.transition_corpus import checkpoints

    steps = checkpoints(100, 1e4)
    accuracy = np.where(np.log10(1 + steps) < 2, 0.05, 1.0)  # on 500 examples: a jump, then exactly 1
    accuracy[[60, 61, 62, 80, 81, 82, 83]] = 0.998  # one example missed for a few checkpoints, twice
    found = TransitionDetector().fit(steps, accuracy).transitions_
    assert len(found) == 1 and found.iloc[0]["size"] > 0.9  # the noise scale at its floor read the dips as 4 more


def test_a_spike_is_not_a_rise_and_a_fall():
    from ontogeny.analysis.transitions import despike

    steps = np.arange(100)
    flat = np.random.default_rng(0).normal(0, 0.01, 100)
    spiked = flat.copy()
    spiked[[30, 31, 70]] += [1.0, 0.0, -2.0]  # two lone spikes
    assert TransitionDetector().fit(steps, spiked).transitions_.empty
    cleaned = despike(spiked[None])[0]
    assert abs(cleaned[30]) < 0.05 and abs(cleaned[70]) < 0.05
    stepped = flat + (steps >= 50)  # a step is kept exactly
    np.testing.assert_array_equal(despike(stepped[None])[0], stepped)


def test_two_steps_on_a_short_curve_are_not_taken_for_correlated_noise():
    """60 checkpoints, two steps filling half the curve: the smoother's misfit around them read as noise of lag-1
    correlation 0.8 (sigma 7x too large), and neither step was found."""
    from ontogeny.analysis.transition_corpus import schedule

    steps = schedule("log60")
    x = np.log10(1 + steps)
    values = (1.1 + 0.5 / (1 + np.exp(-(x - 1.95) / 0.01)) + 0.5 / (1 + np.exp(-(x - 3.35) / 0.01))
              + np.random.default_rng(3).normal(0, 0.03, len(x)))
    found = TransitionDetector().fit(steps, values)
    assert found.rho_[0] < 0.3
    np.testing.assert_allclose(np.log10(1 + found.transitions_.step), [1.95, 3.35], atol=0.1)


def test_long_run_sigma_sees_correlated_noise_and_not_the_signal():
    from ontogeny.analysis._common import difference_sigma, long_run_sigma
    from ontogeny.analysis.transition_corpus import checkpoints, curve

    rng = np.random.default_rng(2)
    steps = checkpoints()
    for rho in (0.0, 0.5):
        curves = np.stack([curve(kind, steps, rng, rho)[0] for kind in ("sigmoid", "two_steps", "relaxation")
                           for _ in range(30)])
        sigma, found = long_run_sigma(curves)
        assert abs(found.mean() - rho) < 0.08  # the transitions do not leak into the estimate
        inflation = np.sqrt(1 + rho) / (1 - rho)  # long-run scale / difference scale for AR(1)
        assert np.median(sigma / difference_sigma(curves)) == pytest.approx(inflation, rel=0.2)


def test_steps_under_correlated_noise_are_judged_by_its_likelihood():
    """Two sharp half steps under AR(1) noise of correlation 0.5 (sd 0.16 of a step). Judged by ordinary least
    squares with the long-run noise scale, 53 of 60 were found; by generalized least squares, all 60."""
    from ontogeny.analysis.transition_corpus import checkpoints, noise

    steps = checkpoints(150, 1e5)
    x = np.log10(1 + steps)
    clean = 0.5 / (1 + np.exp(-(x - 2.0) / 0.012)) + 0.5 / (1 + np.exp(-(x - 3.5) / 0.012))
    curves = np.stack([clean + noise(np.random.default_rng(seed), len(x), 0.08, 0.5) for seed in range(30)])
    detector = TransitionDetector().fit(steps, curves)
    precision, recall = breakpoint_scores([np.array([10**2.0 - 1, 10**3.5 - 1])] * 30, found_steps(detector, 30),
                                          margin=0.15)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_the_second_of_two_rises_keeps_its_plateau_when_the_first_takes_its_foot():
    """Two half steps 0.8-1.2 decades apart, each rising over 0.5 decades: grouping gave the first rise the second's
    first change, the second was judged from a window that started on its way up, and 14 of 60 steps were missed."""
    from ontogeny.analysis.transition_corpus import checkpoints

    steps = checkpoints(150, 1e5)
    x = np.log10(1 + steps)
    curves, truth = [], []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        centers = np.cumsum([rng.uniform(1.0, 3.0), rng.uniform(0.8, 1.2)])
        curves.append(sum(0.5 / (1 + np.exp(-(x - c) / (0.5 / 4.394))) for c in centers)
                      + rng.normal(0, 0.01, len(x)))
        truth.append(10**centers - 1)
    detector = TransitionDetector().fit(steps, np.stack(curves))
    precision, recall = breakpoint_scores(truth, found_steps(detector, 30), margin=0.15)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_generalized_fits_match_gls_with_the_ar1_covariance():
    """The Prais-Winsten whitening against the definition: min over (a, b) of r' Sigma^-1 r with Sigma the AR(1)
    covariance rho^|i - j| / (1 - rho^2), solved directly; rho 0 gives ordinary least squares."""
    from scipy.linalg import toeplitz

    from ontogeny.analysis.transitions import _best_basis_sse

    rng = np.random.default_rng(0)
    x = np.linspace(0, 3, 40)
    y = 1 / (1 + np.exp(-(x - 1.5) / 0.2)) + rng.normal(0, 0.1, 40)
    basis = np.stack([x, np.exp(-x), x**2], axis=1)
    for rho in (0.0, 0.3, 0.7):
        inverse = np.linalg.inv(toeplitz(rho ** np.arange(40)) / (1 - rho**2))
        best = np.inf
        for k in range(3):
            design = np.stack([np.ones(40), basis[:, k]], axis=1)
            coef = np.linalg.solve(design.T @ inverse @ design, design.T @ inverse @ y)
            residual = y - design @ coef
            best = min(best, residual @ inverse @ residual)
        assert _best_basis_sse(y, basis, rho) == pytest.approx(best, rel=1e-9)


def test_a_curve_logged_every_step_is_thinned_in_log_step_first():
    """20,000 checkpoints (a loss logged every step): each window's sigmoid grid grows with the square of its length,
    so one such curve needed hundreds of GB (5.3 GB at 3,000); thinned to at most 1,000 checkpoints even in log-step,
    the jump is found where it is and nothing else (averaging the bins instead read their changing noise as 2 false
    transitions here), reported at a checkpoint step."""
    from ontogeny.analysis.transitions import thin_checkpoints

    steps = np.arange(20_000)
    x = np.log10(1 + steps)
    values = 2 - 1 / (1 + np.exp(-(x - 3.5) / 0.02)) + np.random.default_rng(0).normal(0, 0.05, len(steps))
    table = TransitionDetector().fit(steps, values).transitions_
    assert len(table) == 1 and table.direction[0] == -1
    assert abs(np.log10(1 + table.step[0]) - 3.5) < 0.05 and table.step[0] in steps
    kept, kept_x, thinned = thin_checkpoints(steps[:6], x[:6], np.arange(12.0).reshape(2, 6), 2)
    # x = log10(1 + [0..5]) splits at 0.389: steps 0-1 and steps 2-5, each named by its middle checkpoint
    np.testing.assert_array_equal(kept, [0, 3])
    np.testing.assert_array_equal(thinned, [[0, 3], [6, 9]])
    np.testing.assert_allclose(kept_x, x[[0, 3]])
