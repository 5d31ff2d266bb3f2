"""Data-intervention step: on a run whose sweep gives members a `task.intervention` (drop, weight or curriculum of
a training subset) beside the baseline "", each arm against the baseline, paired by seed, per subset."""

from __future__ import annotations

from ..analyze import Context, StepResult, analysis_step
from ..compare import ALPHA, INTERVENTION, intervention_effects

SHOWN = 8  # summary lines per arm: the largest effects shown; the table has them all


@analysis_step("interventions", writes=("interventions",), scalars=("test/acc",))
def interventions(context: Context) -> StepResult:
    """Table `interventions` (where, arm, then analysis.compare.COLUMNS: B = the arm, A = the baseline) and, per arm,
    the verdicts that claim a difference, largest first."""
    result = StepResult()
    members = context.members
    if INTERVENTION not in members or set(members[INTERVENTION]) == {""} or "" not in set(members[INTERVENTION]):
        return result
    table = intervention_effects(context.scalars, members, random_state=context.random_state)
    result.tables["interventions"] = table
    for (where, arm), rows in table.groupby(["where", "arm"], sort=False):
        shown = rows[((rows.low > 0) | (rows.high < 0)) & (rows.p_value < ALPHA)]  # what the verdicts claim
        shown = shown.reindex(shown.difference.abs().sort_values(ascending=False).index)
        prefix = f"intervention{f' [{where}]' if where else ''}"
        result.summary.append(f"{prefix}: {arm!r} vs the baseline: {len(shown)}/{len(rows)} comparisons show a "
                              f"difference (95% CI excludes 0 and exact p < {ALPHA:g}; at most about {ALPHA * len(rows):.1f} "
                              "would by chance alone)")
        result.summary += [f"{prefix}: {row.verdict}" for row in shown.head(SHOWN).itertuples()]
    return result
