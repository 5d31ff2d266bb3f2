"""Per-example figures: the onset-sorted raster beside the aggregate curve, onset histograms, cartography.

Heatmaps and histograms cannot use a plotly log axis (their cells are laid out linearly), so these plots place
points at log10(step + 1) on a linear axis and label the ticks with the steps themselves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .data import Raster
from .figures import PALETTE, SPLIT_COLOURS, base_layout

LOG_STEP_AXIS = "training step (log scale of step + 1)"
ONSET_BINS = 40


def log_ticks(max_step: float) -> dict:
    """Tick values at log10(step + 1) for steps 0, 1, 3, 10, 30, ... up to `max_step`, labelled with the steps."""
    steps = [0, 1]
    while steps[-1] < max_step:
        steps.append(steps[-1] * 3 if str(steps[-1]).startswith("1") else steps[-1] * 10 // 3)
    labels = [f"{s // 1000}k" if s >= 1000 and s % 1000 == 0 else str(s) for s in steps]
    return {"tickvals": list(np.log10(np.asarray(steps, dtype=float) + 1)), "ticktext": labels}


def raster_figure(raster: Raster) -> go.Figure:
    """The aggregate accuracy curve above a heatmap of per-row curves sorted by onset, onsets marked."""
    noun = "examples" if raster.level == "example" else "subsets"
    x = np.log10(raster.steps.astype(float) + 1)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.28, 0.72], vertical_spacing=0.04)
    fig.add_trace(go.Scatter(x=np.log10(raster.aggregate_steps.astype(float) + 1), y=raster.aggregate,
                             mode="lines+markers", marker={"size": 4}, line={"color": "black", "width": 2},
                             name=f"{raster.split} accuracy (all {raster.n_rows} {noun})",
                             customdata=raster.aggregate_steps,
                             hovertemplate="step %{customdata}<br>accuracy %{y:.3f}<extra></extra>"), row=1, col=1)
    # Rows are categories named by example (or subset), in onset order: hover names them with no per-cell text.
    rows = np.asarray([f"{raster.level} {label}" for label in raster.labels])
    fig.add_trace(go.Heatmap(x=x, y=rows, z=raster.values, zmin=0, zmax=1, colorscale="Blues",
                             colorbar={"title": {"text": "correct" if raster.level == "example" else "accuracy"},
                                       "len": 0.7, "y": 0.36},
                             customdata=np.repeat(raster.steps.astype(np.int32)[None, :], len(rows), axis=0),
                             hovertemplate="%{y}<br>step %{customdata}<br>%{z:.2f}<extra></extra>",
                             name="per-row curves", showlegend=False), row=2, col=1)
    learned = np.isfinite(raster.onsets)
    fig.add_trace(go.Scatter(x=np.log10(raster.onsets[learned] + 1), y=rows[learned], mode="markers",
                             marker={"size": 3, "color": PALETTE[1]}, name="onset step",
                             hoverinfo="skip"), row=2, col=1)
    ticks = log_ticks(float(raster.steps.max()) if len(raster.steps) else 1.0)
    fig.update_xaxes(**ticks)
    fig.update_xaxes(title_text=LOG_STEP_AXIS, row=2, col=1)
    fig.update_yaxes(title_text="accuracy", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title_text=f"{noun}, sorted by onset step (never learned last)", row=2, col=1,
                     type="category", categoryorder="array", categoryarray=rows, showticklabels=len(rows) <= 40)
    sampled = []
    if len(rows) < raster.n_rows:
        sampled.append(f"{len(rows)} of {raster.n_rows} {noun} shown, evenly spaced over the onset order")
    if len(raster.steps) < raster.n_steps:
        sampled.append(f"{len(raster.steps)} of {raster.n_steps} checkpoints, evenly in log step")
    note = f"member {raster.member}, {raster.split} split; onset: {raster.onset_source}"
    if sampled:
        note += "<br>downsampled: " + "; ".join(sampled)
    return base_layout(fig, f"Hidden transitions: per-{raster.level} curves sorted by onset", note,
                       height=620 if raster.level == "example" else 520)


def onset_histogram(onsets: pd.DataFrame, noun: str, source: str) -> go.Figure:
    """Histogram of onset steps (log bins) per split, over every member; `onsets` has split and onset.
    The test split is drawn last, on top."""
    fig = go.Figure()
    finite = onsets[np.isfinite(onsets.onset)]
    top = float(np.log10(finite.onset.max() + 1)) if len(finite) else 1.0
    edges = np.linspace(0.0, max(top, 1e-6), ONSET_BINS + 1)
    never = []
    for i, (split, rows) in enumerate(sorted(onsets.groupby("split"), key=lambda item: item[0] == "test")):
        counts, _ = np.histogram(np.log10(rows.onset.dropna().to_numpy() + 1), bins=edges)
        colour = SPLIT_COLOURS.get(split, PALETTE[(i + 2) % len(PALETTE)])
        fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), name=f"{split}",
                             marker={"color": colour, "opacity": 0.6},
                             customdata=np.stack([np.round(10 ** edges[:-1] - 1), np.round(10 ** edges[1:] - 1)], -1),
                             hovertemplate=f"{split}: %{{y}} {noun}<br>onset in steps "
                                           "%{customdata[0]:.0f}-%{customdata[1]:.0f}<extra></extra>"))
        never.append(f"{split}: {int(rows.onset.isna().sum())} of {len(rows)} never learned")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text=LOG_STEP_AXIS, **log_ticks(10 ** top))
    fig.update_yaxes(title_text=f"{noun} (all members)")
    return base_layout(fig, f"Onset steps of {noun} (log-spaced bins)", f"onset: {source}; " + "; ".join(never),
                       height=380)


def cartography_figure(frame: pd.DataFrame, total: int) -> go.Figure:
    """Dataset cartography (Swayamdipta et al. 2020): confidence vs variability, coloured by correctness."""
    fig = go.Figure(go.Scattergl(
        x=frame.variability.to_numpy(np.float32), y=frame.confidence.to_numpy(np.float32), mode="markers",
        marker={"size": 4, "opacity": 0.6, "color": frame.correctness.to_numpy(np.float32), "colorscale": "Viridis",
                "cmin": 0, "cmax": 1, "colorbar": {"title": {"text": "correctness"}}},
        customdata=np.stack([frame.member.to_numpy(), frame.example.to_numpy()], -1),
        hovertemplate="member %{customdata[0]}, example %{customdata[1]}<br>variability %{x:.3f}<br>"
                      "confidence %{y:.3f}<extra></extra>", name="examples", showlegend=False))
    fig.update_xaxes(title_text="variability (std over checkpoints of p(true label))")
    fig.update_yaxes(title_text="confidence (mean over checkpoints of p(true label))")
    note = "one point per member x example; WebGL"
    if len(frame) < total:
        note += f"; downsampled: a fixed random {len(frame)} of {total} points"
    return base_layout(fig, "Dataset cartography: confidence vs variability", note, height=520)
