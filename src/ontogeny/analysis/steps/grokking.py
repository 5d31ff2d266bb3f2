"""Grokking step: memorization and generalization steps per member, and the data threshold over a sweep."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analyze import Context, StepResult, analysis_step
from ..bootstrap import multibootstrap
from ..grokking import GrokkingAnalysis

SWEEP = "task.train_fraction"


@analysis_step("grokking", writes=("grokking", "grokking_sweep"), scalars=("train/acc", "test/acc"))
def grokking(context: Context) -> StepResult:
    """Tables `grokking` (member) and, over a train-fraction sweep, `grokking_sweep`; the data threshold as a value."""
    members, result = context.members, StepResult()
    swept = SWEEP in members and members[SWEEP].nunique() > 1
    fit = GrokkingAnalysis(sweep=SWEEP if swept else None, random_state=context.random_state).fit(
        context.scalars, members)
    steps = fit.steps_.reset_index(names="member")
    result.tables["grokking"] = steps[["member", "memorization_step", "generalization_step", "delay"]]
    for config, group in members.groupby("config", sort=False):
        gen = steps.set_index("member").loc[group.member, "generalization_step"]
        done = gen.dropna()
        line = f"test/acc [{config}]: {len(done)}/{len(gen)} members generalize (>= 99%)"
        if len(done) >= 2:
            ci = multibootstrap(done.to_numpy(), statistic=np.median, random_state=context.random_state)
            line += f"; generalization step {ci.estimate:.0f} [{ci.low:.0f}, {ci.high:.0f}] (median, 95% CI over seeds)"
        elif len(done) == 1:
            line += f"; generalization step {done.iloc[0]:.0f}"
        result.summary.append(line)
    if fit.data_threshold_ is not None:
        low, high = fit.data_threshold_ci_
        result.summary.append(f"data threshold (train fraction where >= half the seeds generalize): "
                              f"{fit.data_threshold_:g} [{low:g}, {high:g}] (95% CI over seeds)")
        result.tables["grokking_sweep"] = fit.by_sweep_.reset_index()
        result.values["data_threshold"] = pd.DataFrame([{
            "config": "all", "quantity": "data_threshold", "estimate": fit.data_threshold_, "ci_low": low,
            "ci_high": high, "n_members": len(members)}])
    return result
