"""Grokking steps and the data threshold on hand-built scalars and members frames."""

import numpy as np
import pandas as pd
import pytest

from ontogeny.analysis.grokking import GrokkingAnalysis, data_threshold, grokking_steps, sweep_table

STEPS = [0, 100, 1000, 10000]
# generalization step per member (None: never); 4 seeds at each of three train fractions
GENERALIZES = {0: None, 1: None, 2: 10000, 3: None,
               4: 1000, 5: 10000, 6: None, 7: 1000,
               8: 100, 9: 1000, 10: 1000, 11: 10000}


def frames(generalizes=GENERALIZES, fractions=(0.1, 0.2, 0.3)):
    rows, members = [], []
    for member, step in generalizes.items():
        members.append({"member": member, "task.train_fraction": fractions[member // 4], "init_seed": member % 4})
        for s in STEPS:
            rows.append({"member": member, "step": s, "name": "train/acc", "value": 1.0 if s >= 100 else 0.3})
            rows.append({"member": member, "step": s, "name": "test/acc",
                         "value": 1.0 if step is not None and s >= step else 0.1})
            rows.append({"member": member, "step": s, "name": "train/loss", "value": 1.0})
    return pd.DataFrame(rows), pd.DataFrame(members)


def test_grokking_steps_by_hand():
    scalars, _ = frames()
    table = grokking_steps(scalars)
    assert table["memorization_step"].tolist() == [100.0] * 12
    assert table.loc[2, "generalization_step"] == 10000 and np.isnan(table.loc[0, "generalization_step"])
    assert table.loc[4, "delay"] == 900 and table.loc[8, "delay"] == 0 and np.isnan(table.loc[1, "delay"])
    assert (table["last_step"] == 10000).all()


def test_threshold_at_exactly_099():
    scalars = pd.DataFrame({"member": [0, 0, 0, 0], "step": [1, 2, 1, 2], "name": ["train/acc"] * 2 + ["test/acc"] * 2,
                            "value": [0.989, 0.99, 0.5, 0.99]})
    table = grokking_steps(scalars)
    assert table.loc[0, "memorization_step"] == 2 and table.loc[0, "generalization_step"] == 2


def test_sweep_table_by_hand():
    scalars, members = frames()
    table = sweep_table(grokking_steps(scalars), members)
    assert table.index.tolist() == [0.1, 0.2, 0.3]
    assert table["n_generalized"].tolist() == [1, 3, 4]
    assert table["success_rate"].tolist() == [0.25, 0.75, 1.0]
    # fraction 0.2 generalized at 1000, 1000, 10000: quartiles by linear interpolation
    assert table.loc[0.2, ["q25_step", "median_step", "q75_step"]].tolist() == [1000, 1000, 5500]
    assert table.loc[0.2, "log10_std"] == pytest.approx(np.std([3, 3, 4], ddof=1))
    assert table.loc[0.3, "median_step"] == 1000 and table.loc[0.3, "median_delay"] == 900


def test_data_threshold_and_budget():
    scalars, members = frames()
    steps = grokking_steps(scalars)
    estimate, low, high = data_threshold(steps, members, n_boot=500, random_state=0)
    assert estimate == 0.2 and low <= 0.2 <= high and {low, high} <= {0.1, 0.2, 0.3, np.inf}
    # within 100 steps only one seed at 0.3 generalizes: no fraction reaches half
    assert data_threshold(steps, members, budget=100, n_boot=100, random_state=0)[0] == np.inf
    assert data_threshold(steps, members, budget=1000, n_boot=100, random_state=0)[0] == 0.2


def test_threshold_is_from_which_on_and_ci_is_degenerate_when_certain():
    # 0.1 gets lucky (all generalize), 0.2 fails, 0.3 always works: the threshold is 0.3
    lucky = {0: 100, 1: 100, 2: 100, 3: 100, 4: None, 5: None, 6: None, 7: None,
             8: 100, 9: 100, 10: 100, 11: 100}
    scalars, members = frames(lucky)
    assert data_threshold(grokking_steps(scalars), members, n_boot=200, random_state=0) == (0.3, 0.3, 0.3)


def test_grokking_analysis_estimator():
    scalars, members = frames()
    analysis = GrokkingAnalysis(n_boot=300, random_state=1)
    assert analysis.fit(scalars, members) is analysis
    assert analysis.data_threshold_ == 0.2 and len(analysis.data_threshold_ci_) == 2
    assert analysis.by_sweep_["n_seeds"].tolist() == [4, 4, 4]
    without_sweep = GrokkingAnalysis().fit(scalars, members.drop(columns="task.train_fraction"))
    assert without_sweep.by_sweep_ is None and without_sweep.data_threshold_ is None
