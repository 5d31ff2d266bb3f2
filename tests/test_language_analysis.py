"""Language-run analysis from recorded scalars (analysis/language.py, the `language` step, figures_language.py), on
synthetic scalars with planted answers: stage boundaries, their medians and CIs, the order of two onsets."""


import numpy as np
import pandas as pd
import pytest

import ontogeny as og
from ontogeny.analysis import analyze
from ontogeny.analysis.analyze import ANALYSES, Context
from ontogeny.analysis.language import (
    onset_order, stage_summary, strategy_stages, structure_line, structure_onsets, uas_matrix
)
from ontogeny.analysis.synthetic import synthetic_language_scalars
from ontogeny.analysis.steps.language import language
from ontogeny.report.figures_language import onset_figure, strategy_figure, structure_figure, uas_figure

REFERENCES = ["uniform", "unigram", "bigram"]


@pytest.fixture(scope="module")
def planted():
    """6 members, stages uniform -> unigram -> bigram at ~300 and ~3,000 steps (+-0.15 decades per member)."""
    return synthetic_language_scalars(6, random_state=0)


def truth_table(truth: pd.DataFrame) -> pd.DataFrame:
    return truth.pivot(index="member", columns="reference", values="boundary_step")[REFERENCES]


def boundary_table(boundaries: pd.DataFrame) -> pd.DataFrame:
    return boundaries.pivot(index="member", columns="reference", values="boundary_step")[REFERENCES]


def test_stage_boundaries_are_recovered_exactly(planted):
    scalars, truth = planted
    per_checkpoint, boundaries = strategy_stages(scalars)
    pd.testing.assert_frame_equal(boundary_table(boundaries), truth_table(truth))
    assert list(per_checkpoint.columns) == ["member", "step", "closest", "margin", *REFERENCES]
    assert len(per_checkpoint) == scalars[scalars.name == "kl/uniform"].shape[0]
    first = per_checkpoint[per_checkpoint.member == 0]
    assert first.closest.iloc[0] == "uniform" and first.closest.iloc[-1] == "bigram"
    assert (first.margin > 0).all()
    # references given without and with the prefix, in another order: the same boundaries
    _, again = strategy_stages(scalars, ["kl/bigram", "uniform", "unigram"])
    pd.testing.assert_frame_equal(boundary_table(again), truth_table(truth))


def test_stage_summary_medians_and_order(planted):
    scalars, truth = planted
    _, boundaries = strategy_stages(scalars)
    summary = stage_summary(boundaries, range(6), random_state=0).set_index("reference")
    expected = truth_table(truth).median()
    np.testing.assert_allclose(summary.loc[REFERENCES, "median_step"], expected[REFERENCES])
    assert list(summary.position) == [1, 2, 3]
    assert (summary.n_reached == 6).all() and (summary.n_members == 6).all()
    assert (summary.order == "uniform -> unigram -> bigram").all() and summary.same_order.all()
    assert (summary.ci_low <= summary.median_step).all() and (summary.median_step <= summary.ci_high).all()
    assert summary.loc["uniform", ["ci_low", "ci_high"]].tolist() == [0.0, 0.0]  # every member starts there


def test_stage_median_ci_covers_the_planted_median():
    """Over 30 synthetic runs, the 95% CI of the median boundary covers the boundary of a member without jitter
    (the population median of the symmetric jitter) in most runs."""
    covered = []
    for seed in range(30):
        scalars, _ = synthetic_language_scalars(6, random_state=seed)
        steps = np.sort(scalars.step.unique())
        _, boundaries = strategy_stages(scalars)
        summary = stage_summary(boundaries, range(6), n_boot=500, random_state=seed).set_index("reference")
        for name, planted in (("unigram", 300.0), ("bigram", 3_000.0)):
            centre = steps[np.log10(1 + steps) >= np.log10(1 + planted)][0]
            covered.append(summary.loc[name, "ci_low"] <= centre <= summary.loc[name, "ci_high"])
    assert np.mean(covered) >= 0.85


def test_a_one_checkpoint_flicker_opens_no_stage(planted):
    scalars, truth = planted
    scalars = scalars.copy()
    steps = np.sort(scalars.step.unique())
    unigram = truth_table(truth).loc[0, "unigram"]
    flicker = steps[np.searchsorted(steps, unigram) + 3]  # inside member 0's unigram stage
    scalars.loc[(scalars.member == 0) & (scalars.step == flicker) & (scalars.name == "kl/bigram"), "value"] = 0.0
    _, stable = strategy_stages(scalars, min_stay=2)
    pd.testing.assert_frame_equal(boundary_table(stable), truth_table(truth))
    _, eager = strategy_stages(scalars, min_stay=1)
    assert boundary_table(eager).loc[0, "bigram"] == flicker


def test_a_member_that_never_reaches_a_stage(planted):
    scalars, truth = planted
    scalars = scalars.copy()
    scalars.loc[(scalars.member == 5) & (scalars.name == "kl/bigram"), "value"] += 10.0
    _, boundaries = strategy_stages(scalars)
    table = boundary_table(boundaries)
    assert np.isnan(table.loc[5, "bigram"])
    assert table.loc[5, "unigram"] == truth_table(truth).loc[5, "unigram"]
    summary = stage_summary(boundaries, range(6), random_state=0).set_index("reference")
    assert summary.loc["bigram", "n_reached"] == 5
    assert summary.loc["bigram", "median_step"] == truth_table(truth).loc[:4, "bigram"].median()
    assert summary.same_order.all()  # a stage never reached is skipped, not out of order


def test_a_member_out_of_order(planted):
    scalars, _ = planted
    scalars = scalars.copy()
    swap = (scalars.member == 2) & scalars.name.isin(["kl/unigram", "kl/bigram"])
    scalars.loc[swap, "name"] = scalars.loc[swap, "name"].map({"kl/unigram": "kl/bigram", "kl/bigram": "kl/unigram"})
    _, boundaries = strategy_stages(scalars, REFERENCES)
    summary = stage_summary(boundaries, range(6), random_state=0)
    assert not summary.same_order.any() and (summary.n_in_order == 5).all()
    assert summary.order.iloc[0] == "uniform -> unigram -> bigram"


def test_bad_references_fail_with_one_line(planted):
    scalars, _ = planted
    with pytest.raises(ValueError, match="no kl/ curve for trigram"):
        strategy_stages(scalars, ["uniform", "trigram"])
    with pytest.raises(ValueError, match="no kl/\\* scalars recorded"):
        strategy_stages(scalars[~scalars.name.str.startswith("kl/")])
    with pytest.raises(ValueError, match="min_stay"):
        strategy_stages(scalars, min_stay=0)


def test_onset_order_recovers_a_planted_lag():
    scalars, truth = synthetic_language_scalars(8, lag=1_000.0, random_state=3)
    planted = truth.drop_duplicates("member").set_index("member")
    per_member, order = onset_order(scalars, "uas/best", "pairs/acc", min_change=0.05, random_state=0)
    per_member = per_member.set_index("member")
    np.testing.assert_allclose(per_member.first_onset, planted.uas_onset, rtol=0.01)
    np.testing.assert_allclose(per_member.second_onset, planted.pairs_onset, rtol=0.01)
    true_lag = float(np.median(planted.pairs_onset - planted.uas_onset))
    assert order.lag_low <= true_lag <= order.lag_high
    assert (order.n_members, order.n_first_precedes, order.n_second_precedes) == (8, 8, 0)
    assert order.sentence.startswith("uas/best precedes pairs/acc in 8/8 seeds, median lag ")
    assert f"[{order.lag_low:,.0f}, {order.lag_high:,.0f}] (95% CI over seeds)" in order.sentence
    # a falling curve: test/loss falls at the pairs onset
    falling, _ = onset_order(scalars, "pairs/acc", "test/loss", increasing=(True, False))
    np.testing.assert_allclose(falling.second_onset, falling.first_onset, rtol=0.01)
    # asked to rise, a falling curve has no onset
    wrong, order = onset_order(scalars, "uas/best", "test/loss")
    assert wrong.second_onset.isna().all() and order.n_second_never == 8


def test_onset_order_counts_members_whose_curve_never_rises():
    scalars, _ = synthetic_language_scalars(8, random_state=4)
    rng = np.random.default_rng(0)
    flat = (scalars.member == 7) & (scalars.name == "pairs/acc")
    scalars.loc[flat, "value"] = 0.5 + rng.normal(0, 0.005, flat.sum())  # chance, with noise
    per_member, order = onset_order(scalars, "uas/best", "pairs/acc", min_change=0.05, random_state=0)
    assert np.isnan(per_member.set_index("member").loc[7, "second_onset"])
    assert (order.n_first_precedes, order.n_second_never) == (7, 1)
    assert order.sentence.startswith("uas/best precedes pairs/acc in 7/8 seeds (1 where pairs/acc never moves), ")
    reversed_members, reverse = onset_order(scalars, "pairs/acc", "uas/best", min_change=0.05)
    assert reverse.n_second_precedes == 7 and (reversed_members.lag.dropna() < 0).all()
    assert reverse.sentence.startswith("pairs/acc precedes uas/best in 0/8 seeds, follows it in 7 (1 where pairs/acc")


def test_structure_onset_is_where_the_best_head_clears_the_offset_baseline():
    scalars, truth = synthetic_language_scalars(8, offset_uas=0.35, random_state=5)
    table = structure_onsets(scalars).set_index("member")
    best = scalars[scalars.name == "uas/best"].pivot(index="member", columns="step", values="value")
    for member, row in table.iterrows():
        curve = best.loc[member]
        expected = curve.index[(curve - 0.35 >= 0.15).to_numpy()][0]  # uas/best 0.2 + 0.6 rise: rise >= 0.5
        assert row.structure_step == expected
        assert row.final_margin == pytest.approx(curve.iloc[-1] - 0.35)
    planted = truth.drop_duplicates("member").set_index("member").uas_onset
    np.testing.assert_allclose(table.structure_step, planted, rtol=0.3)  # the rise's midpoint, on the grid
    line = structure_line(table, random_state=0)
    assert line.startswith("best head above the best offset baseline and its start by >= 0.15 in 8/8 seeds, first at "
                           "step ")
    never = structure_onsets(synthetic_language_scalars(4, offset_uas=0.7, random_state=5)[0])
    assert never.structure_step.isna().all()  # 0.8 at most: never 0.15 above 0.7
    assert structure_line(never).startswith("best head above the best offset baseline and its start by >= 0.15 in "
                                            "0/4 seeds; ")
    flat = scalars.assign(value=scalars.value.where(scalars.name != "uas/best", 0.3)
                          .where(scalars.name != "uas/offset", 0.0))
    assert structure_onsets(flat).structure_step.isna().all()  # 0.3 above a baseline of 0, but never rises
    per_relation = scalars.assign(name=scalars.name.replace({"uas/best": "uas/best/nsubj",
                                                             "uas/offset": "uas/offset/nsubj"}))
    nsubj = structure_onsets(per_relation, relation="nsubj")
    assert (nsubj.relation == "nsubj").all() and list(nsubj.structure_step) == list(table.structure_step)
    assert structure_onsets(per_relation).empty  # no overall score recorded


def test_language_step_writes_a_structure_line_per_relation(tmp_path, scalar_run):
    scalars, _ = synthetic_language_scalars(4, offset_uas=0.35, random_state=5)
    subject = scalars[scalars.name.isin(["uas/best", "uas/offset"])]
    subject = subject.assign(name=subject.name + "/nsubj", value=subject.value.where(subject.name != "uas/offset", 0.0))
    with og.open(scalar_run("lm", pd.concat([scalars, subject], ignore_index=True))) as run:
        result = analyze(run, what=["language"])
        table = run.table("language_structure")
    assert list(table.relation) == ["all"] * 4 + ["nsubj"] * 4
    lines = [line for line in result.summary if line.startswith("language structure")]
    assert lines[0].startswith("language structure [all]: best head above the best offset baseline and its start by "
                               ">= 0.15 in 4/4")
    assert lines[1].startswith("language structure nsubj [all]: best head above the best offset baseline and its "
                               "start by >= 0.15 in 4/4 seeds")
    # planted: uas/best crosses 0.5 at its rise's midpoint, pairs/acc rises lag = 1,000 steps later
    assert lines[0].endswith("; before the pairs/acc onset in 4/4 seeds")


def test_uas_matrix(planted):
    scalars, _ = planted
    matrix = uas_matrix(scalars)
    steps = np.sort(scalars.step.unique())
    assert list(matrix.columns) == list(steps)
    assert list(matrix.loc["median"].index) == ["L0H0", "L0H1", "L1H0", "L1H1"]
    assert list(dict.fromkeys(matrix.index.get_level_values("member"))) == [0, 1, 2, 3, 4, 5, "median"]
    expected = scalars[scalars.name == "uas/L1H0"].pivot(index="member", columns="step", values="value").median()
    np.testing.assert_allclose(matrix.loc[("median", "L1H0")].to_numpy(dtype=float), expected.to_numpy())
    assert uas_matrix(scalars[~scalars.name.str.startswith("uas/L")]).empty


# ---- the step, through the store ----------------------------------------------------------------------------


def test_language_step_writes_its_tables(planted, tmp_path, scalar_run):
    scalars, truth = planted
    assert not ANALYSES.get("language").on_request
    with og.open(scalar_run("lm", scalars)) as run:
        result = analyze(run, what=["language"])
        stages, summary, onsets = (run.table(name) for name in
                                   ("language_stages", "language_stage_summary", "language_onsets"))
    pd.testing.assert_frame_equal(boundary_table(stages), truth_table(truth))
    assert list(summary.columns) == ["config", "reference", "position", "median_step", "ci_low", "ci_high",
                                     "n_reached", "n_members", "order", "same_order", "n_in_order"]
    assert list(summary.reference) == REFERENCES and (summary.config == "all").all()
    assert list(onsets.columns) == ["member", "first", "second", "first_onset", "second_onset", "lag"]
    assert len(onsets) == 6 and (onsets.lag > 0).all()
    assert result.summary[0].startswith("language stages [all]: uniform -> unigram -> bigram in 6/6 members; "
                                        "entered: uniform at step 0 [0, 0], unigram at step ")
    assert result.summary[1].startswith("language onsets [all]: uas/best precedes pairs/acc in 6/6 seeds")


def test_language_step_does_not_apply_without_kl_or_uas(planted, tmp_path, scalar_run):
    scalars, _ = planted
    plain = scalars[scalars.name.isin(["test/loss", "pairs/acc"])]
    with og.open(scalar_run("plain", plain)) as run:
        result = analyze(run, what=["language"])
        assert not result.tables and not any(line.startswith("language") for line in result.summary)
        members = run.members().assign(config="all")
        outcome = language(Context(run, run.scalars(), members, 0))
    assert not outcome.tables and not outcome.summary
    assert outcome.values["skipped"] == "language: not a language run (no kl/* or uas/* scalars recorded)"


# ---- figures ----------------------------------------------------------------------------------------------


def test_figures_from_synthetic_scalars(planted):
    scalars, _ = planted
    _, boundaries = strategy_stages(scalars)
    summary = stage_summary(boundaries, range(6), random_state=0).assign(config="all")
    onsets, _ = onset_order(scalars, "uas/best", "pairs/acc", min_change=0.05)

    heat = uas_figure(scalars)
    assert [trace.type for trace in heat.data] == ["heatmap"] * 7  # the median, then each member
    assert [trace.visible for trace in heat.data] == [True] + [False] * 6
    assert len(heat.layout.updatemenus[0].buttons) == 7
    assert list(heat.data[0].y) == ["L0H0", "L0H1", "L1H0", "L1H1"]
    np.testing.assert_allclose(heat.data[0].x, np.log10(np.sort(scalars.step.unique()) + 1))

    loss = onset_figure(scalars, onsets)
    markers = [trace for trace in loss.data if trace.mode == "markers"]
    assert len(markers) == 2 and len(loss.layout.shapes) == 2  # one onset marker trace and median line per curve
    np.testing.assert_allclose(markers[0].x, onsets.first_onset + 1)
    np.testing.assert_allclose(sorted(shape.x0 for shape in loss.layout.shapes),
                               [onsets.first_onset.median() + 1, onsets.second_onset.median() + 1])
    (members,) = [trace for trace in loss.data if trace.name == "test/loss per member"]  # one trace, gaps between
    assert len({m for m in np.asarray(members.customdata)[:, 0] if np.isfinite(m)}) == 6

    strategy = strategy_figure(scalars, summary)
    assert len(strategy.data) == 3 * (1 + 1)  # per reference: its members (one trace) and its median
    assert [shape.x0 for shape in strategy.layout.shapes] == list(summary.median_step + 1)
    assert [note.text for note in strategy.layout.annotations] == REFERENCES

    with_offset, _ = synthetic_language_scalars(6, offset_uas=0.3, random_state=0)
    structure = structure_figure(with_offset)
    assert len(structure.data) == 1 and [shape.y0 for shape in structure.layout.shapes] == [0.3, pytest.approx(0.45)]
    assert len({m for m in np.asarray(structure.data[0].customdata)[:, 0] if np.isfinite(m)}) == 6  # every member
    assert structure_figure(scalars) is None  # no baseline recorded

    no_kl = scalars[~scalars.name.str.startswith(("kl/", "uas/"))]
    assert uas_figure(no_kl) is None and strategy_figure(no_kl, None) is None
    assert onset_figure(scalars, None) is None and onset_figure(no_kl[no_kl.name != "test/loss"], onsets) is None
