"""Curve figures: train/test curves with the seed spread, norm trajectories, two runs compared.

Every step axis is logarithmic and plots `step + 1`, so the initial model (step 0) sits at 1; the axis title says so
and the hover text gives the true step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .data import even_rows

# Okabe & Ito's colour-blind safe palette.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
SPLIT_COLOURS = {"train": PALETTE[0], "test": PALETTE[1]}
STEP_AXIS = "training step + 1 (log scale; step 0 at 1)"
MAX_PANELS = 12  # grid points drawn as curve panels; more are named in the subtitle and left out
MAX_MEMBER_LINES = 100  # member lines per group of a figure; a 10,000-member run's page stays a few MB


def rgba(colour: str, alpha: float) -> str:
    """'#RRGGBB' -> 'rgba(r, g, b, alpha)'."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def titled(title: str, subtitle: str = "") -> dict:
    """A plotly title dict with an optional smaller subtitle line."""
    text = f"{title}<br><sup>{subtitle}</sup>" if subtitle else title
    return {"text": text, "x": 0.01, "xanchor": "left"}


def base_layout(fig: go.Figure, title: str, subtitle: str = "", *, height: int = 420) -> go.Figure:
    """Apply the report's common look: white template, title, legend on the right, fixed height."""
    fig.update_layout(template="plotly_white", title=titled(title, subtitle), height=height,
                      margin={"l": 60, "r": 20, "t": 60 + 20 * (subtitle.count("<br>") + 1 if subtitle else 0),
                              "b": 55},
                      legend={"groupclick": "togglegroup"}, hovermode="closest")
    return fig


def band_traces(steps, low, high, middle, colour: str, name: str, group: str, *, show_legend: bool = True,
                band_name: str = "min-max") -> list[go.Scatter]:
    """Return [band, median line]: a shaded region between `low` and `high` and a bold line at `middle` [S]."""
    x = np.asarray(steps, dtype=float) + 1
    band = go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([high, low[::-1]]), fill="toself",
                      fillcolor=rgba(colour, 0.18), line={"width": 0}, hoverinfo="skip", legendgroup=group,
                      name=f"{name} {band_name} over seeds", showlegend=show_legend)
    line = go.Scatter(x=x, y=middle, mode="lines", line={"color": colour, "width": 3}, legendgroup=group,
                      name=f"{name} median", showlegend=show_legend, customdata=np.asarray(steps),
                      hovertemplate=f"{name} median<br>step %{{customdata}}<br>%{{y:.4g}}<extra></extra>")
    return [band, line]


def member_traces(frame: pd.DataFrame, colour: str, name: str, group: str, *, show_legend: bool = True,
                  suffix: str = " per member", total: int | None = None) -> list[go.Scatter]:
    """Thin lines, one per member of `frame` (member, step, value), as one trace with gaps between members (a trace
    per member costs plotly ~1 ms each and bloats the page); diverged members stop where they diverged. Past
    MAX_MEMBER_LINES members, that many spread evenly over the member ids are drawn and the legend says so (the
    median and band beside them still cover every member). `total`: the group's members when `frame` holds only
    those picked to be drawn."""
    members = np.sort(frame.member.unique())
    if len(members) > MAX_MEMBER_LINES:  # the rule data.drawn_members follows for a run's curves
        members = members[even_rows(len(members), MAX_MEMBER_LINES)]
        total, frame = total or len(frame.member.unique()), frame[frame.member.isin(members)]
    if total is not None and total > len(members):
        suffix = f"{suffix} ({len(members)} of {total:,} drawn)"
    if frame.empty:
        return []
    frame = frame.sort_values(["member", "step"], kind="stable")
    values, labels = frame.value.to_numpy(dtype=float), frame.member.to_numpy()
    breaks = np.flatnonzero(labels[1:] != labels[:-1]) + 1  # where one member's line ends and the next begins
    x = np.insert((frame.step.to_numpy() + 1).astype(float), breaks, np.nan)
    y = np.insert(np.where(np.isfinite(values), values, np.nan), breaks, np.nan)
    numeric = np.issubdtype(labels.dtype, np.number)
    if numeric:  # float32 halves the page (plotly writes numpy arrays as typed binary); exact below 2^24
        custom = np.stack([np.insert(labels.astype(float), breaks, np.nan), x - 1], axis=1).astype(np.float32)
    else:  # labels such as "3 neuron 0.12" (one line per component)
        custom = np.stack([np.insert(labels.astype(object), breaks, ""), x - 1], axis=1)
    return [go.Scatter(x=x.astype(np.float32), y=y.astype(np.float32), mode="lines",
                       line={"color": rgba(colour, 0.45), "width": 1}, legendgroup=group,
                       name=f"{name}{suffix}", showlegend=show_legend, connectgaps=False, customdata=custom,
                       hovertemplate=f"{name} member %{{customdata[0]{':.0f' if numeric else ''}}}<br>"
                                     "step %{customdata[1]:.0f}<br>%{y:.4g}<extra></extra>")]


def curve_figure(frame: pd.DataFrame, spread: pd.DataFrame, metric: str, configs: pd.Series,
                 transitions: pd.DataFrame | None, note: str) -> go.Figure:
    """Train and test `metric` ("acc" or "loss") per member, one panel per grid point (`configs`: member ->
    label), with the median and min-max band over that grid point's seeds and transition onsets marked."""
    labels = list(dict.fromkeys(configs.sort_index()))[:MAX_PANELS]
    n_cols = min(3, int(np.ceil(np.sqrt(len(labels)))))
    n_rows = -(-len(labels) // n_cols)
    fig = make_subplots(rows=n_rows, cols=n_cols, shared_yaxes=True, subplot_titles=labels if len(labels) > 1
                        else None, horizontal_spacing=0.04, vertical_spacing=0.12 if n_rows > 1 else 0.1)
    splits = dict.fromkeys(n.split("/")[0] for n in frame.name.unique() if n.endswith(f"/{metric}"))
    by_curve = {name: rows for name, rows in frame[frame.name.isin([f"{s}/{metric}" for s in splits])]
                .assign(config=frame.member.map(configs)).groupby(["config", "name"], sort=False)}  # one pass
    for panel, label in enumerate(labels):
        row, col = panel // n_cols + 1, panel % n_cols + 1
        members = configs.index[configs == label]
        for index, split in enumerate(sorted(splits, key=lambda s: (s not in SPLIT_COLOURS, s))):
            name = f"{split}/{metric}"
            rows = by_curve.get((label, name))
            if rows is None or rows.empty:
                continue
            colour, show = SPLIT_COLOURS.get(split, PALETTE[(2 + index) % len(PALETTE)]), panel == 0
            for trace in member_traces(rows, colour, name, name, show_legend=show, total=len(members)):
                fig.add_trace(trace, row=row, col=col)
            band = spread[(spread.name == name) & (spread.config == label)]
            for trace in band_traces(band.step, band["min"], band["max"], band["median"], colour, name, name,
                                     show_legend=show):
                fig.add_trace(trace, row=row, col=col)
            if transitions is not None:
                marks = transitions[(transitions.curve == name) & transitions.member.isin(members)]
                if not marks.empty:
                    fig.add_trace(go.Scatter(
                        x=marks.onset_step + 1, y=marks.before, mode="markers", legendgroup=f"{name} transitions",
                        marker={"symbol": "triangle-right", "size": 10, "color": colour,
                                "line": {"color": "black", "width": 1}},
                        name=f"{name} transition onset", showlegend=show,
                        customdata=np.stack([marks.member, marks.onset_step, marks.end_step, marks.after], -1),
                        hovertemplate="member %{customdata[0]}: transition from step %{customdata[1]} to "
                                      "%{customdata[2]}<br>%{y:.3g} -> %{customdata[3]:.3g}<extra></extra>"),
                        row=row, col=col)
    fig.update_xaxes(type="log", title_text=STEP_AXIS, row=n_rows)
    fig.update_xaxes(type="log")
    fig.update_yaxes(title_text="accuracy" if metric == "acc" else "loss (cross-entropy, nats)", col=1)
    if metric == "loss":
        fig.update_yaxes(type="log", exponentformat="power")
    title = "Accuracy" if metric == "acc" else "Loss"
    return base_layout(fig, f"{title} per member: median and min-max over seeds", note,
                       height=360 * n_rows + 80)


def norm_figure(frame: pd.DataFrame, configs: pd.Series, note: str) -> go.Figure:
    """weight_norm and grad_norm per member (log-log), coloured by grid point."""
    names = [name for name in ("weight_norm", "grad_norm") if name in set(frame.name)]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[f"{n} (L2, all parameters)" for n in names],
                        horizontal_spacing=0.08)
    labels = list(dict.fromkeys(configs.sort_index()))
    for col, name in enumerate(names, start=1):
        for i, label in enumerate(labels):
            rows = frame[(frame.name == name) & frame.member.isin(configs.index[configs == label])]
            colour = PALETTE[i % len(PALETTE)]
            for trace in member_traces(rows, colour, label if len(labels) > 1 else "member", label,
                                       show_legend=col == 1, suffix=""):
                fig.add_trace(trace, row=1, col=col)
        fig.update_yaxes(title_text=f"{name} (L2 norm)", type="log", exponentformat="power", row=1, col=col)
    fig.update_xaxes(type="log", title_text=STEP_AXIS)
    return base_layout(fig, "Weight norm and gradient norm per member", note)


def sharpness_figure(table: pd.DataFrame, configs: pd.Series) -> go.Figure:
    """Sharpness per member over training (preconditioned for AdamW), with the edge where it settles (dashed)."""
    adam = "preconditioned_sharpness" in table and table.preconditioned_sharpness.notna().any()
    measure = "preconditioned_sharpness" if adam else "sharpness"
    fig = go.Figure()
    labels = list(dict.fromkeys(configs.sort_index()))
    frame = table.rename(columns={measure: "value"})
    for i, label in enumerate(labels):
        rows = frame[frame.member.isin(configs.index[configs == label])]
        for trace in member_traces(rows, PALETTE[i % len(PALETTE)], label if len(labels) > 1 else "member", label):
            fig.add_trace(trace)
    edge = table.groupby("step").edge.median().dropna()
    if len(edge):
        fig.add_trace(go.Scatter(x=edge.index + 1, y=edge.to_numpy(), mode="lines", name="edge",
                                 line={"dash": "dash", "color": "#555"}))
    positive = bool((table[measure].dropna() > 0).all())
    fig.update_yaxes(title_text="top eigenvalue of P^-1 H" if adam else "top Hessian eigenvalue",
                     type="log" if positive else "linear", exponentformat="power")
    fig.update_xaxes(type="log", title_text=STEP_AXIS)
    note = ("AdamW: top eigenvalue of the preconditioned Hessian; dashed: (2 + 2 beta1) / ((1 - beta1) lr)" if adam
            else "top eigenvalue of the training loss's Hessian; dashed: (2 + 2 momentum) / lr")
    return base_layout(fig, "Sharpness per member", f"{note}, where it settles at the edge of stability (Cohen et "
                       "al. 2021, 2022); checkpoints with saved weights, power iteration")


def llc_figure(table: pd.DataFrame, configs: pd.Series) -> go.Figure:
    """The local learning coefficient per member over training (devinterp's SGLD estimate)."""
    fig = go.Figure()
    labels = list(dict.fromkeys(configs.sort_index()))
    frame = table.rename(columns={"llc": "value"})
    for i, label in enumerate(labels):
        rows = frame[frame.member.isin(configs.index[configs == label])]
        for trace in member_traces(rows, PALETTE[i % len(PALETTE)], label if len(labels) > 1 else "member", label):
            fig.add_trace(trace)
    fig.update_yaxes(title_text="local learning coefficient")
    fig.update_xaxes(type="log", title_text=STEP_AXIS)
    first = table.iloc[0]
    return base_layout(fig, "Local learning coefficient per member", "devinterp's SGLD estimate at each checkpoint "
                       f"with saved weights (lr {first.lr:g}, n_beta {first.n_beta_used:.3g}, localization "
                       f"{first.localization:g}); its scale depends on these settings: compare curves made alike")


def compare_figure(runs: list[tuple[str, pd.DataFrame]], name: str) -> go.Figure:
    """One scalar `name` of several runs on one plot: each run's members, median and min-max band."""
    fig = go.Figure()
    for i, (label, frame) in enumerate(runs):
        colour = PALETTE[i % len(PALETTE)]
        rows = frame[frame.name == name]
        if rows.empty:
            continue
        for trace in member_traces(rows, colour, label, label):
            fig.add_trace(trace)
        band = rows[np.isfinite(rows.value)].groupby("step").value.agg(["min", "max", "median"]).reset_index()
        for trace in band_traces(band.step, band["min"], band["max"], band["median"], colour, label, label):
            fig.add_trace(trace)
    fig.update_xaxes(type="log", title_text=STEP_AXIS)
    fig.update_yaxes(title_text=name, type="log" if name.endswith("loss") or "norm" in name else "linear")
    return base_layout(fig, f"{name}: " + " vs ".join(label for label, _ in runs),
                       "thin lines: members; bold: median over members; shaded: min-max", height=520)
