"""Sharpness step (on request: `ontogeny analyze RUN --what sharpness`): each member's top Hessian eigenvalue at
every checkpoint with saved weights, against 2 / lr under SGD (the edge of stability)."""

from __future__ import annotations

import numpy as np

from .._common import cannot_rebuild
from ..analyze import Context, StepResult, analysis_step


@analysis_step("sharpness", writes=("sharpness",), on_request=True)
def sharpness(context: Context) -> StepResult:
    """Table `sharpness` (member, step: sharpness, preconditioned_sharpness, lr, edge, converged) and one summary
    line per grid point."""
    from ..sharpness import run_sharpness  # torch and the models: only when asked for

    run, result = context.run, StepResult()
    problem = cannot_rebuild(run, "sharpness")
    if problem:
        result.summary.append(problem)
        return result
    table = run_sharpness(run, random_state=context.random_state)
    table = table[table.member.isin(context.members.member)].reset_index(drop=True)
    result.tables["sharpness"] = table
    for config, group in context.members.groupby("config", sort=False):
        rows = table[table.member.isin(group.member)]
        if rows.empty:
            continue
        by_step = rows.groupby("step").sharpness.median()
        line = (f"sharpness [{config}]: median top Hessian eigenvalue {by_step.iloc[0]:.3g} at step "
                f"{by_step.index[0]} -> {by_step.iloc[-1]:.3g} at step {by_step.index[-1]}, max "
                f"{by_step.max():.3g} at step {by_step.idxmax()}")
        last = rows[rows.step == rows.step.max()]
        measure = "sharpness" if last.preconditioned_sharpness.isna().all() else "preconditioned_sharpness"
        if last[measure].notna().all() and last.edge.notna().all():
            at_edge = int((last[measure] >= 0.9 * last.edge).sum())
            what = "2/lr" if measure == "sharpness" else "(2 + 2 beta1) / ((1 - beta1) lr), preconditioned,"
            line += f"; at the end {at_edge}/{len(last)} members within 10% of {what} = {np.median(last.edge):.3g}"
        unsettled = int((~rows.converged).sum())
        if unsettled:
            line += f" ({unsettled} of {len(rows)} estimates not converged; see the `converged` column)"
        result.summary.append(line)
    return result
