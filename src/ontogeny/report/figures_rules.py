"""Which rule did it learn: the hierarchical share over training per member, the share of seeds labelled
hierarchical per grid point, the in-distribution signature against the rule, and letter counting per subset and
tokenizer (tables of the `rules`, `signature` and `counting` steps).

Each function returns None when the run lacks its data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..analysis.rules import DEPTH1_PREFIX, GAP, MIDDLE_BAND, RARE_GAP, rule_prefix
from ..tasks.letters_gen import SHARE_BINS
from .figures import PALETTE, STEP_AXIS, base_layout, rgba

LABEL_COLOURS = {"hierarchical": PALETTE[0], "linear": PALETTE[1], "mixed": "#999999"}


def rule_figure(scalars: pd.DataFrame, per_member: pd.DataFrame | None = None,
                configs: pd.Series | None = None) -> go.Figure | None:
    """The hierarchical share per member over training (`rule_prefix`'s reading: McCoy et al.'s gen questions where
    recorded) with the label thresholds as dotted lines. Coloured by the member's final label (from the
    `rule_members` table; grey without it), or, where `configs` (member -> grid point) holds several grid points,
    by grid point, solid for members that end hierarchical and dotted for the rest."""
    prefix = rule_prefix(scalars["name"].unique())
    rows = scalars[scalars["name"] == prefix + "hierarchical"]
    if rows.empty:
        return None
    labels = per_member.set_index("member")["final_label"] if per_member is not None else pd.Series(dtype=object)
    grid = configs is not None and configs.reindex(rows.member.unique()).nunique() > 1
    colours = {config: PALETTE[i % len(PALETTE)] for i, config in enumerate(dict.fromkeys(configs))} if grid else {}
    fig, shown = go.Figure(), set()
    for member, curve in rows.groupby("member", sort=True):
        label = labels.get(member, "mixed")
        group = configs[member] if grid else label
        line = ({"color": rgba(colours[group], 0.7), "width": 1.5, "dash": "solid" if label == "hierarchical"
                 else "dot"} if grid else {"color": rgba(LABEL_COLOURS.get(label, PALETTE[6]), 0.6), "width": 1.5})
        curve = curve.sort_values("step")
        fig.add_trace(go.Scatter(x=curve.step + 1, y=curve.value, mode="lines", legendgroup=group,
                                 name=group if grid else f"final: {label}", showlegend=group not in shown, line=line,
                                 customdata=curve.step, hovertemplate=f"member {member} ({label})<br>step "
                                 "%{customdata}<br>hierarchical share %{y:.3f}<extra></extra>"))
        shown.add(group)
    for level in MIDDLE_BAND:
        fig.add_hline(y=level, line={"color": "#666", "dash": "dot", "width": 1})
    questions = "gen questions with one subject relative clause" if prefix == DEPTH1_PREFIX else "gen items"
    fig.update_xaxes(type="log", title_text=STEP_AXIS)
    fig.update_yaxes(title_text="share following the hierarchical rule", range=[-0.02, 1.02])
    return base_layout(fig, "Rule score over training, per member",
                       f"{prefix}hierarchical: {questions}; labels at >= 0.8 (grey lines: 0.2, 0.8)"
                       + ("; solid: ends hierarchical" if grid else ""), height=440)


FIELD_AXES = {"task.subject_rc": "subject_rc (share of training declaratives with a subject relative clause)",
              "task.complexity": "complexity (share of center-embedded training sentences)",
              "task.disambiguating": "disambiguating (share of training questions with a subject relative clause)",
              "task.diversity": "diversity (sentence templates in training)"}


def share_figure(summary: pd.DataFrame | None) -> go.Figure | None:
    """Share of seeds labelled hierarchical per grid point with its 95% CI over seeds (the `rule_summary` table),
    and dashed the mean final hierarchical share with its CI: against the first member field of FIELD_AXES that
    varies (else the grid point), one colour per combination of the other varying ones."""
    if summary is None or summary.empty:
        return None
    varying = [c for c in FIELD_AXES if c in summary and summary[c].nunique() > 1]
    x_column, others = (varying[0], varying[1:]) if varying else ("config", [])
    groups = summary.groupby(others, sort=True) if others else [((), summary)]
    fig = go.Figure()
    for i, (key, rows) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        name = ", ".join(f"{c.split('.')[-1]}={v}" for c, v in zip(others, key)) or "seeds labelled hierarchical"
        rows, colour = rows.sort_values(x_column), PALETTE[i % len(PALETTE)]
        share = rows.share_hierarchical.to_numpy(dtype=float)
        fig.add_trace(go.Scatter(
            x=rows[x_column], y=share, mode="lines+markers", name=name, legendgroup=name,
            line={"color": colour}, marker={"size": 9},
            error_y={"type": "data", "symmetric": False, "array": np.nan_to_num(rows.ci_high - share),
                     "arrayminus": np.nan_to_num(share - rows.ci_low)},
            customdata=np.stack([rows.n_hierarchical, rows.n_members, rows.n_middle], -1),
            hovertemplate="%{x}: %{customdata[0]}/%{customdata[1]} seeds hierarchical<br>%{customdata[2]} in the "
                          "middle band<extra></extra>"))
        if "mean_hierarchical" in rows:  # tables written before 2026-12-07 lack it
            mean = rows.mean_hierarchical.to_numpy(dtype=float)
            fig.add_trace(go.Scatter(
                x=rows[x_column], y=mean, mode="lines+markers", name=f"{name}: mean final share",
                legendgroup=name, line={"color": colour, "dash": "dash"}, marker={"size": 6},
                error_y={"type": "data", "symmetric": False, "array": np.nan_to_num(rows.mean_high - mean),
                         "arrayminus": np.nan_to_num(mean - rows.mean_low)},
                hovertemplate="%{x}: mean final hierarchical share %{y:.2f}<extra></extra>"))
    fig.update_xaxes(title_text=FIELD_AXES.get(x_column, x_column))
    fig.update_yaxes(title_text="share", range=[-0.02, 1.02])
    read = f", read on {summary.scalars.iloc[0]}" if "scalars" in summary else ""
    return base_layout(fig, "Which seeds learn the hierarchical rule",
                       "solid: seeds labelled hierarchical, 95% exact (Clopper-Pearson) CIs;<br>dashed: mean final "
                       f"hierarchical share, 95% Multi-Bootstrap CIs over seeds (ontogeny analyze, step `rules`{read})")


SIGNATURE_AXES = {"probe_accuracy": "probe accuracy: main vs embedded auxiliary (held-out in-distribution sentences)",
                  "transfer_accuracy": "transfer probe accuracy: fit on depth-1, scored on center-embedded sentences"}


def signature_figure(signature: pd.DataFrame | None, column: str = "probe_accuracy") -> go.Figure | None:
    """Per member at its last probed step: a probe's accuracy (`column` of the `rule_signature` table:
    probe_accuracy or transfer_accuracy) against the final hierarchical share, coloured by the final label; what
    the word position alone scores as a dashed line (the plain probe's position_accuracy; 0.5 for the transfer)."""
    if signature is None or signature.empty or "final_hierarchical" not in signature or column not in signature:
        return None
    ends = signature.dropna(subset=["final_hierarchical", column])
    if ends.empty:
        return None
    fig = go.Figure()
    for label, rows in ends.groupby("final_label", sort=True):
        fig.add_trace(go.Scatter(x=rows[column], y=rows.final_hierarchical, mode="markers", name=label,
                                 marker={"size": 10, "color": LABEL_COLOURS.get(label, PALETTE[6]),
                                         "line": {"color": "black", "width": 1}},
                                 customdata=np.stack([rows.member, rows.step], -1),
                                 hovertemplate="member %{customdata[0]} at step %{customdata[1]}<br>probe "
                                               "%{x:.3f}<br>hierarchical share %{y:.3f}<extra></extra>"))
    baseline = float(ends.position_accuracy.median()) if column == "probe_accuracy" else 0.5
    if np.isfinite(baseline):
        fig.add_vline(x=baseline, line={"color": "#666", "dash": "dash", "width": 1})
    fig.update_xaxes(title_text=SIGNATURE_AXES.get(column, column))
    fig.update_yaxes(title_text="final hierarchical share (gen set)", range=[-0.02, 1.02])
    return base_layout(fig, "Does an in-distribution signature predict the rule?",
                       f"dashed: the same probe on the word position alone (median {baseline:.2f})")


def counting_figure(summary: pd.DataFrame | None) -> go.Figure | None:
    """Final test accuracy per subset (bars) for each tokenizer grid point, with 95% CIs over seeds (the
    `counting_summary` table); the gap inside - own piece per grid point in the subtitle."""
    if summary is None or summary.empty:
        return None
    fig = go.Figure()
    subsets = [s for s in dict.fromkeys(summary.subset) if s not in (GAP, RARE_GAP) and s not in SHARE_BINS]
    for i, (config, rows) in enumerate(summary.groupby("config", sort=False)):
        rows = rows.set_index("subset").reindex(subsets)
        mean = rows["mean"].to_numpy(dtype=float)
        fig.add_trace(go.Bar(x=subsets, y=mean, name=str(config), marker={"color": PALETTE[i % len(PALETTE)]},
                             error_y={"type": "data", "symmetric": False,
                                      "array": np.nan_to_num(rows.ci_high.to_numpy(dtype=float) - mean),
                                      "arrayminus": np.nan_to_num(mean - rows.ci_low.to_numpy(dtype=float))},
                             customdata=rows.n_members, hovertemplate=f"{config}<br>%{{x}}: %{{y:.3f}} (mean of "
                             "%{customdata} seeds)<extra></extra>"))
    note = "bars: 95% Multi-Bootstrap CI over seeds"
    for gap, label in ((GAP, "gap inside - own piece"), (RARE_GAP, RARE_GAP)):
        gaps = summary[summary.subset == gap]
        if len(gaps):
            note += f"<br>{label}: " + "; ".join(
                f"{row.config} {row['mean']:+.3f}" + (f" [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
                                                      if np.isfinite(row.ci_low) else "") for _, row in gaps.iterrows())
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="subset of the test prompts (unseen words)")
    fig.update_yaxes(title_text="final accuracy", range=[0, 1.02])
    return base_layout(fig, "Letter counting per subset and tokenizer", note, height=460)


def _decade(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")  # 0.0001 -> 1e-4


SHARE_LABELS = {name: f"< {_decade(high)}" if low == 0 else f">= {_decade(low)}" if high == np.inf else
                f"{_decade(low)} to {_decade(high)}" for name, (low, high) in SHARE_BINS.items()}


def piece_share_figure(summary: pd.DataFrame | None) -> go.Figure | None:
    """Final test accuracy on letters inside a multi-letter piece against the piece's share of training prompts
    (decade bins of `counting_summary`), one line per tokenizer grid point, with 95% CIs over seeds."""
    rows = summary[summary.subset.isin(SHARE_BINS)] if summary is not None else None
    if rows is None or rows.empty:
        return None
    fig = go.Figure()
    for i, (config, group) in enumerate(rows.groupby("config", sort=False)):
        group = group.set_index("subset")
        group = group.reindex([b for b in SHARE_BINS if b in group.index])
        mean = group["mean"].to_numpy(dtype=float)
        fig.add_trace(go.Scatter(x=[SHARE_LABELS[b] for b in group.index], y=mean, mode="lines+markers",
                                 name=str(config), line={"color": PALETTE[i % len(PALETTE)]},
                                 error_y={"type": "data", "symmetric": False,
                                          "array": np.nan_to_num(group.ci_high.to_numpy(dtype=float) - mean),
                                          "arrayminus": np.nan_to_num(mean - group.ci_low.to_numpy(dtype=float))},
                                 customdata=group.n_members, hovertemplate=f"{config}<br>share %{{x}}: %{{y:.3f}} "
                                 "(mean of %{customdata} seeds)<extra></extra>"))
    fig.update_xaxes(title_text="share of training prompts whose word holds the piece (the rarest piece holding "
                     "the letter)", type="category", categoryorder="array", categoryarray=list(SHARE_LABELS.values()))
    fig.update_yaxes(title_text="final accuracy (letters inside the piece)", range=[0, 1.02])
    return base_layout(fig, "Letter counting against how often the piece was seen",
                       "error bars: 95% Multi-Bootstrap CI over seeds; test prompts (unseen words)", height=420)
