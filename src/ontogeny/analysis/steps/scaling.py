"""Scaling step: on a run whose grid varies the width or `task.n_train` (the scaling-axes recipe), the final test loss
per grid point, power-law fits along both axes, and what an epoch over repeated data is worth against fresh data."""

from __future__ import annotations

import numpy as np

from ..analyze import Context, StepResult, analysis_step
from ..scaling import (
    LOSS,
    NEAR_FRESH_EPOCHS,
    NEAR_FRESH_WORTH,
    R_STAR_GRID,
    grid_points,
    member_outcomes,
    power_law_fits,
    repeat_members,
    repeat_table,
    scaling_axes,
)


@analysis_step("scaling", writes=("scaling_points", "scaling_fits", "scaling_repeats"), scalars=(LOSS,))
def scaling(context: Context) -> StepResult:
    """Tables `scaling_points` (grid point: final test loss and accuracy with CIs over seeds), `scaling_fits`
    (power laws: alpha with its CI) and `scaling_repeats` (repeated grid point: effective data and epochs, worth per
    epoch, Muennighoff's R* per width); one line per grid point, per fit and per width. Says nothing on other runs."""
    result = StepResult()
    width_key, problem = scaling_axes(context.members)
    if problem:
        result.summary.append(problem)
    if width_key is None:
        return result
    state = context.random_state
    outcomes = member_outcomes(context.scalars, context.members, width_key)
    points = grid_points(outcomes, random_state=state)
    fits = power_law_fits(outcomes, random_state=state)
    repeats = repeat_table(repeat_members(context.scalars, outcomes), random_state=state)
    result.tables.update(scaling_points=points, scaling_fits=fits, scaling_repeats=repeats)
    if context.run.has_spec and outcomes["last_step"].min() < context.run.spec.steps:
        result.summary.append(f"scaling: run unfinished, members analyzed at their last recorded step (from "
                              f"{outcomes['last_step'].min()} of {context.run.spec.steps})")
    for row in points.itertuples():
        data = f"n_train={row.n_train:,}" if row.n_train > 0 else f"fresh data ({row.samples_seen:,.0f} samples)"
        line = f"scaling [width={row.width}, {data}]: final test loss {_ci(row.loss, row.loss_low, row.loss_high)}"
        if np.isfinite(row.acc):
            line += f", test acc {_ci(row.acc, row.acc_low, row.acc_high, '.3f')}"
        result.summary.append(line + f" (median, 95% CI over {row.n_members} seeds)")
    for row in fits.itertuples():
        x, at = ("width", f"n_train {row.at:,}" if row.at > 0 else "fresh data") if row.x == "width" else (
            "unique examples", f"width {row.at}")
        if not np.isfinite(row.alpha):
            result.summary.append(f"scaling fit: loss vs {x} at {at}: no fit (fewer than 2 grid points with loss > 0)")
            continue
        exponent = _ci(-row.alpha, -row.alpha_high, -row.alpha_low, ".2f")
        result.summary.append(f"scaling fit: loss ~ {x}^{exponent} at {at} ({row.n_points} grid points, "
                              f"R^2 {row.r_squared:.2f}; 95% CI from refits on seed resamples)")
    if repeats.empty:
        if (outcomes["n_train"] > 0).any():
            result.summary.append("scaling repeats: no fresh-data members (task.n_train = 0) of the same width to "
                                  "compare the repeated ones with")
        return result
    for width, rows in repeats.groupby("width", sort=True):
        result.summary.append(_repeat_line(width, rows))
    return result


def _ci(value: float, low: float, high: float, spec: str = ".3g") -> str:
    if not np.isfinite(low):
        return f"{value:{spec}}"
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


def _repeat_line(width, rows) -> str:
    """'width 128: 4 epochs over 4,000 examples worth 3.6 [3.1, 3.9] epochs of fresh data (w = 0.87 [...]); ...;
    R* = ...: ...'."""
    parts = []
    for row in rows.sort_values("epochs").itertuples():
        censored = row.n_censored * 2 >= row.n_members  # the median is then a lower bound
        bound = ">= " if censored else ""
        part = (f"{row.epochs:.3g} epochs over {row.n_train:,} examples worth {bound}"
                f"{_ci(row.effective_epochs, row.effective_epochs_low, row.effective_epochs_high)} epochs of fresh "
                "data")
        if np.isfinite(row.worth):
            part += f" (w = {bound}{_ci(row.worth, row.worth_low, row.worth_high, '.2f')})"
        if row.n_censored:
            part += f" ({row.n_censored}/{row.n_members} seeds never matched by fresh data: censored)"
        if row.n_paired < row.n_members:
            part += f" ({row.n_members - row.n_paired} seeds without a fresh twin: the fresh median curve)"
        parts.append(part)
    line = f"scaling repeats, width {width}: " + "; ".join(parts)
    first = rows.iloc[0]
    if np.isfinite(first.r_star):
        at_top = first.r_star >= R_STAR_GRID[-1]
        r_star = f">= {R_STAR_GRID[-1]:g}" if at_top else _ci(first.r_star, first.r_star_low, first.r_star_high)
        fitted = rows[(rows.repetitions > 0) & (rows.effective_epochs > 0)]
        basis = f"{len(fitted)} grid point{'s' if len(fitted) > 1 else ''}, rms log error {first.r_star_log_rms:.2f}"
        if fitted.epochs.min() > NEAR_FRESH_EPOCHS:
            basis += f", the fewest {fitted.epochs.min():.3g} epochs: extrapolated"
        line += (f". Muennighoff fit ({basis}) R* = {r_star}, which puts each repeated epoch up to "
                 f"{NEAR_FRESH_EPOCHS} epochs at w = "
                 f"{_ci(first.worth_at_4, first.worth_at_4_low, first.worth_at_4_high, '.2f')}")
    few = rows[(rows.epochs > 1) & (rows.epochs <= NEAR_FRESH_EPOCHS * (1 + 1e-9)) & np.isfinite(rows.worth)]
    if len(few):  # measured beats fitted: the form has w -> 1 as repetitions -> 0 whatever the data say
        row = few.sort_values("epochs").iloc[-1]
        line += (f". Up to {NEAR_FRESH_EPOCHS} epochs, repetition is worth "
                 f"{_verdict(row.worth, row.worth_low, row.worth_high)}, measured at {row.epochs:.3g} epochs")
    elif np.isfinite(first.r_star):
        line += (f". Up to {NEAR_FRESH_EPOCHS} epochs (no grid point there; from the fit), repetition is worth "
                 f"{_verdict(first.worth_at_4, first.worth_at_4_low, first.worth_at_4_high)}")
    return line


def _verdict(worth: float, low: float, high: float) -> str:
    """Whether repetition up to NEAR_FRESH_EPOCHS is worth almost as much as fresh data, by the worth's CI."""
    low, high = (low, high) if np.isfinite(low) else (worth, worth)
    if low >= NEAR_FRESH_WORTH:
        return f"almost as much as fresh data (w's 95% CI above {NEAR_FRESH_WORTH})"
    if high < NEAR_FRESH_WORTH:
        return f"less than fresh data (w's 95% CI below {NEAR_FRESH_WORTH})"
    return f"as much as fresh data or less: undecided (w's 95% CI spans {NEAR_FRESH_WORTH})"
