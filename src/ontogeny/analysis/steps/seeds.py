"""Seed statistics step: Multi-Bootstrap CIs of each grid point's outcomes, and init vs data-order variance."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analyze import Context, StepResult, analysis_step
from ..bootstrap import VarianceDecomposition, multibootstrap
from ..summary import split_curves

COLUMNS = ["config", "quantity", "estimate", "ci_low", "ci_high", "n_members"]


@analysis_step("seeds", writes=("seed_stats", "variance"), after=("grokking",))
def seeds(context: Context) -> StepResult:
    """Tables `seed_stats` (config x quantity, with the grokking step's data threshold) and `variance`."""
    members, result = context.members, StepResult()
    per_member = context.outcomes.copy()
    grokking = context.results.get("grokking")
    if grokking is not None:
        steps = grokking.tables["grokking"].set_index("member")
        per_member["generalization_step"] = steps.generalization_step
        per_member["memorization_step"] = steps.memorization_step
    # Grokking's steps, then each split's final loss and accuracy (test first), and the area under test/acc.
    finals = [f"final {name}" for name in split_curves(context.scalar_names) if not name.startswith("train/")]
    quantities = ["generalization_step", "memorization_step", *finals, "test/acc area"]
    rows = []
    for config, group in members.groupby("config", sort=False):
        values = per_member.loc[group.member.to_numpy()]
        for quantity in quantities:
            if quantity not in values:
                continue
            data = values[quantity].dropna().to_numpy(dtype=float)
            if len(data) < 2:
                continue
            ci = multibootstrap(data, random_state=context.random_state)
            rows.append({"config": config, "quantity": quantity, "estimate": ci.estimate, "ci_low": ci.low,
                         "ci_high": ci.high, "n_members": len(data)})
            if quantity.startswith("final ") and quantity.endswith("/loss"):
                result.summary.append(f"{quantity} [{config}]: {ci.estimate:.4g} [{ci.low:.4g}, {ci.high:.4g}] "
                                      f"(mean, 95% CI over {len(data)} seeds)")
    table = pd.DataFrame(rows, columns=COLUMNS)
    if grokking is not None and "data_threshold" in grokking.values:
        table = pd.concat([table, grokking.values["data_threshold"]], ignore_index=True)
    result.tables["seed_stats"] = table
    if members.config.nunique() == 1 and members.init_seed.nunique() > 1 and members.data_seed.nunique() > 1:
        _variance(result, per_member, members, [*finals, "test/acc area"], context.random_state)
    return result


def _variance(result: StepResult, per_member, members, quantities, random_state) -> None:
    frame = members.set_index("member")[["init_seed", "data_seed"]].join(per_member)
    rows = []
    for quantity in quantities:
        if quantity not in frame or frame[quantity].isna().any():
            continue
        fit = VarianceDecomposition(random_state=random_state).fit(frame, quantity)
        for component, row in fit.components_.iterrows():
            name = {"init_seed": "init", "data_seed": "data"}.get(component, component)
            rows.append({"quantity": quantity, "component": name, "share": row["share"],
                         "ci_low": row.get("ci_low", np.nan), "ci_high": row.get("ci_high", np.nan)})
    if rows:
        table = pd.DataFrame(rows)
        result.tables["variance"] = table
        for quantity, part in table.groupby("quantity", sort=False):
            shares = ", ".join(f"{r.component} {r.share:.0%}" for r in part.itertuples())
            result.summary.append(f"variance of {quantity}: {shares}")
