"""Scaling axes (tables of the `scaling` step): final test loss against unique examples per width with the power-law
fits, and the effective epochs of repeated data against the epochs trained, with Muennighoff et al.'s curve.

Each function returns None when the run lacks its data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..analysis.scaling import muennighoff_epochs
from .figures import PALETTE, base_layout, rgba


def _error(rows: pd.DataFrame, value: str) -> dict:
    """Asymmetric error bars from `value`_low / `value`_high (none where the CI is missing)."""
    return {"type": "data", "symmetric": False, "array": (rows[f"{value}_high"] - rows[value]).fillna(0),
            "arrayminus": (rows[value] - rows[f"{value}_low"]).fillna(0)}


def loss_data_figure(points: pd.DataFrame | None, fits: pd.DataFrame | None = None) -> go.Figure | None:
    """Median final test loss against unique examples (n_train), one colour per width, log-log, with the 95% CI
    over seeds as a band and the fitted power law L = a x^-alpha dashed (from `scaling_fits`); each width's
    fresh-data point (n_train = 0) drawn hollow at the samples it saw. Grid points whose median loss is 0 (a hinge
    loss can reach it) have no place on the log axis: the subtitle names them."""
    if points is None or points.empty:
        return None
    fig = go.Figure()
    at_zero = points[~(points.loss > 0)]
    points = points[points.loss > 0]
    for i, (width, rows) in enumerate(points.groupby("width", sort=True)):
        colour, group = PALETTE[i % len(PALETTE)], f"width {width}"
        repeated, fresh = rows[rows.n_train > 0].sort_values("n_train"), rows[rows.n_train == 0]
        if len(repeated) > 1 and (repeated.loss_low > 0).all():  # a band needs every low end on the log axis
            x = repeated.n_train.to_numpy(dtype=float)
            fig.add_trace(go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[repeated.loss_high, repeated.loss_low[::-1]],
                                     fill="toself", fillcolor=rgba(colour, 0.18), line={"width": 0},
                                     hoverinfo="skip", legendgroup=group, showlegend=False))
        fig.add_trace(go.Scatter(
            x=repeated.n_train, y=repeated.loss, mode="lines+markers", name=group, legendgroup=group,
            line={"color": colour, "width": 2.5}, error_y=_error(repeated, "loss") | {"color": colour},
            customdata=np.stack([repeated.epochs, repeated.loss_low, repeated.loss_high, repeated.n_members], -1),
            hovertemplate=f"{group}<br>n_train %{{x:,}} (%{{customdata[0]:.3g}} epochs)<br>test loss %{{y:.3g}} "
                          "[%{customdata[1]:.3g}, %{customdata[2]:.3g}]<br>%{customdata[3]} seeds<extra></extra>"))
        if len(fresh):
            fig.add_trace(go.Scatter(
                x=fresh.unique_examples, y=fresh.loss, mode="markers", name=f"{group}: fresh data",
                legendgroup=group, marker={"color": "white", "size": 11, "line": {"color": colour, "width": 2.5}},
                error_y=_error(fresh, "loss") | {"color": colour},
                hovertemplate=f"{group}, fresh data<br>%{{x:,.0f}} samples seen<br>test loss %{{y:.3g}}"
                              "<extra></extra>"))
        fit = (fits[(fits.fit == "loss vs unique examples") & (fits["at"] == width)] if fits is not None
               else pd.DataFrame())
        if len(fit) and np.isfinite(fit.alpha.iloc[0]) and len(repeated):
            row = fit.iloc[0]
            x = np.geomspace(repeated.n_train.min(), repeated.n_train.max(), 50)
            fig.add_trace(go.Scatter(x=x, y=row.a * x ** -row.alpha, mode="lines", legendgroup=group,
                                     line={"color": colour, "dash": "dash", "width": 1.5},
                                     name=f"{group}: fit x^{-row.alpha:.2f} [{-row.alpha_high:.2f}, "
                                          f"{-row.alpha_low:.2f}]", hoverinfo="skip"))
    fig.update_xaxes(type="log", title_text="unique training examples (task.n_train; hollow: fresh data, the "
                     "samples seen)", exponentformat="power")
    fig.update_yaxes(type="log", title_text="final test loss (median over seeds)", exponentformat="power")
    note = ("same steps and batch size everywhere (same compute); bars and bands: 95% CI over seeds "
            "(Multi-Bootstrap);<br>dashed: L = a x^-alpha fitted in log-log on the medians")
    if len(at_zero):
        note += "; median loss 0, not drawn: " + ", ".join(
            f"width {r.width} " + (f"n_train {r.n_train:,}" if r.n_train > 0 else "fresh data")
            for r in at_zero.itertuples())
    return base_layout(fig, "Final test loss vs unique examples, per width", note, height=520)


def effective_epochs_figure(repeats: pd.DataFrame | None) -> go.Figure | None:
    """Effective epochs D' / n_train (the fresh data the repeated run's final loss is worth) against the epochs
    trained, one colour per width, log-log, with 95% CIs over seeds, censored points (a lower bound) as upward
    triangles, the line y = x (every epoch as good as fresh data) and each width's fitted Muennighoff curve."""
    if repeats is None or repeats.empty:
        return None
    fig = go.Figure()
    top = float(repeats.epochs.max())
    x = np.geomspace(1, max(top, 1.01), 100)
    fig.add_trace(go.Scatter(x=x, y=x, mode="lines", name="y = x: repeated epochs as good as fresh data",
                             line={"color": "#555", "dash": "dot"}, hoverinfo="skip"))
    for i, (width, rows) in enumerate(repeats.groupby("width", sort=True)):
        colour, group = PALETTE[i % len(PALETTE)], f"width {width}"
        rows = rows.sort_values("epochs")
        censored = rows.n_censored * 2 >= rows.n_members
        for part, symbol, label in ((rows[~censored], "circle", group), (rows[censored], "triangle-up",
                                                                         f"{group}: censored (lower bound)")):
            if part.empty:
                continue
            fig.add_trace(go.Scatter(
                x=part.epochs, y=part.effective_epochs, mode="markers", name=label, legendgroup=group,
                marker={"color": colour, "size": 10, "symbol": symbol},
                error_y=_error(part, "effective_epochs") | {"color": colour},
                customdata=np.stack([part.n_train, part.worth, part.n_censored, part.n_members], -1),
                hovertemplate=f"{group}<br>%{{x:.3g}} epochs over %{{customdata[0]:,}} examples<br>worth "
                              "%{y:.3g} epochs of fresh data<br>w = %{customdata[1]:.2f} per repeated epoch<br>"
                              "%{customdata[2]} of %{customdata[3]} seeds censored<extra></extra>"))
        r_star = rows.r_star.iloc[0]
        if np.isfinite(r_star):
            fig.add_trace(go.Scatter(x=x, y=muennighoff_epochs(x - 1, r_star), mode="lines", legendgroup=group,
                                     line={"color": colour, "width": 2},
                                     name=f"{group}: Muennighoff fit, R* = {r_star:.3g}", hoverinfo="skip"))
    fig.update_xaxes(type="log", title_text="epochs trained over n_train examples (E = steps x batch / n_train)")
    fig.update_yaxes(type="log", title_text="effective epochs D' / n_train (fresh data worth the same loss)")
    return base_layout(fig, "What an epoch of repeated data is worth",
                       "D': fresh samples at which the fresh-data run of the same width and seed first reaches the "
                       "repeated run's final test loss;<br>curve: D' = U + U R* (1 - exp(-(E - 1) / R*)) (Muennighoff "
                       "et al. 2023); bars: 95% CI over seeds", height=520)
