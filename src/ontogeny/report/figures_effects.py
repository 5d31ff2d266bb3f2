"""Effects with their confidence intervals: each data-intervention arm against the baseline, per subset (the
`interventions` table). Returns None when the run lacks the table."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .figures import PALETTE, base_layout


def effects_figure(table: pd.DataFrame | None, at: str = "final") -> go.Figure | None:
    """Arm minus baseline of each metric (one row per metric, one colour per arm) with the 95% CI over seeds, at the
    final checkpoint (`at="final"`) or as onsets in steps (`at="onset"`)."""
    if table is None or table.empty:
        return None
    rows = table[table["at"] == at]
    if rows.empty:
        return None
    fig = go.Figure()
    for i, ((where, arm), group) in enumerate(rows.groupby(["where", "arm"], sort=False)):
        label = f"{arm} [{where}]" if where else arm
        fig.add_trace(go.Scatter(
            x=group["difference"], y=group["metric"], mode="markers", name=label,
            marker={"color": PALETTE[i % len(PALETTE)], "size": 8},
            error_x={"type": "data", "symmetric": False, "array": group["high"] - group["difference"],
                     "arrayminus": group["difference"] - group["low"]},
            customdata=group["verdict"], hovertemplate="%{customdata}<extra></extra>"))
    fig.add_vline(x=0, line={"color": "#555", "dash": "dot", "width": 1})
    fig.update_xaxes(title_text="arm minus baseline" + (" (steps)" if at == "onset" else ""))
    fig.update_yaxes(autorange="reversed", type="category")
    what = "final value" if at == "final" else "onset step (first checkpoint past half the change)"
    return base_layout(fig, f"Data interventions: effect on the {what}", "dots: mean difference over seeds; bars: "
                       "95% Multi-Bootstrap CI, paired by seed", height=max(320, 28 * rows["metric"].nunique() + 160))
