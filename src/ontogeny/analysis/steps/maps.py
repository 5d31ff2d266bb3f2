"""Training-map step (Hu et al. 2023): one Gaussian HMM per grid point over its seeds' metric trajectories, the
state each member is in at each checkpoint, the transitions between states, and the detours only some seeds take.

Runs by default: it reads only the scalars, and took 5 s of CPU on the sparse-parity recipe (8 seeds) and 10 s on
grokking-threshold (6 grid points, one HMM each), the command's start-up and hmmlearn's import included. `weight_maps`
(on request) rebuilds every checkpoint's models for Hu et al.'s weight statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._common import cannot_rebuild
from ..analyze import Context, StepResult, analysis_step, id_list


@analysis_step("maps", writes=("maps", "map_states", "map_transitions"))
def maps(context: Context) -> StepResult:
    """Tables `maps` (config, member, step: state), `map_states` (config, state: members visiting, share ending
    there, detour, delay and its permutation p, first-visit step, mean stay, mean of each metric) and
    `map_transitions` (config, from_state, to_state: probability per checkpoint, times members took it)."""
    return _fit_maps(context, context.scalars, "")


@analysis_step("weight_maps", on_request=True,
               writes=("weight_statistics", "weight_maps", "weight_map_states", "weight_map_transitions"))
def weight_maps(context: Context) -> StepResult:
    """Hu et al.'s own features: table `weight_statistics` (member, step, name, value) at every checkpoint with saved
    weights, and the maps fitted on them (`weight_maps`, `weight_map_states`, `weight_map_transitions`, as `maps`)."""
    from ..weight_stats import run_weight_statistics  # torch and the models: only when asked for

    problem = cannot_rebuild(context.run, "weight_maps", minimum=3)
    if problem:
        return StepResult(summary=[problem])
    statistics = run_weight_statistics(context.run)
    statistics = statistics[statistics.member.isin(context.members.member)].reset_index(drop=True)
    result = _fit_maps(context, statistics, "weight_")
    result.tables["weight_statistics"] = statistics
    return result


def _fit_maps(context: Context, scalars: pd.DataFrame, prefix: str) -> StepResult:
    """One TrainingMap per grid point on `scalars`; tables named `prefix` + maps, map_states, map_transitions."""
    from ..maps import TrainingMap  # hmmlearn: only when the step runs

    result, parts = StepResult(), {"maps": [], "map_states": [], "map_transitions": []}
    for config, group in context.members.groupby("config", sort=False):
        rows = scalars[scalars.member.isin(group.member)]
        try:
            fit = TrainingMap(random_state=context.random_state).fit(rows)
        except ValueError as err:  # e.g. no metric that varies, or too few checkpoints
            result.summary.append(f"{prefix}maps [{config}]: skipped ({err})")
            continue
        parts["maps"].append(fit.states_.assign(config=config))
        parts["map_states"].append(fit.state_table_.assign(config=config))
        parts["map_transitions"].append(fit.transitions_.assign(config=config))
        result.summary.extend(_describe(config, fit, len(group), prefix))
    for name, frames in parts.items():
        if frames:
            table = pd.concat(frames, ignore_index=True)
            result.tables[prefix + name] = table[["config", *[c for c in table.columns if c != "config"]]]
    return result


def _describe(config: str, fit, n_members: int, prefix: str = "") -> list[str]:
    """One line for the map (states, the common path, the end state) and one per detour."""
    states, tried = fit.state_table_, fit.bic_.dropna()
    line = (f"{prefix}maps [{config}]: {fit.n_states_} states by {'held-out ' if fit.held_out_ else ''}BIC "
            f"({int(tried.index.min())}-{int(tried.index.max())} tried")
    if fit.n_states_ == tried.index.max() and fit.n_states_ > 1:
        line += "; lowest at the largest number tried, so more states may fit better"
    line += ")"
    paths = fit.paths().value_counts()
    if paths.iloc[0] > 1 or len(paths) == 1:
        line += f"; {paths.iloc[0]}/{paths.sum()} members go " + " -> ".join(map(str, paths.index[0]))
    else:
        line += f"; no two of the {paths.sum()} members take the same sequence of states"
    arrived = fit.arrival_.dropna()
    line += (f"; end state {fit.end_state_} reached by {len(arrived)}/{len(fit.arrival_)} members"
             + (f" at median step {arrived.median():.0f}" if len(arrived) else ""))
    detours = states[states.detour]
    line += f"; {len(detours) or 'no'} detour state{'s' if len(detours) != 1 else ''}"
    lines = [line]
    left_out = n_members - len(fit.arrival_)
    if left_out:
        lines.append(f"{prefix}maps [{config}]: {left_out} member(s) with fewer than 2 complete checkpoints left out")
    if len(fit.fit_members_) < len(fit.arrival_):
        lines.append(f"{prefix}maps [{config}]: HMM fitted to {len(fit.fit_members_)} randomly chosen members of "
                     f"{len(fit.arrival_)} (max_fit_members); every member decoded")
    for row in detours.itertuples():
        visitors = fit.states_[fit.states_.state == row.state].member.unique()
        text = (f"{prefix}maps [{config}]: detour state {row.state} visited by {row.n_members}/"
                f"{len(fit.arrival_)} members ({id_list(visitors)}), {row.mean_dwell_steps:.0f} steps per stay on "
                "average")
        if np.isfinite(row.delay_steps):
            visited = fit.arrival_.index.isin(visitors)
            text += (f"; they reach end state {fit.end_state_} at median step {fit.arrival_[visited].median():.0f} "
                     f"vs {fit.arrival_[~visited].median():.0f} without it ({row.delay_steps:+.0f} steps, "
                     f"rank-sum permutation p = {row.delay_p:.2g})")
        lines.append(text)
    return lines
