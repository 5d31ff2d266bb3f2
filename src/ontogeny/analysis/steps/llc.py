"""Local learning coefficient step (on request: `ontogeny analyze RUN --what llc`, needs `ontogeny[llc]`): each
member's LLC at every checkpoint with saved weights, estimated by devinterp, with its diagnostics."""

from __future__ import annotations

import numpy as np

from .._common import cannot_rebuild
from ..analyze import Context, StepResult, analysis_step


@analysis_step("llc", writes=("llc", "llc_step_sizes"), on_request=True)
def llc(context: Context) -> StepResult:
    """Tables `llc` (member, step: llc, llc_std, init_loss, levelled, negative, the sampler's settings) and
    `llc_step_sizes` (member, step, lr, llc at each member's last checkpoint); one summary line per grid point."""
    from ..llc import LLCSettings, run_llc  # torch, the models and devinterp: only when asked for

    run, result = context.run, StepResult()
    problem = cannot_rebuild(run, "llc")
    if problem:
        result.summary.append(problem)
        return result
    try:
        import devinterp  # noqa: F401
    except ImportError:
        result.summary.append("llc: skipped (needs devinterp: pip install 'ontogeny[llc]')")
        return result
    settings = LLCSettings.from_options(context.options.get("llc", {}))
    table, checks = run_llc(run, settings, members=list(context.members.member))
    result.tables.update({"llc": table, "llc_step_sizes": checks})
    for config, group in context.members.groupby("config", sort=False):
        rows = table[table.member.isin(group.member)]
        if rows.empty:
            continue
        result.summary.append(_line(config, rows, checks[checks.member.isin(group.member)], settings))
    return result


def _line(config: str, rows, checks, settings) -> str:
    by_step = rows.groupby("step").llc.median()
    line = (f"llc [{config}]: median LLC {by_step.iloc[0]:.3g} at step {by_step.index[0]} -> {by_step.iloc[-1]:.3g} "
            f"at step {by_step.index[-1]}, max {by_step.max():.3g} at step {by_step.idxmax()} (devinterp SGLD: lr "
            f"{settings.lr:g}, n_beta {rows.n_beta_used.iloc[0]:.3g}, localization {settings.localization:g}, "
            f"{settings.chains} chains x {settings.draws} draws)")
    unsettled, negative = int((~rows.levelled).sum()), int(rows.negative.sum())
    if unsettled:
        line += f"; {unsettled} of {len(rows)} estimates' loss traces still moving at the end (more draws)"
    if negative:
        line += f"; {negative} negative (not a local minimum at this step size)"
    by_lr = checks.groupby("lr").llc.median()
    if len(by_lr) > 1:
        spread = by_lr.max() / by_lr.min() if by_lr.min() > 0 else np.inf
        values = " / ".join(f"{v:.3g}" for v in by_lr)
        lrs = " / ".join(f"{lr:.3g}" for lr in by_lr.index)
        verdict = ("stable" if spread <= 1.25 else
                   "depends on the step size: compare values made with the same settings only")
        line += f"; at the last checkpoint, lr {lrs} give {values}: {verdict}"
    return line
