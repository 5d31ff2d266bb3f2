"""Components step (on request: `ontogeny analyze RUN --what components`): each hidden unit's ablation importance
and class selectivity over training, scaffolds and late specialists, and whether early selectivity predicts the
final loss across seeds."""

from __future__ import annotations

from .._common import cannot_rebuild
from ..analyze import Context, StepResult, analysis_step


@analysis_step("components", writes=("components", "component_selectivity", "component_roles"), on_request=True)
def components(context: Context) -> StepResult:
    """Tables `components` (member, step, unit, group: importance), `component_selectivity` and `component_roles`."""
    from ..components import SHARE, early_selectivity_vs_final_loss, run_components, unit_roles

    run, result = context.run, StepResult()
    problem = cannot_rebuild(run, "components", minimum=3)  # a peak and a fall
    if problem:
        result.summary.append(problem)
        return result
    saved = sorted(set(run.checkpoints().step))
    importance, selectivity = run_components(run)
    keep = context.members.member
    importance, selectivity = importance[importance.member.isin(keep)], selectivity[selectivity.member.isin(keep)]
    main = "test" if "test" in set(importance.group) else importance.group.iloc[0]
    roles = unit_roles(importance[importance.group == main])
    result.tables.update(components=importance.reset_index(drop=True),
                         component_selectivity=selectivity.reset_index(drop=True), component_roles=roles)
    for config, group in context.members.groupby("config", sort=False):
        mine = roles[roles.member.isin(group.member)]
        sizes = mine[mine.member == mine.member.iloc[0]].groupby("kind").size()
        what = ", ".join(f"{count} {kind}s" for kind, count in sizes.items())
        per_member = mine.groupby("member").role.value_counts().unstack(fill_value=0)
        result.summary.append(
            f"components [{config}]: {what} x {len(saved)} checkpoints per member, ablated to their mean on {main}; "
            f"scaffolds (peak, then < {SHARE:.0%} of it at the end) per member: median "
            f"{_median(per_member, 'scaffold')}, late specialists: median {_median(per_member, 'late specialist')}")
    final = context.outcomes.get(f"final {main}/loss")
    found = None if final is None else early_selectivity_vs_final_loss(selectivity, final,
                                                                      random_state=context.random_state)
    if found:
        result.summary.append(
            f"early selectivity (mean over units at step {found['step']}) vs final {main}/loss across {found['n']} "
            f"members: Spearman rho {found['rho']:.2f} [{found['low']:.2f}, {found['high']:.2f}] (95% CI)")
    return result


def _median(per_member, role: str) -> str:
    return f"{per_member[role].median():g}" if role in per_member else "0"
