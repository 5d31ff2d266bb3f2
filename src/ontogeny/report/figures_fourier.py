"""Fourier progress measures on modular addition (the `fourier` table of `ontogeny analyze --what fourier`)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .figures import MAX_PANELS, PALETTE, STEP_AXIS, band_traces, base_layout, member_traces

LOSSES = {"train_loss": ("train", PALETTE[0]), "test_loss": ("test", PALETTE[1]),
          "restricted_loss": ("restricted", PALETTE[2]), "excluded_loss": ("excluded", PALETTE[3])}


def fourier_figure(table: pd.DataFrame, configs: pd.Series) -> go.Figure:
    """Per grid point (`configs`: member -> label), one row: train, test, restricted and excluded loss per member
    with their median and min-max band (log p dashed), and the number of key frequencies per member."""
    labels = [label for label in dict.fromkeys(configs.sort_index())
              if table.member.isin(configs.index[configs == label]).any()][:MAX_PANELS]
    titles = [f"{prefix}{label}" if len(labels) > 1 else prefix.rstrip(": ") for label in labels
              for prefix in ("losses: ", "key frequencies: ")]
    fig = make_subplots(rows=len(labels), cols=2, column_widths=[0.62, 0.38], subplot_titles=titles,
                        horizontal_spacing=0.08, vertical_spacing=0.3 / max(len(labels), 1))
    for row, label in enumerate(labels, start=1):
        rows = table[table.member.isin(configs.index[configs == label])]
        show = row == 1
        for column, (name, colour) in LOSSES.items():
            frame = rows[["member", "step", column]].rename(columns={column: "value"})
            for trace in member_traces(frame, colour, name, name, show_legend=show):
                fig.add_trace(trace, row=row, col=1)
            spread = frame.groupby("step").value.agg(["min", "max", "median"])
            for trace in band_traces(spread.index.to_numpy(), spread["min"].to_numpy(), spread["max"].to_numpy(),
                                     spread["median"].to_numpy(), colour, name, name, show_legend=show):
                fig.add_trace(trace, row=row, col=1)
        uniform = float(rows.uniform_loss.iloc[0])
        fig.add_hline(y=uniform, line={"dash": "dash", "color": "#555"}, annotation_text=f"log p = {uniform:.3g}",
                      row=row, col=1)
        counts = rows[["member", "step", "n_key_frequencies"]].rename(columns={"n_key_frequencies": "value"})
        for trace in member_traces(counts, PALETTE[6], "key frequencies", "key frequencies", show_legend=show):
            fig.add_trace(trace, row=row, col=2)
        fig.update_yaxes(title_text="loss (cross-entropy, nats)", type="log", exponentformat="power", row=row, col=1)
        fig.update_yaxes(title_text="number of key frequencies", rangemode="tozero", row=row, col=2)
    fig.update_xaxes(type="log", title_text=STEP_AXIS)
    note = ("restricted: logits kept along cos/sin(w(a+b)) of the key frequencies w (plus their mean), on all p² "
            "pairs; excluded: logits less those components, on the training pairs (Nanda et al. 2023)")
    finals = table[table.step == table.groupby("member").step.transform("max")].ablated_frequencies
    if len(finals) and finals.nunique() == 1:
        note += f"<br>key frequencies at the last checkpoint: {finals.iloc[0] or 'none'}"
    fig.update_layout(legend={"orientation": "h", "y": -0.12 if len(labels) == 1 else -0.05})
    return base_layout(fig, "Fourier progress measures per member", note, height=max(380 * len(labels), 440) + 60)

