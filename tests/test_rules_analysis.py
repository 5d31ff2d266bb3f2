"""Which rule did it learn (analysis/rules.py, the `rules`, `signature` and `counting` steps,
figures_rules.py), on synthetic scalars and states with planted answers, and one tiny run end to end."""


import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import ontogeny as og
from ontogeny.analysis import analyze
from ontogeny.analysis.analyze import ANALYSES
from ontogeny.analysis.rules import (
    GAP, RARE_GAP, counting_summary, label_of, pooled_rule_members, rule_contrasts, rule_curves, rule_members,
    rule_pairs, rule_summary
)
from ontogeny.analysis.synthetic import synthetic_counting_scalars, synthetic_rule_scalars
from ontogeny.analysis.signature import (
    _auc,
    auxiliary_rows,
    fit_and_score,
    probe_accuracy,
    signature_prediction,
    transfer_rows,
)
from ontogeny.cli import app
from ontogeny.report.figures_rules import (
    counting_figure,
    piece_share_figure,
    rule_figure,
    share_figure,
    signature_figure,
)
from ontogeny.report.page import render_report
from ontogeny.tasks.letters_gen import SHARE_BINS
from ontogeny.tasks.questions_gen import QuestionGrammar, sample

LABELS = ("hierarchical", "linear", "mixed", "hierarchical", "linear")


def test_labels_use_the_task_thresholds():
    assert list(label_of([0.8, 0.79, 0.1, 0.5], [0.1, 0.2, 0.8, 0.5])) == ["hierarchical", "mixed", "linear", "mixed"]


def test_rule_members_recover_planted_labels_switches_and_stability():
    scalars, truth = synthetic_rule_scalars(LABELS, switch_steps=[5, 12, 0, 8, 20], flicker=(3,), random_state=0)
    table = rule_members(scalars).set_index("member")
    truth = truth.set_index("member")
    assert list(table.final_label) == list(truth.label)
    np.testing.assert_array_equal(table.switch_step, truth.switch_step)
    np.testing.assert_array_equal(table.late_label_changes, truth.late_changes)
    assert list(table.stable) == [True, True, True, False, True]
    assert table.loc[3, "late_std"] > 0.2 > table.drop(index=3).late_std.max()  # the flicker is the unstable one
    assert list(table.n_label_changes) == [1, 1, 0, 1 + truth.loc[3, "late_changes"] + 1, 1]
    np.testing.assert_allclose(table.final_test_acc, 0.95)
    final_gen = scalars[(scalars.name == "gen/acc") & (scalars.step == scalars.step.max())].set_index("member").value
    np.testing.assert_allclose(table.final_gen_acc, final_gen)
    curves = rule_curves(scalars)
    assert list(curves.columns) == ["member", "step", "hierarchical", "linear", "label"]
    assert len(curves) == 5 * 30


def test_rule_curves_need_rule_scalars():
    scalars, _ = synthetic_rule_scalars(random_state=0)
    with pytest.raises(ValueError, match="no rule/linear recorded"):
        rule_curves(scalars[scalars.name != "rule/linear"])
    with pytest.raises(ValueError, match="late_fraction"):
        rule_members(scalars, late_fraction=0)


def grid(labels_per_config: dict[float, list[str]], random_state=0):
    labels = [label for labels in labels_per_config.values() for label in labels]
    scalars, _ = synthetic_rule_scalars(labels, switch_steps=[10] * len(labels), random_state=random_state)
    members = pd.DataFrame({"member": range(len(labels)),
                            "task.complexity": [c for c, ls in labels_per_config.items() for _ in ls]})
    members["config"] = "complexity=" + members["task.complexity"].astype(str)
    return scalars, members


def test_rule_summary_shares_cis_and_bimodality():
    scalars, members = grid({0.0: ["linear"] * 6, 0.5: ["hierarchical", "linear"] * 3,
                             0.8: ["hierarchical"] * 5 + ["mixed"]})
    summary = rule_summary(rule_members(scalars), members, random_state=0).set_index("task.complexity")
    assert list(summary.n_hierarchical) == [0, 3, 5] and list(summary.n_members) == [6, 6, 6]
    np.testing.assert_allclose(summary.share_hierarchical, [0, 0.5, 5 / 6])
    # 0 of 6: the exact interval's upper end solves (1 - p)^6 = 0.025, where a bootstrap of the labels gives [0, 0]
    np.testing.assert_allclose(summary.loc[0.0, ["ci_low", "ci_high"]].tolist(), [0.0, 1 - 0.025 ** (1 / 6)])
    assert summary.loc[0.5, "ci_low"] < 0.5 < summary.loc[0.5, "ci_high"]
    assert list(summary.bimodal) == [False, True, False]  # both ends only at 0.5
    assert list(summary.n_middle) == [0, 0, 1] and summary.loc[0.8, "middle_share"] == pytest.approx(1 / 6)
    assert (summary.n_unstable == 0).all()
    finals = rule_members(scalars).merge(members).groupby("task.complexity").final_hierarchical
    np.testing.assert_allclose(summary.mean_hierarchical, finals.mean())
    assert ((summary.mean_low <= summary.mean_hierarchical) & (summary.mean_hierarchical <= summary.mean_high)).all()
    assert summary.loc[0.5, "mean_low"] < 0.5 < summary.loc[0.5, "mean_high"]  # three at each end: a wide interval
    assert summary.loc[0.0, "mean_high"] < summary.loc[0.8, "mean_low"]  # all linear vs mostly hierarchical: apart
    single = rule_summary(rule_members(scalars), members[members.member == 0].assign(config="one"))
    assert single.n_members.tolist() == [1] and np.isnan(single.ci_low.iloc[0])


def test_rule_summary_share_interval_covers_at_few_seeds():
    # the share of seeds labelled hierarchical: its 95% interval holds the true share in >= 95% of grids of 4-8 seeds
    rng = np.random.default_rng(0)
    for n_seeds in (4, 6, 8):
        for truth in (0.1, 0.3, 0.5):
            flags = rng.random((300, n_seeds)) < truth
            labels = {i: ["hierarchical" if f else "mixed" for f in row] for i, row in enumerate(flags)}
            per_member = pd.DataFrame({"member": range(flags.size), "final_label": sum(labels.values(), []),
                                       "final_hierarchical": 0.5, "late_std": 0.0, "stable": True})
            members = pd.DataFrame({"member": range(flags.size), "config": np.repeat(range(300), n_seeds)})
            summary = rule_summary(per_member, members, n_boot=10, random_state=0)
            covered = ((summary.ci_low <= truth) & (truth <= summary.ci_high)).mean()
            assert covered >= 0.95, (n_seeds, truth, covered)


def test_rule_contrasts_pair_grid_points_by_seed():
    rng = np.random.default_rng(0)
    seed_effect = rng.uniform(0.3, 0.7, 6)  # each init seed leans its own way under every grid point
    shares = {"none": seed_effect, "some": seed_effect + 0.1, "noise": seed_effect + rng.normal(0, 0.02, 6)}
    final = np.concatenate(list(shares.values()))
    per_member = pd.DataFrame({"member": range(18), "final_hierarchical": final, "final_label": label_of(final, 0)})
    members = pd.DataFrame({"member": range(18), "config": np.repeat(list(shares), 6),
                            "init_seed": np.tile(range(6), 3), "data_seed": 0})
    table = rule_contrasts(per_member, members, random_state=0).set_index("config")
    assert list(table.index) == ["some", "noise"] and (table.baseline == "none").all()
    assert table.loc["some", "difference"] == pytest.approx(0.1)
    assert 0 < table.loc["some", "ci_low"] and table.loc["some", "p_value"] <= 1 / 2000  # paired: the seeds cancel
    assert table.loc["noise", "ci_low"] < 0 < table.loc["noise", "ci_high"]
    unpaired = rule_contrasts(per_member, members.assign(init_seed=range(18)), random_state=0)
    assert unpaired.empty  # no init seed in two grid points: nothing to pair
    alone = rule_contrasts(per_member[:6], members[:6], random_state=0)
    assert alone.empty
    pooled = per_member.merge(members, on="member")  # members of several runs, already joined
    assert rule_contrasts(pooled, random_state=0).equals(rule_contrasts(per_member, members, random_state=0))
    pooled["late_std"], pooled["stable"] = 0.0, True
    assert rule_summary(pooled, random_state=0).equals(rule_summary(pooled.drop(columns=["config", "init_seed"]),
                                                                    members, random_state=0))


def test_pooled_rule_members_join_analysed_runs_of_one_recipe(tmp_path, scalar_run):
    paths = []
    for name, labels in (("a", {0.0: ["linear", "mixed"], 0.5: ["hierarchical", "mixed"]}),
                         ("b", {0.0: ["mixed"], 0.5: ["hierarchical"]})):
        scalars, members = grid(labels)
        paths.append(scalar_run(name, scalars, members))
        analyze(og.open(paths[-1]), what=["rules"])
    pooled = pooled_rule_members(paths)
    assert pooled.member.tolist() == list(range(6)) and (pooled.scalars == "rule/*").all()
    assert pooled.config.tolist() == ["complexity=0.0"] * 2 + ["complexity=0.5"] * 2 + ["complexity=0.0",
                                                                                       "complexity=0.5"]
    assert pooled.final_label.tolist() == ["linear", "mixed", "hierarchical", "mixed", "mixed", "hierarchical"]
    summary = rule_summary(pooled, random_state=0).set_index("task.complexity")
    assert summary.n_members.tolist() == [3, 3] and summary.n_hierarchical.tolist() == [0, 2]


def test_rule_contrasts_count_seeds_hierarchical_on_one_side_with_mcnemar_exact_test():
    # 8 init seeds; baseline hierarchical at seeds 0, 1; the other grid point at 0, 2, 3, 4, 5, 6:
    # discordant pairs 1 (seed 1) against 5 (seeds 2-6); two-sided exact binomial p = 2 * P(X <= 1 | 6, 1/2) = 14 / 64
    labels = {"base": [1, 1, 0, 0, 0, 0, 0, 0], "more": [1, 0, 1, 1, 1, 1, 1, 0]}
    per_member, members = _labelled_members(labels, init_seeds=range(8))
    row = rule_contrasts(per_member, members, random_state=0).iloc[0]
    assert (row.only_baseline, row.only_config) == (1, 5)
    assert row.share_difference == pytest.approx(4 / 8)
    assert row.labels_p == pytest.approx(14 / 64)
    same = rule_contrasts(*_labelled_members({"a": [1, 0, 0, 0], "b": [1, 0, 0, 0]}, range(4)), random_state=0)
    assert same.labels_p.tolist() == [1.0] and same.share_difference.tolist() == [0.0]


def test_rule_contrasts_labels_p_keeps_false_verdicts_under_five_percent_at_few_seeds():
    # null: both grid points share each seed's chance of ending hierarchical (seed effects from 0.05 to 0.95)
    rng = np.random.default_rng(1)
    for n_seeds in (4, 6, 8, 16):
        verdicts = 0
        for _ in range(400):
            lean = rng.uniform(0.05, 0.95, n_seeds)
            labels = {"a": rng.random(n_seeds) < lean, "b": rng.random(n_seeds) < lean}
            table = rule_contrasts(*_labelled_members(labels, range(n_seeds)), n_boot=10, random_state=0)
            verdicts += table.labels_p.iloc[0] < 0.05
        assert verdicts / 400 <= 0.05, (n_seeds, verdicts)


def _labelled_members(labels: dict, init_seeds) -> tuple[pd.DataFrame, pd.DataFrame]:
    """per_member and members for grid points {config: [0/1 hierarchical per init seed]}."""
    configs = list(labels)
    flags = np.concatenate([np.asarray(labels[c], dtype=bool) for c in configs])
    shares = np.where(flags, 0.9, 0.5)
    n = len(flags)
    per_member = pd.DataFrame({"member": range(n), "final_hierarchical": shares, "final_label": label_of(shares, 0)})
    members = pd.DataFrame({"member": range(n), "config": np.repeat(configs, len(flags) // len(configs)),
                            "init_seed": np.tile(list(init_seeds), len(configs)), "data_seed": 0})
    return per_member, members


def test_rule_pairs_are_equal_accuracy_and_different_rules():
    scalars, _ = synthetic_rule_scalars(("hierarchical", "linear", "hierarchical", "mixed"),
                                        test_acc=[0.95, 0.955, 0.80, 0.96], random_state=0)
    pairs = rule_pairs(rule_members(scalars))
    found = {tuple(sorted(p)) for p in zip(pairs.member_a, pairs.member_b)}
    assert found == {(0, 1), (1, 3), (0, 3)}  # member 2 is 15 points off; (0, 2) share a rule anyway
    assert (pairs.label_a != pairs.label_b).all()
    assert (np.abs(pairs.test_acc_a - pairs.test_acc_b) <= 0.01 + 1e-9).all()
    assert tuple(sorted(pairs.iloc[0][["member_a", "member_b"]])) == (1, 3)  # the most accurate pair first


# ---- the probe ------------------------------------------------------------------------------------------------


def test_the_probe_is_ridge_on_standardized_features_as_least_squares_on_the_augmented_system_gives():
    rng = np.random.default_rng(0)
    scales, alpha = np.array([0.05, 0.3, 1, 3, 10]), 20.0  # unstandardized, the penalty would fall unevenly
    x = rng.normal(size=(40, 5)) * scales + 7
    y = (((x - 7) / scales) @ rng.normal(size=5) > 0).astype(float)
    scored = rng.normal(size=(60, 5)) * scales + 7
    z = (x - x.mean(0)) / x.std(0)
    weights = np.linalg.lstsq(np.vstack([z, np.sqrt(alpha) * np.eye(5)]), np.r_[y - y.mean(), np.zeros(5)],
                              rcond=None)[0]
    reference = ((scored - x.mean(0)) / x.std(0)) @ weights + y.mean() >= 0.5  # the intercept is the mean label
    assert fit_and_score(x, y, scored, reference, alpha=alpha) == 1.0


def planted_states(n_sentences: int, d: int, strength: float, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.tile([0, 1], n_sentences)
    sentences = np.repeat(np.arange(n_sentences), 2)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    states = rng.normal(size=(2 * n_sentences, d)) + strength * (labels[:, None] - 0.5) * direction
    return states, labels, sentences


def test_probe_finds_a_planted_main_aux_direction_and_not_noise():
    rng = np.random.default_rng(0)
    states, labels, sentences = planted_states(200, 32, 6.0, rng)
    assert probe_accuracy(states, labels, sentences, random_state=0) > 0.97
    noise = [probe_accuracy(rng.normal(size=(400, 32)), labels, sentences, random_state=seed) for seed in range(20)]
    assert abs(np.mean(noise) - 0.5) < 0.03 and max(noise) < 0.65
    assert np.isnan(probe_accuracy(states[:2], labels[:2], sentences[:2]))
    with pytest.raises(ValueError, match="need features"):
        probe_accuracy(states, labels[:-1], sentences)


def test_auxiliary_rows_point_at_the_two_auxiliaries():
    grammar = QuestionGrammar()
    examples = sample(grammar, "test", 200, 0)
    sentence, position, label, words = auxiliary_rows(examples)
    x = examples.tokens[:, :-1]
    auxiliaries = x[sentence, position]
    assert ((auxiliaries >= grammar.first_auxiliary) & (auxiliaries < grammar.first_preposition)).all()
    assert (examples.kind[sentence] == "decl").all() and examples.subject_rc[sentence].all()
    main = label == 1
    np.testing.assert_array_equal(auxiliaries[main], examples.main_aux[sentence[main]])
    np.testing.assert_array_equal(auxiliaries[~main], examples.first_aux[sentence[~main]])
    assert (words[~main] < words[main]).all()  # the embedded auxiliary comes first


def test_transfer_rows_put_unseen_positions_in_the_score_rows():
    grammar = QuestionGrammar(complexity=0.5)
    examples = sample(grammar, "test", 300, 0)
    sentence, position, label, fit = transfer_rows(examples, grammar.first_auxiliary, grammar.n_auxiliaries)
    x = examples.tokens[:, :-1]
    auxiliaries = x[sentence, position]
    assert ((auxiliaries >= grammar.first_auxiliary) & (auxiliaries < grammar.first_preposition)).all()
    assert examples.center_embedded[sentence[~fit]].all() and not examples.center_embedded[sentence[fit]].any()
    inner = ~fit & (label == 0)
    assert (position[inner] > examples.first_aux_position[sentence[inner]] + 1).all()  # not the first auxiliary
    assert (x[sentence[inner], position[inner] - 1] == grammar.words().index("that")).all()  # right after "that"
    assert not set(position[~fit]) & set(position[fit])  # position alone has never seen the score rows' places
    onehot = np.eye(position.max() + 1)[position]
    assert fit_and_score(onehot[fit], label[fit], onehot[~fit], label[~fit]) == 0.5
    assert len(transfer_rows(sample(QuestionGrammar(), "test", 100, 0), grammar.first_auxiliary, 4)[0]) == 0


def test_auc_against_counting_pairs():
    rng = np.random.default_rng(1)
    scores, positive = rng.integers(0, 5, 30).astype(float), rng.random(30) < 0.4
    pairs = [(a > b) + 0.5 * (a == b) for a in scores[positive] for b in scores[~positive]]
    assert _auc(scores, positive) == pytest.approx(np.mean(pairs))
    assert _auc(scores, positive) == pytest.approx(roc_auc_score(positive, scores))


def test_signature_prediction_separating_and_random():
    rng = np.random.default_rng(2)
    share = np.r_[rng.uniform(0.85, 1.0, 10), rng.uniform(0.0, 0.3, 10)]
    perfect = signature_prediction(share * 0.5 + 0.5, share, random_state=0)  # monotone in the share
    assert (perfect["auc"], perfect["auc_low"], perfect["auc_high"]) == (1.0, 1.0, 1.0)
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["n_hierarchical"] == 10
    random = signature_prediction(rng.uniform(0.5, 1.0, 20), share, random_state=0)
    assert random["auc_low"] < 0.5 < random["auc_high"]
    assert random["spearman_low"] < 0 < random["spearman_high"]
    one_class = signature_prediction(rng.uniform(size=6), np.full(6, 0.9), random_state=0)
    assert np.isnan(one_class["auc"]) and np.isnan(one_class["auc_low"])


# ---- counting --------------------------------------------------------------------------------------------------


def test_counting_gap_with_ci_over_seeds():
    scalars, members = synthetic_counting_scalars((10, 16, 24), gap=0.2, random_state=0)
    summary = counting_summary(scalars, members, random_state=0)
    gaps = summary[summary.subset == GAP].set_index("task.vocab_size")
    assert list(gaps.index) == [16, 24]  # one letter per piece at 10: nothing inside a piece
    assert (gaps.ci_low < -0.2).all() and (-0.2 < gaps.ci_high).all() and (gaps.ci_high < 0).all()
    assert (gaps.n_members == 6).all()
    absent = summary[summary.subset == "absent"].set_index("task.vocab_size")
    assert (absent.ci_low < 0.9).all() and (0.9 < absent.ci_high).all()
    final = scalars[(scalars.step == 400) & (scalars.name == "test/present_inside_token/acc")]
    own = scalars[(scalars.step == 400) & (scalars.name == "test/present_own_token/acc")]
    expected = final[final.member < 12].value.to_numpy() - own[(own.member >= 6) & (own.member < 12)].value.to_numpy()
    assert gaps.loc[16, "mean"] == pytest.approx(expected.mean())


def test_rare_piece_gap_with_ci_over_seeds():
    scalars, members = synthetic_counting_scalars((10, 1000), gap=0.0, rare_gap=0.3, random_state=1)
    summary = counting_summary(scalars, members, random_state=0)
    rare = summary[summary.subset == RARE_GAP]
    assert list(rare["task.vocab_size"]) == [1000]  # nothing inside a piece at 10
    assert rare.ci_low.iloc[0] < -0.3 < rare.ci_high.iloc[0] < 0
    bins = summary[summary.subset.isin(SHARE_BINS)].set_index("subset")["mean"]
    assert list(bins.index) == list(SHARE_BINS) and bins.iloc[0] < bins.iloc[1] < bins.iloc[2]
    no_gap = counting_summary(*synthetic_counting_scalars((1000,), gap=0.0, random_state=1), random_state=0)
    row = no_gap[no_gap.subset == RARE_GAP].iloc[0]
    assert row.ci_low < 0 < row.ci_high


# ---- the steps, through the store ---------------------------------------------------------------------------


def test_rules_and_counting_steps_write_their_tables(tmp_path, scalar_run):
    assert not ANALYSES.get("rules").on_request and not ANALYSES.get("counting").on_request
    assert ANALYSES.get("signature").on_request
    scalars, members = grid({0.0: ["linear"] * 4, 0.5: ["hierarchical", "linear"] * 2})
    with og.open(scalar_run("rules", scalars, members)) as run:
        result = analyze(run)  # the defaults: `rules` runs, `counting` does not apply
        tables = {name: run.table(name) for name in ("rule_members", "rule_summary", "rule_pairs")}
        assert "counting_summary" not in run.tables()
    assert list(tables["rule_summary"].config) == ["complexity=0.0", "complexity=0.5"]
    assert list(tables["rule_members"].final_label) == ["linear"] * 4 + ["hierarchical", "linear"] * 2
    assert len(tables["rule_pairs"]) == 2 * 6  # each of the 2 hierarchical with each of the 6 linear (all at 0.95)
    lines = [line for line in result.summary if line.startswith("rules")]
    mean = tables["rule_members"].final_hierarchical[:4].mean()
    assert lines[0].startswith("rules [complexity=0.0]: 0/4 seeds hierarchical, 4 linear, 0 mixed (share 0.00 [0.00, "
                               f"0.60]; mean final hierarchical share {mean:.2f} [")
    assert lines[0].endswith("]; 95% CIs over seeds); final hierarchical shares: 4 <= 0.2, 0 between, 0 >= 0.8; "
                             "0 changed label in the last third")
    assert "(bimodal)" in lines[1]

    counts, fields = synthetic_counting_scalars((10, 24), random_state=0)
    with og.open(scalar_run("letters", counts, fields)) as run:
        # named, not the defaults: the default `solutions` step fails on this sweep (a subset absent at vocab 10)
        result = analyze(run, ["counting", "rules"])
        table = run.table("counting_summary")
        assert "rule_members" not in run.tables()
    assert set(table.config) == {"vocab_size=10", "vocab_size=24"}
    lines = [line for line in result.summary if line.startswith("counting")]
    assert lines[0] == "counting [vocab_size=10]: test acc 0.800; no letter inside a multi-letter piece (one piece " \
                       "per letter)"
    assert lines[1].startswith("counting [vocab_size=24]: test acc 0.800; gap inside - own piece -0.")
    assert "; gap rare - common piece -0.004 [-0.020, +0.016]" in lines[1]  # none planted
    assert "rules: skipped (no rule/hierarchical, rule/linear recorded)" in result.summary


def test_rules_step_adds_the_one_clause_reading_where_recorded(scalar_run):
    scalars, members = grid({0.0: ["linear"] * 4})
    one_clause, _ = grid({0.0: ["hierarchical"] * 3 + ["linear"]})
    one_clause = one_clause[one_clause.name.str.startswith("rule/")]
    one_clause = one_clause.assign(name=one_clause.name.str.replace("rule/", "rule_depth1/"))
    assert rule_members(one_clause, prefix="rule_depth1/").final_label.tolist() == ["hierarchical"] * 3 + ["linear"]
    both = pd.concat([scalars, one_clause])
    with og.open(scalar_run("rules", both, members)) as run:
        result = analyze(run, ["rules"])
        per_member, summary = run.table("rule_members"), run.table("rule_summary")
    lines = [line for line in result.summary if line.startswith("rules")]
    assert lines[0].startswith("rules on one subject relative clause (McCoy et al.'s gen set) [all]: "
                               "3/4 seeds hierarchical, 1 linear, 0 mixed (share 0.75 [")
    assert lines[1].startswith("rules on every gen question (one or two nested relative clauses) [all]: "
                               "0/4 seeds hierarchical, 4 linear, 0 mixed")
    assert per_member.final_label.tolist() == ["hierarchical"] * 3 + ["linear"]  # the tables: one clause
    assert summary.scalars.tolist() == ["rule_depth1/*"]
    figure = rule_figure(both, per_member)
    assert [trace.name for trace in figure.data] == ["final: hierarchical"] * 3 + ["final: linear"]
    assert max(figure.data[0].y) == one_clause[one_clause.name == "rule_depth1/hierarchical"].value.max()
    assert "rule_depth1/hierarchical" in figure.layout.title.text
    configs = pd.Series(["a"] * 2 + ["b"] * 2, index=range(4))  # two grid points: a colour each
    by_grid = rule_figure(both, per_member, configs)
    assert [trace.name for trace in by_grid.data] == ["a", "a", "b", "b"]
    assert [trace.line.dash for trace in by_grid.data] == ["solid"] * 3 + ["dot"]
    assert by_grid.data[0].line.color == by_grid.data[1].line.color != by_grid.data[2].line.color
    printed = CliRunner().invoke(app, ["analyze", str(run.path), "--what", "rules"])
    assert printed.exit_code == 0 and lines[0] in printed.stdout.splitlines()  # one line, however long
    with og.open(scalar_run("rules-before", scalars, members)) as run:  # a run recorded before the split
        lines = [line for line in analyze(run, ["rules"]).summary if line.startswith("rules")]
        assert run.table("rule_summary").scalars.tolist() == ["rule/*"]
    assert lines[0].startswith("rules [all]: 0/4 seeds hierarchical, 4 linear")
    assert not [line for line in lines if "relative clause" in line]

# ---- figures -----------------------------------------------------------------------------------------------------


def test_figures_from_synthetic_frames():
    scalars, members = grid({0.0: ["linear"] * 4, 0.5: ["hierarchical", "linear"] * 2, 0.8: ["hierarchical"] * 4})
    per_member = rule_members(scalars)
    rule = rule_figure(scalars, per_member)
    assert len(rule.data) == 12 and len(rule.layout.shapes) == 2
    assert [trace.name for trace in rule.data if trace.showlegend] == ["final: linear", "final: hierarchical"]
    assert rule.data[0].line.color.startswith("rgba(213, 94, 0")  # linear in vermillion

    summary = rule_summary(per_member, members, random_state=0)
    share = share_figure(summary)
    assert len(share.data) == 2 and share.layout.xaxis.title.text.startswith("complexity")
    np.testing.assert_allclose(share.data[0].x, [0.0, 0.5, 0.8])
    np.testing.assert_allclose(share.data[0].y, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(share.data[1].y, summary.mean_hierarchical)  # dashed: the mean final share
    by_rc = share_figure(summary.assign(**{"task.complexity": 0.0, "task.subject_rc": [0.0, 0.5, 1.0]}))
    assert by_rc.layout.xaxis.title.text.startswith("subject_rc") and list(by_rc.data[0].x) == [0.0, 0.5, 1.0]
    assert len(share_figure(summary.drop(columns=["mean_hierarchical"])).data) == 1  # a table from before

    final = per_member.set_index("member")
    signature = pd.DataFrame({"member": final.index, "step": 100, "n_sentences": 50,
                              "probe_accuracy": 0.5 + 0.5 * final.final_hierarchical, "position_accuracy": 0.9,
                              "final_hierarchical": final.final_hierarchical, "final_label": final.final_label})
    scatter = signature_figure(signature)
    assert sorted(trace.name for trace in scatter.data) == ["hierarchical", "linear"]
    assert sum(len(trace.x) for trace in scatter.data) == 12 and scatter.layout.shapes[0].x0 == 0.9
    transfer = signature_figure(signature.assign(transfer_accuracy=[np.nan] * 4 + [0.7] * 8), "transfer_accuracy")
    assert sum(len(trace.x) for trace in transfer.data) == 8 and transfer.layout.shapes[0].x0 == 0.5

    counts, fields = synthetic_counting_scalars((10, 16, 24), random_state=0)
    bars = counting_figure(counting_summary(counts, fields, random_state=0))
    assert [trace.name for trace in bars.data] == ["vocab_size=10", "vocab_size=16", "vocab_size=24"]
    assert GAP not in list(bars.data[0].x) and "gap inside - own piece: vocab_size=16" in bars.layout.title.text
    assert not set(SHARE_BINS) & set(bars.data[1].x)  # the share bins have their own figure
    shares = piece_share_figure(counting_summary(*synthetic_counting_scalars((10, 16, 24), rare_gap=0.4,
                                                                             random_state=0), random_state=0))
    assert [trace.name for trace in shares.data] == ["vocab_size=16", "vocab_size=24"]  # nothing inside at 10
    assert list(shares.data[0].x) == ["< 1e-4", "1e-4 to 1e-3", "1e-3 to 1e-2", ">= 1e-2"]
    assert shares.data[0].y[0] == pytest.approx(0.2, abs=0.03) and shares.data[0].y[3] == pytest.approx(0.6, abs=0.03)

    assert rule_figure(scalars[scalars.name != "rule/hierarchical"]) is None
    assert share_figure(None) is None and signature_figure(None) is None and counting_figure(None) is None
    assert piece_share_figure(None) is None


# ---- one tiny run end to end -----------------------------------------------------------------------------------


def test_tiny_question_run_end_to_end(tmp_path):
    run = og.run("hierarchy-data-quick", overrides=[
        "model.d_model=16", "model.n_heads=2", "model.d_mlp=32", "steps=20", "record.every=10",
        "record.weights_every=20", "seeds=1", "task.n_train=200", "task.n_test=20", "task.n_gen=20"],
        out=tmp_path / "questions")
    result = analyze(run, ["rules", "signature"])
    per_member, signature = run.table("rule_members"), run.table("rule_signature")
    assert len(per_member) == 4 and set(per_member.final_label) <= {"hierarchical", "linear", "mixed"}
    assert len(run.table("rule_summary")) == 4  # one row per complexity
    assert list(signature.columns) == ["member", "step", "n_sentences", "probe_accuracy", "position_accuracy",
                                       "n_deep_sentences", "transfer_accuracy", "final_hierarchical", "final_label"]
    assert sorted(signature.step.unique()) == [0, 20]
    last = signature[signature.step == 20]
    assert last.probe_accuracy.between(0, 1).all() and (last.n_sentences >= 2).all()
    assert last.position_accuracy.eq(1.0).all()  # in this grammar the word position alone tells the auxiliaries
    assert any(line.startswith("signature: probe (main vs embedded") for line in result.summary)
    complexity = run.members().set_index("member")["task.complexity"]
    assert last.set_index("member").transfer_accuracy.isna().to_dict() == (complexity == 0).to_dict()


def test_hierarchy_data_labels_members_on_mccoy_questions(tmp_path):
    run = og.run("hierarchy-data", overrides=[
        "model.d_model=16", "model.n_heads=2", "model.d_mlp=32", "steps=20", "record.every=10",
        "record.weights_every=20", "seeds=2", "task.n_train=200", "task.n_test=20", "task.n_gen=40"],
        out=tmp_path / "qin")
    analyze(run, ["rules", "signature"])
    per_member, summary = run.table("rule_members").set_index("member"), run.table("rule_summary")
    depth1 = run.scalars(name=["rule_depth1/hierarchical"])
    final = depth1[depth1.step == 20].set_index("member").value
    np.testing.assert_allclose(per_member.final_hierarchical, final.loc[per_member.index])
    assert summary["task.subject_rc"].tolist() == [0.0, 1.0] and set(summary.scalars) == {"rule_depth1/*"}
    contrast = run.table("rule_contrasts")
    assert contrast[["config", "baseline", "n_pairs"]].values.tolist() == [["subject_rc=1.0", "subject_rc=0.0", 2]]
    shares = per_member.final_hierarchical
    assert contrast.difference.item() == pytest.approx(shares[2:].mean() - shares[:2].mean())
    assert "<th>baseline</th>" in render_report(run)  # the report shows the contrast
    signature = run.table("rule_signature").dropna(subset=["final_hierarchical"]).set_index("member")
    np.testing.assert_allclose(signature.final_hierarchical, final.loc[signature.index])
    none = run.members().set_index("member")["task.subject_rc"].loc[signature.index] == 0  # nothing to probe there
    assert signature.n_sentences[none].eq(0).all() and signature.probe_accuracy[none].isna().all()
    assert signature.probe_accuracy[~none].notna().all()
