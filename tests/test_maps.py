"""Training maps (Hu et al. 2023): a Gaussian HMM over members' metric trajectories, checked against simulated
regimes with a known number of states, known change steps and a known detour delay, and run on a tiny real run."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import ontogeny as og
from ontogeny.analysis.maps import TrainingMap, map_features, median_delay
from ontogeny.analysis.synthetic import piecewise_regimes
from ontogeny.analysis.steps.maps import _describe
from ontogeny.report.figures_maps import map_figure

DETOUR_MEMBERS, DETOUR_STEPS, EVERY = (1, 4, 6), 150, 10


def regime_of_state(fit: TrainingMap, truth: pd.DataFrame) -> dict[int, int]:
    """The true regime each fitted state coincides with most often."""
    joined = fit.states_.merge(truth, on=["member", "step"])
    return joined.groupby("state").regime.agg(lambda r: r.value_counts().idxmax()).to_dict()


def change_steps(frame: pd.DataFrame, column: str) -> dict[int, list[int]]:
    """Per member: the steps at which `column` differs from the checkpoint before."""
    changes = {}
    for member, rows in frame.sort_values("step").groupby("member"):
        values, steps = rows[column].to_numpy(), rows.step.to_numpy()
        changes[member] = steps[1:][values[1:] != values[:-1]].tolist()
    return changes


@pytest.mark.parametrize("data_seed", [0, 1])
def test_recovers_states_segmentation_and_detour_of_simulated_regimes(data_seed):
    scalars, truth = piecewise_regimes(8, detour_members=DETOUR_MEMBERS, detour_steps=DETOUR_STEPS, every=EVERY,
                                       random_state=data_seed)
    fit = TrainingMap(random_state=0).fit(scalars)
    assert fit.n_states_ == 4  # A, B, C and the detour D, by BIC
    assert fit.bic_.idxmin() == 4 and fit.bic_.notna().all()
    mapping = regime_of_state(fit, truth)
    assert sorted(mapping.values()) == [0, 1, 2, 3]  # one state per regime
    decoded = fit.states_.assign(regime=fit.states_.state.map(mapping))
    # segmentation: the same number of changes per member, each within one checkpoint of the true one
    found, true = change_steps(decoded, "regime"), change_steps(truth, "regime")
    for member in true:
        assert len(found[member]) == len(true[member]), member
        assert np.abs(np.subtract(found[member], true[member])).max() <= EVERY, member
    # the detour: exactly the regime-D state, visited by exactly the detour members, costing about 150 steps
    table = fit.state_table_.set_index("state")
    detours = table[table.detour]
    assert len(detours) == 1 and mapping[detours.index[0]] == 3
    row = detours.iloc[0]
    assert row.n_members == len(DETOUR_MEMBERS) and row.share == pytest.approx(3 / 8)
    visitors = sorted(fit.states_[fit.states_.state == detours.index[0]].member.unique())
    assert visitors == list(DETOUR_MEMBERS)
    assert abs(row.delay_steps - DETOUR_STEPS) <= 30  # the medians of jittered change steps (+-20) differ by 150
    assert abs(row.mean_dwell_steps - DETOUR_STEPS) <= 2 * EVERY
    assert row.delay_p < 0.1  # the 3 visitors are the 3 latest of 8: few of the C(8, 3) = 56 relabelings do as well
    # states are numbered by first visit: A first, then D and B (both entered around step 150), C last
    assert mapping[0] == 0 and mapping[fit.end_state_] == 2 and fit.end_state_ == 3
    assert fit.arrival_.notna().all()
    # state means come back in the metrics' units: C generalized, A untrained
    assert table.loc[fit.end_state_, "test/acc"] == pytest.approx(1.0, abs=0.05)
    assert table.loc[0, "train/loss"] == pytest.approx(10**0.5, rel=0.1)  # geometric mean of log-normal losses
    # the step's summary names the detour, its visitors and the delay
    lines = _describe("all", fit, 8)
    assert lines[0].startswith("maps [all]: 4 states by held-out BIC (1-8 tried); 5/8 members go 0 -> ")
    assert f"detour state {detours.index[0]} visited by 3/8 members (1, 4, 6)" in lines[1]
    assert f"({row.delay_steps:+.0f} steps, rank-sum permutation p = {row.delay_p:.2g})" in lines[1]


def test_without_a_detour_finds_three_states_and_flags_none():
    scalars, _ = piecewise_regimes(6, detour_members=(), random_state=2)
    fit = TrainingMap(random_state=0).fit(scalars)
    assert fit.n_states_ == 3
    assert not fit.state_table_.detour.any()
    assert (fit.state_table_.share == 1).all()
    assert set(fit.paths()) == {(0, 1, 2)}


def test_detours_are_found_by_their_test_and_only_then():
    """The number of states is chosen on held-out members; the planted detour (3 of 8 members, +150 steps) is found
    in each of 6 data sets (p = 1/56, the smallest 3 of 8 can give; a median-difference test could not go below
    3/56 = 0.054 there), and a state one seed of 8 visits cannot be a detour (its smallest p is 1/8; a positive
    delay alone used to make it one)."""
    for data_seed in range(2, 6):
        scalars, _ = piecewise_regimes(8, detour_members=DETOUR_MEMBERS, random_state=data_seed)
        fit = TrainingMap(random_state=0).fit(scalars)
        assert fit.held_out_ and fit.n_states_ == 4
        detours = fit.state_table_[fit.state_table_.detour]
        assert len(detours) == 1 and detours.delay_p.iloc[0] == pytest.approx(1 / 56)
    latest = np.arange(8) == 7
    assert median_delay(np.arange(8.0), latest, np.random.default_rng(0)) == (4.0, 1 / 8)


def test_median_delay_and_its_exact_permutation_p_value():
    rng = np.random.default_rng(0)
    # visitors {3, 4} vs {1, 2}: delay 3.5 - 1.5 = 2; of the 6 relabelings only this one reaches 2
    assert median_delay(np.array([1.0, 2, 3, 4]), np.array([False, False, True, True]), rng) == (2.0, 1 / 6)
    # {1, 4} vs {2, 3}: delay 0, reached or beaten by {3, 4}, {2, 4}, {2, 3}, {1, 4}: 4 of 6
    assert median_delay(np.array([1.0, 2, 3, 4]), np.array([True, False, False, True]), rng) == (0.0, 4 / 6)
    assert np.isnan(median_delay(np.array([1.0, 2]), np.array([True, True]), rng)[0])
    # the p-value is the exact one-sided Mann-Whitney test's (scipy as the reference)
    arrival = np.array([400.0, 550, 410, 390, 560, 405, 545, 395, 430, 520])
    visited = np.isin(np.arange(10), [1, 4, 8, 9])
    reference = stats.mannwhitneyu(arrival[visited], arrival[~visited], alternative="greater", method="exact").pvalue
    assert median_delay(arrival, visited, rng)[1] == pytest.approx(reference)
    # too many relabelings to list: random ones, and the extreme split is still rare
    arrival, visited = np.arange(30.0), np.arange(30) >= 15
    delay, p_value = median_delay(arrival, visited, rng, n_permutations=2000)
    assert delay == 15.0 and p_value < 0.01


def test_transitions_match_the_decoded_paths_and_fits_are_reproducible():
    scalars, _ = piecewise_regimes(8, random_state=3)
    fit = TrainingMap(max_states=5, random_state=5).fit(scalars)
    transitions = fit.transitions_
    # each row of the transition matrix sums to 1 (the few entries below 1e-3 left out of the table)
    assert np.allclose(fit.transmat_.sum(axis=1), 1.0)
    assert np.allclose(transitions.groupby("from_state").probability.sum(), 1.0, atol=1e-2)
    states = fit.states_.sort_values(["member", "step"])
    moves = sum(len(path) - 1 for path in fit.paths())
    assert transitions[transitions.from_state != transitions.to_state].n_observed.sum() == moves
    assert transitions.n_observed.sum() == len(states) - states.member.nunique()
    again = TrainingMap(max_states=5, random_state=5).fit(scalars)
    pd.testing.assert_frame_equal(again.states_, fit.states_)
    pd.testing.assert_frame_equal(again.state_table_, fit.state_table_)


def test_features_are_logged_standardized_and_checked():
    scalars = pd.DataFrame({"member": [0, 0, 0, 1, 1, 1] * 3, "step": [0, 1, 2] * 6,
                            "name": ["train/loss"] * 6 + ["test/acc"] * 6 + ["lr"] * 6,
                            "value": [1, 10, 100, 1, 10, 100, 0.1, 0.2, 0.3, 0.1, 0.2, 0.9, *[0.01] * 6]})
    features, scale = map_features(scalars)
    assert list(features.columns) == ["train/loss", "test/acc"]  # lr: not a default metric
    assert scale.loc["train/loss", "log"] and not scale.loc["test/acc", "log"]
    assert features["train/loss"].to_numpy() == pytest.approx(np.array([-1, 0, 1, -1, 0, 1]) * np.sqrt(1.5))
    assert np.allclose(features.mean(), 0) and np.allclose(features.std(ddof=0), 1)
    with pytest.raises(ValueError, match="not recorded"):
        map_features(scalars, ["test/loss"])
    with pytest.raises(ValueError, match="varies"):
        map_features(scalars, ["lr"])


def test_grokking_run_gets_a_map_and_its_figure(tmp_path):
    run = og.run("grokking", overrides=["task.p=13", "task.train_fraction=0.5", "model.width=24", "steps=300",
                                        "record.every=20", "seeds=3"], out=tmp_path / "g")
    result = og.analysis.analyze(run, what=["maps"])
    assert any(line.startswith("maps [all]:") for line in result.summary)
    stored = og.open(tmp_path / "g")
    assert {"maps", "map_states", "map_transitions"} <= set(stored.tables())
    maps, states, transitions = (stored.table(n) for n in ("maps", "map_states", "map_transitions"))
    checkpoints = stored.scalars().groupby("member").step.nunique()
    assert maps.groupby("member").size().to_dict() == checkpoints.to_dict()  # every checkpoint of every member
    n_states = len(states)
    assert 1 <= n_states <= 8 and sorted(states.state) == list(range(n_states))
    assert set(maps.state) <= set(states.state)
    assert states.share.between(0, 1).all() and states.n_members.max() == 3
    assert {"train/loss", "test/acc", "weight_norm"} <= set(states.columns)
    assert transitions.probability.between(0, 1).all()
    assert set(transitions.from_state) | set(transitions.to_state) <= set(states.state)
    fig = map_figure(maps, states, transitions)
    assert any(trace.type == "heatmap" for trace in fig.data)
    assert np.asarray(fig.data[-1].z).shape == (3, int(checkpoints.max()))


def test_estimator_contract():
    """The estimator contract of tests/test_analysis_contract.py: keyword-only stored arguments, fit returns self,
    fitted names end in an underscore, random_state kept as given."""
    import inspect
    parameters = inspect.signature(TrainingMap.__init__).parameters
    names = [name for name in parameters if name != "self"]
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in names)
    defaults = TrainingMap()
    assert all(getattr(defaults, name) is parameters[name].default for name in names)
    generator = np.random.default_rng(0)
    instance = TrainingMap(max_states=3, random_state=generator)
    assert instance.random_state is generator
    scalars, _ = piecewise_regimes(3, detour_members=(), n_steps=300, random_state=0)
    assert instance.fit(scalars) is instance
    fitted = [key for key in vars(instance) if key not in names]
    assert fitted and all(key.endswith("_") and not key.startswith("_") for key in fitted)


def test_weight_statistics_by_hand_and_the_weight_map_step(tmp_path):
    """Hu et al.'s weight statistics of one member equal the same numbers computed matrix by matrix; the on-request
    step fits a map on them at every checkpoint with saved weights."""
    import torch

    import ontogeny as og
    from ontogeny import TransformerSpec
    from ontogeny.analysis.weight_stats import STATISTICS, weight_statistics
    from ontogeny.models.transformer import EnsembleTransformer

    model = EnsembleTransformer(TransformerSpec(d_model=16, n_heads=2, d_mlp=32, layer_norm=True), vocab_size=7,
                                n_positions=3, n_outputs=5, init_seeds=[0, 1])
    with torch.no_grad():
        model.blocks[0].b_in.add_(torch.randn_like(model.blocks[0].b_in))
    table = weight_statistics(model)
    assert list(table.columns) == list(STATISTICS) and len(table) == 2
    params = {name: p[1].detach().double() for name, p in model.named_parameters()}
    matrices = [p for p in params.values() if p.dim() == 2]
    biases = torch.cat([p for name, p in params.items() if p.dim() == 1 and not name.endswith("gain")])
    weights = torch.cat([m.flatten() for m in matrices])
    singular = torch.cat([torch.linalg.svdvals(m) for m in matrices])
    expected = {"weights/l1": np.mean([float(m.abs().sum()) for m in matrices]),
                "weights/l2": np.mean([float(m.norm()) for m in matrices]),
                "weights/l1_over_l2": np.mean([float(m.abs().sum() / m.norm()) for m in matrices]),
                "weights/mean": float(weights.mean()), "weights/variance": float(weights.var(unbiased=False)),
                "biases/mean": float(biases.mean()), "biases/variance": float(biases.var(unbiased=False)),
                "weights/trace": np.mean([float(torch.trace(m)) for m in matrices]),
                "weights/spectral_norm": np.mean([float(torch.linalg.matrix_norm(m, ord=2)) for m in matrices]),
                "weights/trace_over_spectral_norm": np.mean([float(torch.trace(m) / torch.linalg.matrix_norm(m, 2))
                                                             for m in matrices]),
                "weights/singular_mean": float(singular.mean()),
                "weights/singular_variance": float(singular.var(unbiased=False))}
    for name, value in expected.items():
        assert table.loc[1, name] == pytest.approx(value, rel=1e-9), name

    run = og.run("grokking-nanda", overrides=["task.p=11", "task.train_fraction=0.5", "model.d_model=16",
                                              "model.n_heads=2", "model.d_mlp=32", "seeds=4", "steps=60",
                                              "record.every=10", "record.weights_every=10"], out=tmp_path / "run")
    assert "weight_maps" not in og.analysis.analyze(run).tables  # rebuilds every checkpoint: only on request
    result = og.analysis.analyze(run, what=["weight_maps"])
    statistics = result.tables["weight_statistics"]
    assert set(statistics.name) == set(STATISTICS) and sorted(statistics.step.unique()) == list(range(0, 61, 10))
    assert {"weight_maps", "weight_map_states", "weight_map_transitions"} <= set(result.tables)
    assert any(line.startswith("weight_maps [") for line in result.summary)
