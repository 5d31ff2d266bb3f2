"""Figures over seeds and sweeps: the grokking phase diagram, seed-statistics CIs, variance shares, clusters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .figures import PALETTE, base_layout, rgba

COMPONENT_COLOURS = {"init": PALETTE[0], "data": PALETTE[1], "interaction": PALETTE[2], "residual": "#999999"}


def phase_figure(phase: pd.DataFrame, keys: list[str], threshold: pd.DataFrame) -> go.Figure:
    """Share of seeds that generalize and median grokking delay over the sweep (`keys[0]` on x; a heatmap over
    `keys[1]` when there are two), with each data threshold's estimate and CI from seed_stats marked."""
    x_key = keys[0]
    if len(keys) == 1:
        fig = make_subplots(specs=[[{"secondary_y": True}]])
        fig.add_trace(go.Scatter(x=phase[x_key], y=phase.share, mode="lines+markers", name="share generalized",
                                 line={"color": PALETTE[0], "width": 3}, customdata=phase.n_members,
                                 hovertemplate=f"{x_key}=%{{x}}<br>%{{y:.0%}} of %{{customdata}} seeds "
                                               "generalize<extra></extra>"))
        fig.add_trace(go.Scatter(x=phase[x_key], y=phase.median_delay, mode="lines+markers", name="median delay",
                                 line={"color": PALETTE[1], "dash": "dot"},
                                 hovertemplate=f"{x_key}=%{{x}}<br>median delay %{{y:.0f}} steps<extra></extra>"),
                      secondary_y=True)
        fig.update_yaxes(title_text="share of seeds that generalize", range=[-0.02, 1.02], tickformat=".0%",
                         secondary_y=False)
        fig.update_yaxes(title_text="median delay (steps)", rangemode="tozero", secondary_y=True)
        if phase.median_delay.isna().all():
            fig.add_annotation(text="no member generalized: no delay to show", showarrow=False,
                               xref="x domain", yref="y domain", x=0.5, y=0.5)
        fig.update_xaxes(title_text=x_key)
        height = 470
    else:
        y_key = keys[1]
        share = phase.pivot_table(index=y_key, columns=x_key, values="share")
        delay = phase.pivot_table(index=y_key, columns=x_key, values="median_delay")
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                            subplot_titles=["share of seeds that generalize", "median delay (steps)"])
        fig.add_trace(go.Heatmap(z=share.to_numpy(), x=share.columns.astype(float), y=share.index.astype(str),
                                 zmin=0, zmax=1, colorscale="Blues", colorbar={"x": 0.44, "title": {"text": "share"}},
                                 hovertemplate=f"{x_key}=%{{x}}<br>{y_key}=%{{y}}<br>%{{z:.0%}}<extra></extra>",
                                 name="share"), row=1, col=1)
        fig.add_trace(go.Heatmap(z=delay.to_numpy(), x=delay.columns.astype(float), y=delay.index.astype(str),
                                 colorscale="Oranges", colorbar={"title": {"text": "steps"}},
                                 hovertemplate=f"{x_key}=%{{x}}<br>{y_key}=%{{y}}<br>%{{z:.0f}} steps<extra></extra>",
                                 name="median delay"), row=1, col=2)
        if delay.isna().all().all():
            fig.add_annotation(text="no member generalized: no delay to show", showarrow=False,
                               xref="x2 domain", yref="y2 domain", x=0.5, y=0.5)
        fig.update_xaxes(title_text=x_key)
        fig.update_yaxes(title_text=y_key, type="category")
        height = 500
    finite = np.isfinite(threshold[["estimate", "ci_low", "ci_high"]].to_numpy(float)).all(axis=1)
    for row in threshold[finite].itertuples():
        label = f"data threshold ({row.config}): {row.estimate:.3g} [{row.ci_low:.3g}, {row.ci_high:.3g}]"
        fig.add_vrect(x0=row.ci_low, x1=row.ci_high, fillcolor=rgba(PALETTE[6], 0.08), line_width=0)
        fig.add_vline(x=row.estimate, line={"color": "black", "dash": "dash", "width": 2})
        fig.add_trace(go.Scatter(x=[row.estimate], y=[None], mode="lines", name=label,
                                 line={"color": "black", "dash": "dash"}))  # a legend entry for the line
    fig.update_layout(showlegend=True, legend={"orientation": "h", "y": -0.25})
    note = "generalized: test accuracy reached 99%; delay: generalization step - memorization step"
    if len(keys) > 2:
        note += f"; pooled over {', '.join(keys[2:])}"
    if (~finite).any():  # ontogeny analyze gives inf where no swept fraction makes half the seeds generalize
        missed = threshold[~finite]
        note += "<br>data threshold not reached: " + ", ".join(
            f"{config}: {estimate:g}" for config, estimate in zip(missed.config, missed.estimate))
    return base_layout(fig, "Grokking phase diagram over the sweep", note, height=height)


def seed_stats_figure(stats: pd.DataFrame) -> go.Figure:
    """One panel per quantity: its estimate per grid point with the confidence interval as error bars.
    Rows whose estimate is not finite (a threshold never reached) are named in the subtitle instead."""
    finite = np.isfinite(stats.estimate.to_numpy(float))
    left_out = stats[~finite]
    stats = stats[finite]
    quantities = list(dict.fromkeys(stats.quantity))
    sizes = [stats[stats.quantity == q].config.nunique() for q in quantities]  # rows per panel
    fig = make_subplots(rows=len(quantities), cols=1, subplot_titles=quantities, row_heights=sizes,
                        vertical_spacing=min(0.3, 0.6 / len(quantities)))
    for i, quantity in enumerate(quantities, start=1):
        rows = stats[stats.quantity == quantity]
        fig.add_trace(go.Scatter(
            x=rows.estimate, y=rows.config.astype(str), mode="markers", marker={"size": 9, "color": PALETTE[0]},
            error_x={"type": "data", "symmetric": False, "array": rows.ci_high - rows.estimate,
                     "arrayminus": rows.estimate - rows.ci_low, "color": PALETTE[0]},
            customdata=np.stack([rows.ci_low, rows.ci_high, rows.n_members], -1), name=quantity, showlegend=False,
            hovertemplate="%{y}<br>%{x:.4g} [%{customdata[0]:.4g}, %{customdata[1]:.4g}]<br>"
                          "%{customdata[2]} members<extra></extra>"), row=i, col=1)
    fig.update_xaxes(title_text="estimate (dot) and confidence interval (bar); steps for step quantities",
                     row=len(quantities), col=1)
    fig.update_yaxes(type="category", automargin=True)
    note = "from ontogeny analyze; one row per grid point ('all': every member)"
    if len(left_out):
        note += "<br>not finite: " + ", ".join(f"{r.quantity} [{r.config}] = {r.estimate:g}"
                                               for r in left_out.itertuples())
    return base_layout(fig, "Seed statistics: headline quantities with confidence intervals", note,
                       height=140 + 90 * len(quantities) + 28 * sum(sizes))


def variance_figure(variance: pd.DataFrame) -> go.Figure:
    """Grouped bars: each quantity's variance share per component (init, data, interaction, residual), with CIs."""
    fig = go.Figure()
    for component in dict.fromkeys([*COMPONENT_COLOURS, *variance.component]):
        rows = variance[variance.component == component]
        if rows.empty:
            continue
        fig.add_trace(go.Bar(x=rows.quantity, y=rows.share, name=component,
                             marker={"color": COMPONENT_COLOURS.get(component, PALETTE[4])},
                             error_y={"type": "data", "symmetric": False, "array": rows.ci_high - rows.share,
                                      "arrayminus": rows.share - rows.ci_low},
                             hovertemplate=f"{component}: %{{y:.0%}}<extra>%{{x}}</extra>"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="share of variance across members", tickformat=".0%")
    fig.update_xaxes(title_text="quantity")
    return base_layout(fig, "Variance decomposition: init seed vs data order",
                       "share of each quantity's variance explained by each source, with CIs", height=420)


def solutions_figure(solutions: pd.DataFrame, table: pd.DataFrame) -> go.Figure:
    """Each member's solution cluster (outliers as crosses), hover with seeds and final test accuracy."""
    frame = solutions.merge(table, on="member", how="left")
    fig = go.Figure()
    for i, (cluster, rows) in enumerate(frame.groupby("cluster", sort=True)):
        fig.add_trace(go.Scatter(
            x=rows.member, y=rows.cluster.astype(str), mode="markers", name=f"cluster {cluster}",
            marker={"size": 12, "color": PALETTE[i % len(PALETTE)],
                    "symbol": np.where(rows.outlier.astype(bool), "x", "circle")},
            customdata=np.stack([rows.init_seed, rows.data_seed, rows["final test/acc"],
                                 np.where(rows.outlier.astype(bool), "outlier", "")], -1),
            hovertemplate="member %{x} (init %{customdata[0]}, data %{customdata[1]}) %{customdata[3]}<br>"
                          "final test accuracy %{customdata[2]:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="member")
    fig.update_yaxes(title_text="solution cluster", type="category")
    return base_layout(fig, "Solution clusters", f"{frame.outlier.astype(bool).sum()} outlier members (crosses)",
                       height=300)
