"""Solution types step: do a grid point's seeds split into qualitatively different solutions, and which are outliers."""

from __future__ import annotations

import pandas as pd

from ..analyze import Context, StepResult, analysis_step
from ..solutions import SolutionTypes

MIN_MEMBERS = 3


@analysis_step("solutions", writes=("solutions",))
def solutions(context: Context) -> StepResult:
    """Table `solutions` (member: cluster, outlier) from the final accuracies, per grid point."""
    outcomes, result = context.outcomes, StepResult()
    columns = [c for c in outcomes.columns if c.startswith("final ") and c.endswith("/acc")]
    frames = []
    for config, group in context.members.groupby("config", sort=False):
        if len(group) < MIN_MEMBERS or not columns:
            continue
        frame = outcomes.loc[group.member.to_numpy(), columns]
        present = [c for c in columns if frame[c].notna().any()]  # a subset this grid point never has is no outcome
        frame = frame[present].dropna().reset_index()
        if len(frame) < MIN_MEMBERS or not present:
            continue
        fit = SolutionTypes(random_state=context.random_state).fit(frame, present)
        frames.append(pd.DataFrame({"member": fit.labels_.index, "config": config, "cluster": fit.labels_.values,
                                    "outlier": fit.outliers_.values}))
        flagged = list(fit.outliers_[fit.outliers_].index)
        tested = f" (types test p = {fit.p_values_[0]:.2g})" if fit.p_values_ else ""
        if fit.too_small_ is not None:  # a significant p with one type would read as a contradiction
            tested = (f" (a split into {fit.n_clusters_ + 1} has p = {fit.p_values_[-1]:.2g}, but one type would hold "
                      f"{fit.too_small_} member(s), under the {fit.min_cluster_size} a type needs: kept together)")
        result.summary.append(f"solutions [{config}]: {fit.n_clusters_} type(s) among {len(group)} members{tested}"
                              # the test assumes seeds spread normally: under heavy tails its outliers are real
                              # extremes of that spread, not broken runs (docs/analysis.md)
                              + (f"; outliers beyond a normal spread of seeds (generalized ESD): members {flagged}"
                                 if flagged else "; no outliers"))
    if frames:
        result.tables["solutions"] = pd.concat(frames, ignore_index=True)
    return result
