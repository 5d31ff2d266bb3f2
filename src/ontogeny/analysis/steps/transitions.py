"""Transitions step: sudden changes in each member's loss and accuracy curves."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analyze import Context, StepResult, analysis_step
from ..summary import split_curves
from ..transitions import TransitionDetector

MIN_CHECKPOINTS = 8  # fewer cannot tell a change from noise


@analysis_step("transitions", writes=("transitions",))
def transitions(context: Context) -> StepResult:
    """Table `transitions` (member x curve x transition) over each split's loss and accuracy curves."""
    scalars, frames, result = context.scalars, [], StepResult()
    curves = split_curves(context.scalar_names)
    for member, rows in scalars[scalars.name.isin(curves)].groupby("member"):
        # each curve on its own steps: a loop may log train/loss every 25 steps and probe at log-spaced ones
        by_steps: dict[tuple, list] = {}
        for name, curve in rows.pivot_table(index="name", columns="step", values="value").iterrows():
            curve = curve.dropna()
            by_steps.setdefault(tuple(curve.index), []).append((name, curve.to_numpy()))
        for steps, named in by_steps.items():
            if len(steps) < MIN_CHECKPOINTS:
                continue
            fit = TransitionDetector(log_steps=True).fit(np.asarray(steps), np.stack([v for _, v in named]),
                                                         names=[name for name, _ in named])
            frames.append(fit.transitions_.assign(member=member))
    if frames:
        table = pd.concat(frames, ignore_index=True)
        result.tables["transitions"] = table[["member", *[c for c in table.columns if c != "member"]]]
        for curve, rows in table.groupby("curve"):
            result.summary.append(f"{curve}: {len(rows)} transitions in {rows.member.nunique()} members; "
                                  f"median onset step {rows.onset_step.median():.0f}")
    return result
