"""Language runs: per-head parse scores (UAS) over training, the loss with the parse and minimal-pair onsets, and the
distance to each strategy (uniform, unigram, bigram, ...) with its stages shaded (tables of the `language` step).

Each function returns None when the run lacks its data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..analysis.language import KL_PREFIX, STRUCTURE_MARGIN, kl_references, uas_matrix
from .figures import PALETTE, STEP_AXIS, base_layout, member_traces, rgba

ONSET_SYMBOLS = ("triangle-up", "diamond")


def uas_figure(scalars: pd.DataFrame) -> go.Figure | None:
    """Heatmap of UAS, heads (rows, layer by layer) x checkpoints: the median over members, and each member through
    a dropdown. The x axis is log10(step + 1) with ticks labelled in steps + 1, since a heatmap's cells are placed
    by their coordinates: on that axis every checkpoint gets a cell as wide as its share of the log range."""
    matrix = uas_matrix(scalars)
    if matrix.empty:
        return None
    steps = matrix.columns.to_numpy(dtype=float)
    x = np.log10(steps + 1)
    labels = ["median", *[m for m in dict.fromkeys(matrix.index.get_level_values("member")) if m != "median"]]
    fig = go.Figure()
    for i, member in enumerate(labels):
        block = matrix.loc[member]  # [heads, steps]
        name = "median over seeds" if member == "median" else f"member {member}"
        fig.add_trace(go.Heatmap(z=block.to_numpy(dtype=float), x=x, y=list(block.index), zmin=0, zmax=1,
                                 colorscale="Blues", colorbar={"title": {"text": "UAS"}}, visible=i == 0, name=name,
                                 customdata=np.tile(steps, (len(block), 1)),
                                 hovertemplate=f"{name}<br>head %{{y}}<br>step %{{customdata:.0f}}<br>"
                                               "UAS %{z:.3f}<extra></extra>"))
    buttons = [{"label": "median over seeds" if member == "median" else f"member {member}", "method": "update",
                "args": [{"visible": [j == i for j in range(len(labels))]}]} for i, member in enumerate(labels)]
    fig.update_layout(updatemenus=[{"buttons": buttons, "direction": "down", "x": 1.0, "xanchor": "right", "y": 1.12,
                                    "yanchor": "bottom", "showactive": True}])
    decades = np.arange(0, int(np.ceil(x.max())) + 1)
    fig.update_xaxes(title_text=STEP_AXIS, tickvals=decades, ticktext=[f"{10 ** d:,}" for d in decades])
    fig.update_yaxes(title_text="attention head", type="category", autorange="reversed")
    return base_layout(fig, "Implicit parse per attention head (UAS)",
                       "share of words whose most-attended word (or the word attending to them most) is their gold "
                       "head (Chen et al. 2024); median over seeds, members in the menu",
                       height=max(300, 120 + 28 * matrix.loc["median"].shape[0]))


def structure_figure(scalars: pd.DataFrame) -> go.Figure | None:
    """The best head's UAS per member over training against the no-syntax baseline (the best fixed offset, dashed)
    and the structure-onset line 0.15 above it (dotted): Chen et al.'s structure onset is where a seed crosses it."""
    best, offset = (scalars[scalars["name"] == name] for name in ("uas/best", "uas/offset"))
    if best.empty or offset.empty:
        return None
    fig = go.Figure(member_traces(best, PALETTE[0], "uas/best", "uas/best"))
    baseline = float(offset["value"].median())
    fig.add_hline(y=baseline, line={"color": "#444", "dash": "dash", "width": 1.5})
    fig.add_hline(y=baseline + STRUCTURE_MARGIN, line={"color": "#444", "dash": "dot", "width": 1.5})
    fig.update_xaxes(type="log", title_text=STEP_AXIS)
    fig.update_yaxes(title_text="UAS of the best head and direction", range=[0, 1])
    return base_layout(fig, "Structure onset: the best head against the best offset baseline",
                       f"dashed: best fixed offset (-3..2) {baseline:.2f}; dotted: {STRUCTURE_MARGIN:.2f} above it",
                       height=400)


def onset_figure(scalars: pd.DataFrame, onsets: pd.DataFrame | None, *, loss: str = "test/loss") -> go.Figure | None:
    """`loss` per member (log-log) with each member's onsets of the two curves of the `language_onsets` table marked
    on its loss curve, and the median onset of each as a dashed vertical line."""
    rows = scalars[scalars["name"] == loss]
    if rows.empty or onsets is None or onsets.empty:
        return None
    fig = go.Figure()
    for trace in member_traces(rows, PALETTE[6], loss, loss):
        fig.add_trace(trace)
    for i, (column, curve) in enumerate((("first_onset", onsets["first"].iloc[0]),
                                         ("second_onset", onsets["second"].iloc[0]))):
        colour = PALETTE[i]
        marks = onsets[["member", column]].dropna()
        at = [_loss_at(rows[rows.member == member], step) for member, step in zip(marks.member, marks[column])]
        fig.add_trace(go.Scatter(x=marks[column] + 1, y=at, mode="markers", name=f"onset of {curve}",
                                 marker={"symbol": ONSET_SYMBOLS[i], "size": 11, "color": colour,
                                         "line": {"color": "black", "width": 1}},
                                 customdata=np.stack([marks.member, marks[column]], -1),
                                 hovertemplate=f"member %{{customdata[0]}}: {curve} onset at step "
                                               "%{customdata[1]:,.0f}<extra></extra>"))
        if len(marks):
            median = float(marks[column].median())
            fig.add_vline(x=median + 1, line={"color": colour, "dash": "dash", "width": 2})
            fig.add_trace(go.Scatter(x=[median + 1], y=[None], mode="lines", line={"color": colour, "dash": "dash"},
                                     name=f"median onset of {curve}: step {median:,.0f}"))  # legend entry
    missing = {curve: int(onsets[column].isna().sum()) for column, curve in
               (("first_onset", onsets["first"].iloc[0]), ("second_onset", onsets["second"].iloc[0]))}
    note = "onset: halfway point of a sigmoid fitted in log step (ontogeny analyze, step `language`)"
    if any(missing.values()):
        note += "; never moved: " + ", ".join(f"{curve} in {n} member(s)" for curve, n in missing.items() if n)
    fig.update_xaxes(type="log", title_text=STEP_AXIS)
    positive = bool((rows.value.dropna() > 0).all())
    fig.update_yaxes(title_text=f"{loss} (cross-entropy, nats)", type="log" if positive else "linear",
                     exponentformat="power")
    return base_layout(fig, f"{loss} per member with the onsets of {' and '.join(missing)}", note, height=460)


def _loss_at(curve: pd.DataFrame, step: float) -> float:
    """The curve's value at `step`, interpolated in log(step + 1) between its checkpoints."""
    curve = curve.sort_values("step")
    return float(np.interp(np.log1p(step), np.log1p(curve.step.to_numpy(dtype=float)), curve.value.to_numpy()))


def strategy_figure(scalars: pd.DataFrame, stage_summary: pd.DataFrame | None = None, *,
                    config: str | None = None) -> go.Figure | None:
    """KL(reference || model) per reference: members faint, the median over members bold; with the
    `language_stage_summary` of one grid point (`config`, default its first), each stage shaded from its median
    boundary to the next one's, in its reference's colour."""
    references = kl_references(scalars)
    if not references:
        return None
    fig = go.Figure()
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(references)}
    for name in references:
        rows = scalars[scalars["name"] == KL_PREFIX + name]
        for trace in member_traces(rows, colours[name], name, name):
            trace.line.color = rgba(colours[name], 0.25)
            fig.add_trace(trace)
        median = rows.groupby("step").value.median()
        fig.add_trace(go.Scatter(x=median.index + 1, y=median.to_numpy(), mode="lines", legendgroup=name,
                                 line={"color": colours[name], "width": 3}, name=f"{name} median",
                                 customdata=median.index,
                                 hovertemplate=f"KL({name} || model), median<br>step %{{customdata}}<br>"
                                               "%{y:.4g}<extra></extra>"))
    note = "KL(reference || model) of the predicted distributions over the probe's tokens; lower is closer"
    if stage_summary is not None and not stage_summary.empty:
        if "config" in stage_summary:
            chosen = config if config is not None else stage_summary.config.iloc[0]
            stage_summary = stage_summary[stage_summary.config == chosen]
        stages = stage_summary.dropna(subset=["median_step"]).sort_values("median_step")
        last = float(scalars.step.max())
        ends = [*stages.median_step.iloc[1:], last]
        for row, end in zip(stages.itertuples(), ends):
            fig.add_vrect(x0=row.median_step + 1, x1=end + 1, line_width=0, layer="below",
                          fillcolor=rgba(colours.get(row.reference, PALETTE[6]), 0.10))
            # an annotation on a log axis takes log10 of its position (a shape takes the value itself)
            fig.add_annotation(x=np.log10(row.median_step + 1), y=1, xref="x", yref="paper", text=row.reference,
                               showarrow=False, xanchor="left", yanchor="top")
        first = stage_summary.iloc[0]
        note += ("<br>shaded: stages from their median boundary over seeds (the closest reference for several "
                 f"checkpoints in a row); order {first.order} in {first.n_in_order}/{first.n_members} members")
    fig.update_xaxes(type="log", title_text=STEP_AXIS)
    positive = bool((scalars[scalars["name"].str.startswith(KL_PREFIX)].value.dropna() > 0).all())
    fig.update_yaxes(title_text="KL(reference || model) (nats)", type="log" if positive else "linear",
                     exponentformat="power")
    return base_layout(fig, "Distance to each strategy over training", note, height=460)
