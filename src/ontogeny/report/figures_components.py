"""Component ontogeny figure: the importance curves of the units that scaffold and of the late specialists."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .figures import STEP_AXIS, base_layout, member_traces

MAX_CURVES = 120  # per role, so the page stays light
ROLE_COLOURS = {"scaffold": "#d95f02", "late specialist": "#1b9e77"}


def components_figure(importance: pd.DataFrame, roles: pd.DataFrame) -> go.Figure:
    """Importance over training (main group) of every unit with a role, one thin line each, coloured by role."""
    group = "test" if "test" in set(importance.group) else importance.group.iloc[0]
    keys = ["member", "kind", "layer", "unit"]
    curves = importance[importance.group == group].merge(roles[roles.role != ""][[*keys, "role"]], on=keys)
    fig = go.Figure()
    for role, colour in ROLE_COLOURS.items():
        chosen = curves[curves.role == role][keys].drop_duplicates().head(MAX_CURVES)
        rows = curves.merge(chosen, on=keys)
        # one line per (member, component): member_traces draws one per `member` value
        rows = rows.assign(member=rows.member.astype(str) + " " + rows.kind + " " + rows.layer.astype(str) + "."
                           + rows.unit.astype(str), value=rows.importance)
        for trace in member_traces(rows.sort_values("step"), colour, f"{role} ({len(chosen)} shown)", role,
                                   suffix=""):
            fig.add_trace(trace)
    fig.update_xaxes(type="log", title_text=STEP_AXIS)
    fig.update_yaxes(title_text=f"loss rise when ablated ({group}, nats)")
    return base_layout(fig, "Scaffolds and late specialists",
                       "importance of each unit with a role over checkpoints: scaffolds peak, then fall below 25% "
                       "of the peak; late specialists matter only late (`ontogeny analyze --what components`)")
