"""SAEs across seeds (`ontogeny sae` runs): how many latents the seeds share at each cosine threshold, on the
trained and on the random-init model, and how SAE quality evolved over SAE training. None without the tables."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .figures import PALETTE, base_layout, rgba


def _label(step: int) -> str:
    return "random init (step 0)" if step == 0 else f"model at step {step:,}"


def agreement_figure(curve: pd.DataFrame | None, threshold: float = 0.7) -> go.Figure | None:
    """Share of latents matched one to one across seeds at each cosine threshold (mean over seed pairs): one thin
    line per model member, bold the mean, one colour per source checkpoint."""
    if curve is None or curve.empty:
        return None
    fig = go.Figure()
    for i, (step, rows) in enumerate(curve.groupby("source_step")):
        colour = PALETTE[i % len(PALETTE)]
        for member, line in rows.groupby("source_member"):
            fig.add_trace(go.Scatter(x=line.threshold, y=line.shared, mode="lines", legendgroup=str(step),
                                     showlegend=False, line={"color": rgba(colour, 0.35), "width": 1},
                                     hovertemplate=f"model member {member}<br>cosine >= %{{x}}: %{{y:.0%}}<extra>"
                                                   f"{_label(step)}</extra>"))
        mean = rows.groupby("threshold").shared.mean()
        fig.add_trace(go.Scatter(x=mean.index, y=mean.to_numpy(), mode="lines+markers", name=_label(step),
                                 legendgroup=str(step), line={"color": colour, "width": 3}))
    fig.add_vline(x=threshold, line={"color": "#555", "dash": "dot", "width": 1})
    fig.update_xaxes(title_text="cosine of the one-to-one matched decoder directions at least")
    fig.update_yaxes(title_text="share of latents shared by two seeds", range=[-0.02, 1.02], tickformat=".0%")
    return base_layout(fig, "SAE latents shared across seeds", "Hungarian matching of decoder directions for every "
                       "pair of SAE seeds of one model member; thin: model members, bold: mean")


def sae_training_figure(scalars: pd.DataFrame, members: pd.DataFrame) -> go.Figure | None:
    """Fraction of variance explained over SAE training, per SAE member, one colour per source checkpoint."""
    rows = scalars[scalars["name"] == "sae/fve"]
    if rows.empty:
        return None
    source = members.set_index("member").source_step
    fig, shown = go.Figure(), set()
    for member, curve in rows.groupby("member"):
        step = int(source[member])
        colour = PALETTE[sorted(source.unique()).index(step) % len(PALETTE)]
        curve = curve.sort_values("step")
        fig.add_trace(go.Scatter(x=curve.step + 1, y=curve.value, mode="lines", name=_label(step),
                                 legendgroup=str(step), showlegend=step not in shown,
                                 line={"color": rgba(colour, 0.6), "width": 1.2},
                                 hovertemplate=f"SAE member {member}<br>SAE step %{{x}}<br>FVE %{{y:.3f}}"
                                               "<extra></extra>"))
        shown.add(step)
    fig.update_xaxes(type="log", title_text="SAE training step + 1 (log scale)")
    fig.update_yaxes(title_text="fraction of variance explained")
    return base_layout(fig, "SAE training", "each line one SAE (model member x SAE seed)")
