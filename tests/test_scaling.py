"""Scaling axes (analysis/scaling.py, the `scaling` step, figures_scaling.py): power laws with planted exponents,
effective data on curves with known answers, censoring, Muennighoff's R* recovered, and the step on written runs."""

import numpy as np
import pandas as pd
import pytest

import ontogeny as og
from ontogeny.analysis import analyze
from ontogeny.analysis.analyze import ANALYSES
from ontogeny.analysis.scaling import (
    DATA_KEY, effective_data, fit_r_star, grid_points, member_outcomes, muennighoff_epochs, power_law, power_law_fits,
    repeat_members, repeat_table, scaling_axes, seed_counts, weighted_medians
)
from ontogeny.analysis.synthetic import synthetic_scaling_scalars
from ontogeny.analysis.steps.scaling import _repeat_line
from ontogeny.report.figures_scaling import effective_epochs_figure, loss_data_figure


def test_power_law_matches_a_log_log_polyfit_and_skips_unusable_points():
    rng = np.random.default_rng(0)
    x = np.array([8.0, 16, 32, 64, 128])
    y = 3.0 * x**-0.7 * np.exp(rng.normal(0, 0.1, 5))
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    a, alpha, r_squared = power_law(x, y)
    assert alpha == pytest.approx(-slope) and a == pytest.approx(np.exp(intercept))
    assert r_squared == pytest.approx(np.corrcoef(np.log(x), np.log(y))[0, 1] ** 2)
    rows = np.stack([y, np.r_[y[:2], 0.0, np.nan, y[4]], np.r_[y[0], 0.0, 0.0, 0.0, np.nan]])  # [3, 5]
    _, alphas, _ = power_law(x, rows)
    reference = -np.polyfit(np.log(x[[0, 1, 4]]), np.log(y[[0, 1, 4]]), 1)[0]
    np.testing.assert_allclose(alphas[:2], [-slope, reference])
    assert np.isnan(alphas[2])  # one usable point: no fit


def test_weighted_medians_are_numpy_medians_of_the_resampled_seeds():
    rng = np.random.default_rng(1)
    values, labels = rng.normal(size=7), np.array([0, 1, 2, 3, 4, 5, 5])  # label 5 holds two members
    counts = seed_counts(6, n_boot=200, random_state=2)
    got = weighted_medians(values, labels, counts)
    for b in range(200):
        expected = np.median(np.repeat(values, counts[b, labels].astype(int)))
        assert got[b] == pytest.approx(expected)
    assert np.isnan(weighted_medians(values[:1], labels[:1], np.zeros((1, 6))))[0]  # a draw without that seed


def planted_outcomes(alpha: float, n_seeds: int, noise: float, rng) -> pd.DataFrame:
    widths = np.array([16, 32, 64, 128, 256])
    rows = [{"member": i * len(widths) + j, "init_seed": i, "width": w, "n_train": 0, "epochs": np.nan, "final_loss":
             2.0 * w**-alpha * np.exp(rng.normal(0, noise))} for i in range(n_seeds) for j, w in enumerate(widths)]
    return pd.DataFrame(rows)


def test_power_law_fit_recovers_a_planted_exponent_and_its_ci_covers_it():
    rng = np.random.default_rng(0)
    fits = power_law_fits(planted_outcomes(0.45, 8, 0.15, rng), n_boot=1000, random_state=0)
    row = fits.set_index("fit").loc["loss vs width"]
    assert row.alpha == pytest.approx(0.45, abs=0.08)
    assert row.alpha_low < 0.45 < row.alpha_high and row.alpha_high - row.alpha_low < 0.3
    assert row.n_points == 5 and row.r_squared > 0.9
    covered = []
    for replicate in range(40):  # the interval's coverage over planted data sets: near the nominal 95%
        row = power_law_fits(planted_outcomes(0.45, 8, 0.15, rng), n_boot=400, random_state=replicate).iloc[0]
        covered.append(row.alpha_low <= 0.45 <= row.alpha_high)
    assert np.mean(covered) >= 0.8


def test_paired_exponent_interval_keeps_its_coverage_at_four_seeds():
    """Every width holds the same 4 seeds: each seed's curve is fitted and a t interval taken over the 4 exponents.
    The percentile bootstrap covered the planted exponent in 0.865 of such data sets (it never reaches past the
    seeds' own range); benchmarks/scaling_calibration.py has the table by n."""
    rng = np.random.default_rng(0)
    covered = [power_law_fits(planted_outcomes(0.45, 4, 0.15, rng), n_boot=200, random_state=i).iloc[0]
               for i in range(200)]
    assert np.mean([row.alpha_low <= 0.45 <= row.alpha_high for row in covered]) >= 0.92


def test_r_star_interval_keeps_its_coverage_at_four_seeds():
    covered = 0
    for seed in range(100):
        scalars, members = synthetic_scaling_scalars(widths=(32,), n_seeds=4, r_star=5.0, member_noise=0.05,
                                                     random_state=seed)
        row = repeat_table(repeat_members(scalars, member_outcomes(scalars, members)), n_boot=50,
                           random_state=seed).iloc[0]
        covered += row.r_star_low <= 5.0 <= row.r_star_high
    assert covered >= 88  # the percentile bootstrap: 0.80 at 4 seeds


def test_effective_data_finds_a_known_crossing_on_a_power_law_curve():
    steps, batch = np.r_[0, np.geomspace(10, 10_000, 31).round()], 32
    fresh = 5.0 * np.maximum(steps * batch, 1.0) ** -0.5  # c (s B)^-0.5
    at_checkpoint = int(steps[20])
    data, censored = effective_data(steps, fresh, 5.0 * (at_checkpoint * batch) ** -0.5, batch)
    assert data == pytest.approx(at_checkpoint * batch) and not censored
    planted = 3.0e4  # between checkpoints: log(1 + s) interpolation is a hair off log s
    data, censored = effective_data(steps, fresh, 5.0 * planted**-0.5, batch)
    assert data == pytest.approx(planted, rel=2e-3) and not censored
    data, censored = effective_data(steps, fresh, fresh.min() / 2, batch)  # never reached: the budget, censored
    assert data == 10_000 * batch and censored
    assert effective_data(steps, fresh, 10.0, batch) == (0.0, False)  # worse than the initial model
    zeros = np.r_[1.0, 0.5, 0.0, 0.0]  # a hinge loss that reaches 0: interpolated in the loss itself
    data, _ = effective_data([0, 9, 99, 999], zeros, 0.25, 1)
    assert data == pytest.approx(10**1.5 - 1)
    with pytest.raises(ValueError, match="same length|one length"):
        effective_data(steps, fresh[:-1], 0.1, batch)


def test_muennighoff_r_star_and_effective_epochs_are_recovered_from_planted_repeats():
    scalars, members = synthetic_scaling_scalars(r_star=6.0, noise=0.05, random_state=0)
    outcomes = member_outcomes(scalars, members)
    per_member = repeat_members(scalars, outcomes)
    assert per_member.paired.all() and not per_member.censored.any()
    expected = muennighoff_epochs(per_member.epochs - 1, 6.0)
    np.testing.assert_allclose(per_member.effective_epochs, expected, rtol=0.01)
    np.testing.assert_allclose(per_member.worth, (expected - 1) / (per_member.epochs - 1), rtol=0.02)
    table = repeat_table(per_member, n_boot=300, random_state=0)
    assert set(table.width) == {32, 64, 128} and list(table.n_train[:3]) == [500, 2000, 8000]
    assert table.r_star.to_numpy() == pytest.approx(6.0, rel=0.03)
    assert (table.r_star_low <= table.r_star).all() and (table.r_star <= table.r_star_high).all()
    assert table.worth_at_4.to_numpy() == pytest.approx((muennighoff_epochs(3, 6.0) - 1) / 3, rel=0.01)
    assert fit_r_star([1.0, 7.0, 31.0], muennighoff_epochs([1.0, 7.0, 31.0], 2.5)) == pytest.approx(2.5, rel=0.01)


def test_repeats_beyond_what_fresh_data_reaches_are_censored():
    scalars, members = synthetic_scaling_scalars(widths=(32,), n_trains=(0, 1000), n_seeds=4, noise=0.0,
                                                 random_state=0)
    repeated = members.member[members[DATA_KEY] == 1000]
    last = (scalars.step == scalars.step.max()) & scalars.member.isin(repeated[:3]) & (scalars.name == "test/loss")
    scalars.loc[last, "value"] /= 10  # three of four repeated seeds end below anything fresh data reached
    per_member = repeat_members(scalars, member_outcomes(scalars, members))
    assert list(per_member.censored) == [True, True, True, False]
    budget = scalars.step.max() * 32
    np.testing.assert_allclose(per_member.effective_data[:3], budget)
    row = repeat_table(per_member, n_boot=200, random_state=0).iloc[0]
    assert row.n_censored == 3 and row.effective_data == pytest.approx(budget)


def test_scaling_axes_apply_only_to_width_or_data_sweeps():
    grid = pd.DataFrame({"member": range(4), "model.width": [8, 8, 16, 16], DATA_KEY: [0, 100] * 2,
                         "task.batch_size": 32, "init_seed": [0, 0, 0, 0]})
    assert scaling_axes(grid) == ("model.width", None)
    assert scaling_axes(grid.drop(columns=DATA_KEY)) == (None, None)  # no n_train: another kind of run
    assert scaling_axes(grid.assign(**{"model.width": 8, DATA_KEY: 100})) == (None, None)  # nothing varies
    key, problem = scaling_axes(grid.assign(**{"optim.lr": [0.1, 0.2, 0.1, 0.2]}))
    assert key is None and problem.startswith("scaling: skipped (the grid also varies optim.lr")
    assert "no task.batch_size" in scaling_axes(grid.drop(columns="task.batch_size"))[1]


def fields(members: pd.DataFrame) -> pd.DataFrame:
    return members.drop(columns="init_seed")  # the fixture numbers init seeds by member


def test_scaling_step_writes_its_tables_and_skips_other_runs(scalar_run):
    assert not ANALYSES.get("scaling").on_request
    scalars, members = synthetic_scaling_scalars(widths=(32, 128), n_trains=(0, 1000, 4000, 16000), n_seeds=3,
                                                 noise=0.0, r_star=4.0, random_state=0)
    with og.open(scalar_run("scaling", scalars, fields(members))) as run:
        result = analyze(run, ["scaling"])
        tables = {name: run.table(name) for name in ("scaling_points", "scaling_fits", "scaling_repeats")}
    assert len(tables["scaling_points"]) == 8 and len(tables["scaling_repeats"]) == 6
    assert set(tables["scaling_fits"].fit) == {"loss vs width", "loss vs unique examples"}
    by_width = tables["scaling_fits"].set_index(["fit", "at"]).alpha.loc["loss vs width"]
    np.testing.assert_allclose(by_width, 0.4, rtol=1e-6)  # the planted width exponent, at every n_train
    lines = [line for line in result.summary if line.startswith("scaling")]
    assert lines[0].startswith("scaling [width=32, fresh data (64,000 samples)]: final test loss ")
    assert "scaling fit: loss ~ width^-0.40 [-0.40, -0.40] at n_train 1,000" in " ".join(lines)
    repeats = next(line for line in lines if line.startswith("scaling repeats, width 32"))
    effective = muennighoff_epochs(15, 4.0)  # 16 epochs over 4,000 examples
    assert f"16 epochs over 4,000 examples worth {effective:.3g}" in repeats
    assert "seeds without a fresh twin" in repeats  # the fixture gives each member its own init seed
    assert "Muennighoff fit (3 grid points, rms log error 0.00) R* = 3.99 [" in repeats  # the grid point next to 4
    table = tables["scaling_repeats"]
    assert table.r_star.to_numpy() == pytest.approx(4.0, rel=0.01)
    worth_at_4 = (muennighoff_epochs(3, 4.0) - 1) / 3  # 0.70
    assert table.worth_at_4.to_numpy() == pytest.approx(worth_at_4, rel=0.01)
    assert repeats.endswith("Up to 4 epochs, repetition is worth less than fresh data (w's 95% CI below 0.9), "
                            "measured at 4 epochs")
    without_four = _repeat_line(32, table[(table.width == 32) & (table.epochs > 4)])
    assert "the fewest 16 epochs: extrapolated" in without_four
    assert without_four.endswith("Up to 4 epochs (no grid point there; from the fit), repetition is worth less than "
                                 "fresh data (w's 95% CI below 0.9)")

    other = scalars[scalars.member.isin(members.member[members[DATA_KEY] == 0])]
    plain = fields(members[members[DATA_KEY] == 0]).drop(columns=DATA_KEY)
    with og.open(scalar_run("plain", other, plain)) as run:
        result = analyze(run, ["scaling"])
        assert not [name for name in run.tables() if name.startswith("scaling")]
    assert not [line for line in result.summary if line.startswith("scaling")]


def test_figures_draw_the_tables():
    scalars, members = synthetic_scaling_scalars(widths=(32, 64), n_seeds=3, random_state=0)
    outcomes = member_outcomes(scalars, members)
    points, fits = grid_points(outcomes, n_boot=200), power_law_fits(outcomes, n_boot=200)
    repeats = repeat_table(repeat_members(scalars, outcomes), n_boot=200)
    figure = loss_data_figure(points, fits)
    names = [trace.name for trace in figure.data if trace.name]
    assert "width 32" in names and "width 32: fresh data" in names
    assert any(name.startswith("width 64: fit x^-") for name in names)
    figure = effective_epochs_figure(repeats)
    curve = next(trace for trace in figure.data if trace.name and trace.name.startswith("width 32: Muennighoff"))
    np.testing.assert_allclose(curve.y, muennighoff_epochs(np.asarray(curve.x) - 1, repeats.r_star.iloc[0]))
    assert figure.data[0].name.startswith("y = x")
    assert loss_data_figure(None) is None and effective_epochs_figure(repeats.iloc[:0]) is None


def test_a_tiny_sparse_parity_sweep_end_to_end(tmp_path):
    run = og.run("sparse-parity", overrides=["steps=200", "seeds=2", "task.n=10", "task.k=2", "record.every=50",
                                             "sweep.model.width=[8,16]", "sweep.task.n_train=[0,128]"],
                 out=tmp_path / "parity")
    result = analyze(run, ["scaling"])  # the other default steps are not this test's business (and take 20 s)
    repeats = og.open(run.path).table("scaling_repeats")
    assert list(repeats.epochs) == [50.0, 50.0] and (repeats.n_paired == 2).all()  # 200 x 32 / 128
    assert (repeats.effective_data > 0).all()
    assert any(line.startswith("scaling repeats, width 8: 50 epochs over 128 examples worth") for line in
               result.summary)
