"""Training-map figure (Hu et al. 2023): the HMM's states as a graph over training time, and each member's states."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .figures import PALETTE, STEP_AXIS, base_layout

# map_states' own columns; the rest are the metrics' state means
STATE_COLUMNS = ("config", "state", "n_members", "share", "final_share", "detour", "delay_steps", "delay_p", "first_step",
                 "mean_dwell_checkpoints", "mean_dwell_steps")
MIN_EDGE = 0.01  # transitions less likely per checkpoint, and never taken by a member, are not drawn


LIGHT = {PALETTE[4]: "black", PALETTE[5]: "black", PALETTE[7]: "black"}  # fills on which white text is unreadable


def state_colour(state: int) -> str:
    return PALETTE[int(state) % len(PALETTE)]


def map_figure(maps: pd.DataFrame, states: pd.DataFrame, transitions: pd.DataFrame,
               config: str | None = None) -> go.Figure:
    """Top: the map, one node per visited state at its median first-visit step (x) and its mean test/acc (y; the
    state number where the run has no test/acc), size by share of members, detours with a red ring; arrows for the
    transitions, labelled with their probability per checkpoint. Bottom: one strip per member, coloured by state.
    Tables as `ontogeny analyze --what maps` writes them; `config` picks a grid point (default the first)."""
    config = maps.config.iloc[0] if config is None else config
    maps, states = maps[maps.config == config], states[states.config == config]
    transitions = transitions[transitions.config == config]
    visited = states[states.n_members > 0].set_index("state")
    y_metric = "test/acc" if "test/acc" in states else None
    node_x = np.log10(visited.first_step + 1.0)
    node_y = visited[y_metric] if y_metric else visited.index.to_series().astype(float)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.6, 0.4], vertical_spacing=0.08,
                        subplot_titles=["map: states at their median first visit; arrows = transitions",
                                        "state of each member at each checkpoint"])
    stay = transitions[transitions.from_state == transitions.to_state].set_index("from_state").probability
    for a, b, p, n in transitions[transitions.from_state != transitions.to_state][
            ["from_state", "to_state", "probability", "n_observed"]].itertuples(index=False):
        if (p < MIN_EDGE and n == 0) or a not in visited.index or b not in visited.index:
            continue
        fig.add_annotation(x=node_x[b], y=node_y[b], ax=node_x[a], ay=node_y[a], xref="x", yref="y", axref="x",
                           ayref="y", showarrow=True, arrowhead=3, arrowsize=1, standoff=14, startstandoff=14,
                           arrowwidth=1 + 4 * p, arrowcolor="rgba(80, 80, 80, 0.7)", text="")
        fig.add_annotation(x=(node_x[a] + node_x[b]) / 2, y=(node_y[a] + node_y[b]) / 2, xref="x", yref="y",
                           text=f"{p:.2f} ({n}x)", showarrow=False, font={"size": 10, "color": "#555"},
                           bgcolor="rgba(255, 255, 255, 0.7)")
    metrics = [c for c in states.columns if c not in STATE_COLUMNS]
    hover = [f"state {s}: {r.n_members} members ({r.share:.0%}); first visit at step {r.first_step:.0f} "
             f"(median)<br>stays with probability {stay.get(s, np.nan):.2f} per checkpoint, "
             f"{r.mean_dwell_steps:.0f} steps per stay on average"
             + (f"<br>DETOUR: its visitors reach the end state {r.delay_steps:+.0f} steps later (p = {r.delay_p:.2g})"
                if r.detour and np.isfinite(r.delay_steps) else "<br>DETOUR" if r.detour else "")
             + "".join(f"<br>{m}: {visited.loc[s, m]:.3g}"
                       for m in metrics)
             for s, r in zip(visited.index, visited.itertuples())]
    fig.add_trace(go.Scatter(
        x=node_x, y=node_y, mode="markers+text", text=[str(s) for s in visited.index], textposition="middle center",
        textfont={"color": [LIGHT.get(state_colour(s), "white") for s in visited.index], "size": 12}, hovertext=hover, hoverinfo="text", showlegend=False,
        marker={"size": 18 + 22 * visited.share.to_numpy(), "color": [state_colour(s) for s in visited.index],
                "line": {"color": np.where(visited.detour, "#D00000", "white"), "width": np.where(
                    visited.detour, 4, 1)}}), row=1, col=1)
    steps = np.sort(maps.step.unique())
    members = np.sort(maps.member.unique())
    grid = maps.pivot_table(index="member", columns="step", values="state").reindex(index=members, columns=steps)
    n_states = int(states.state.max()) + 1
    scale = []
    for s in range(n_states):
        scale += [(s / n_states, state_colour(s)), ((s + 1) / n_states, state_colour(s))]
    fig.add_trace(go.Heatmap(
        z=grid.to_numpy(), x=np.log10(steps + 1.0), y=[str(m) for m in members], zmin=-0.5, zmax=n_states - 0.5,
        colorscale=scale, showscale=True, customdata=np.broadcast_to(steps, grid.shape),
        colorbar={"title": {"text": "state"}, "tickvals": list(range(n_states)), "len": 0.4, "y": 0.2},
        hovertemplate="member %{y}<br>step %{customdata}<br>state %{z}<extra></extra>"), row=2, col=1)
    top = int(np.ceil(np.log10(steps.max() + 1.0))) if len(steps) else 1
    ticks = [v for v in (10.0 ** np.arange(0, top + 1)[:, None] * np.array([1, 2, 5])).ravel()
             if v <= 10 ** top]
    fig.update_xaxes(tickvals=np.log10(ticks), ticktext=[f"{v:g}" for v in ticks])
    fig.update_xaxes(title_text=STEP_AXIS, row=2, col=1)
    fig.update_yaxes(title_text=y_metric + " (state mean)" if y_metric else "state", row=1, col=1)
    fig.update_yaxes(title_text="member", type="category", row=2, col=1)
    end = states.final_share.idxmax() if len(states) else None
    detours = states[states.detour]
    note = (f"{config}: {len(visited)} states (Gaussian HMM, number by BIC); end state "
            f"{states.loc[end, 'state'] if end is not None else '?'}; "
            + (", ".join(f"detour {r.state}: {r.delay_steps:+.0f} steps" for r in detours.itertuples())
               if len(detours) else "no detour") + "; node size: share of members visiting")
    return base_layout(fig, "Training map (ontogeny analyze --what maps)", note,
                       height=520 + 14 * len(members))
