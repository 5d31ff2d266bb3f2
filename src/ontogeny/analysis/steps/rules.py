"""Rule steps. `rules` (default, on runs recording rule/hierarchical): which rule each question-formation
member learned, when it switched, how stable it is, per grid point and as McCoy pairs. `signature` (on request:
`ontogeny analyze RUN --what signature`, it rebuilds the models): a probe on in-distribution declaratives and how
well it predicts the rule. `counting` (default, on letter-counting runs): accuracy per subset and tokenizer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._common import cannot_rebuild
from ..analyze import Context, StepResult, analysis_step
from ..rules import (DEPTH1_PREFIX, GAP, HIERARCHICAL, RARE_GAP, counting_summary, label_of, rule_contrasts,
                     rule_curves, rule_members, rule_pairs, rule_prefix, rule_summary)

ONE_CLAUSE = "rules on one subject relative clause (McCoy et al.'s gen set)"
EVERY_QUESTION = "rules on every gen question (one or two nested relative clauses)"


@analysis_step("rules", writes=("rule_members", "rule_summary", "rule_contrasts", "rule_pairs"),
               scalars=(HIERARCHICAL, "rule/linear"))
def rules(context: Context) -> StepResult:
    """Tables `rule_members` (per member: final label and shares, switch step, stability, final test/gen acc),
    `rule_summary` (per grid point: share labelled hierarchical with its CI over seeds, spread of the final shares,
    stability; `scalars` names the reading), `rule_contrasts` (each grid point against the first, paired by seed)
    and `rule_pairs` (members of equal test accuracy with different rules), all from `rule_prefix`'s reading; one
    line per grid point and per contrast, and one per grid point on every gen question where that is the other
    reading."""
    result = StepResult()
    prefix = rule_prefix(context.scalars["name"].unique())
    per_member = rule_members(context.scalars, prefix=prefix)
    summary = rule_summary(per_member, context.members, random_state=context.random_state)
    summary["scalars"] = prefix + "*"
    contrasts = rule_contrasts(per_member, context.members, random_state=context.random_state)
    pairs = rule_pairs(per_member, context.members)
    result.tables.update(rule_members=per_member, rule_summary=summary, rule_contrasts=contrasts, rule_pairs=pairs)
    result.summary += _summary_lines(summary, ONE_CLAUSE if prefix == DEPTH1_PREFIX else "rules")
    result.summary += [f"rules: [{row.config}] - [{row.baseline}]: mean final hierarchical share {row.difference:+.2f} "
                       f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}] (95% CI, p = {row.p_value:.3f}); share of seeds "
                       f"hierarchical {row.share_difference:+.2f} ({row.only_config} seeds hierarchical only with "
                       f"[{row.config}], {row.only_baseline} only with [{row.baseline}]; McNemar's exact p = "
                       f"{row.labels_p:.3f}); {row.n_pairs} seeds paired" for row in contrasts.itertuples()]
    if prefix == DEPTH1_PREFIX:  # beside it, every gen question: the only reading before 2026-12-07
        every = rule_summary(rule_members(context.scalars), context.members, random_state=context.random_state)
        result.summary += _summary_lines(every, EVERY_QUESTION)
    result.summary.append(f"rules: {len(pairs)} pair(s) of members with test accuracy within 1 point and different "
                          "rules (table rule_pairs)")
    return result


def _summary_lines(summary: pd.DataFrame, title: str) -> list[str]:
    lines = []
    for row in summary.itertuples():
        line = (f"{title} [{row.config}]: {row.n_hierarchical}/{row.n_members} seeds hierarchical, {row.n_linear} "
                f"linear, {row.n_mixed} mixed")
        if np.isfinite(row.ci_low):
            line += (f" (share {row.share_hierarchical:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}]; mean final "
                     f"hierarchical share {row.mean_hierarchical:.2f} [{row.mean_low:.2f}, {row.mean_high:.2f}]; "
                     "95% CIs over seeds)")
        line += (f"; final hierarchical shares: {row.n_low} <= 0.2, {row.n_middle} between, {row.n_high} >= 0.8"
                 f"{' (bimodal)' if row.bimodal else ''}; {row.n_unstable} changed label in the last third")
        lines.append(line)
    return lines


@analysis_step("signature", writes=("rule_signature",), scalars=(HIERARCHICAL,), on_request=True)
def signature(context: Context) -> StepResult:
    """Table `rule_signature` (member, step: signature.SIGNATURE_COLUMNS; at each member's last step also its final
    hierarchical share and label) and one line per probe (plain, transfer): Spearman correlation and AUC of its
    last accuracy against the final rule, over all members, with 95% CIs over members."""
    from ..signature import run_signature, signature_prediction  # torch and the models: only when asked for

    run, result = context.run, StepResult()
    problem = cannot_rebuild(run, "signature", minimum=1)
    if problem:
        result.summary.append(problem)
        return result
    table = run_signature(run, random_state=context.random_state)
    table = table[table.member.isin(context.members.member)].reset_index(drop=True)
    curves = rule_curves(context.scalars, rule_prefix(context.scalars["name"].unique()))
    final = curves.groupby("member").last()
    last = table.step == table.groupby("member").step.transform("max")
    table["final_hierarchical"] = np.where(last, table.member.map(final.hierarchical), np.nan)
    table["final_label"] = pd.Series(np.where(last, table.member.map(
        pd.Series(label_of(final.hierarchical, final.linear), index=final.index)), None), dtype=object)
    result.tables["rule_signature"] = table
    ends = table[last]
    probes = {"probe_accuracy": "probe (main vs embedded auxiliary, held-out in-distribution declaratives)",
              "transfer_accuracy": "transfer probe (fit on depth-1, scored on center-embedded declaratives)"}
    for column, what in probes.items():
        rows = ends.dropna(subset=[column])
        if rows.empty:
            result.summary.append(f"signature: {column} undefined for every member (no center-embedded "
                                  "declaratives in their distributions)")
            continue
        fit = signature_prediction(rows[column], rows.final_hierarchical, random_state=context.random_state)
        result.values[column] = fit
        baseline = (f" (position alone: {rows.position_accuracy.median():.2f})" if column == "probe_accuracy"
                    else " (position alone: 0.50)")
        result.summary.append(
            f"signature: {what} at step {int(rows.step.max())}: median {rows[column].median():.2f}{baseline}; "
            f"vs the final rule over {fit['n_members']} members ({fit['n_hierarchical']} hierarchical): Spearman "
            f"{_with_ci(fit, 'spearman')}, AUC {_with_ci(fit, 'auc')} (95% CI over members)")
    return result


def _with_ci(fit: dict, name: str) -> str:
    if not np.isfinite(fit[name]):
        return "undefined"
    if not np.isfinite(fit[f"{name}_low"]):
        return f"{fit[name]:.2f}"
    return f"{fit[name]:.2f} [{fit[f'{name}_low']:.2f}, {fit[f'{name}_high']:.2f}]"


@analysis_step("counting", writes=("counting_summary",), scalars=("test/present_inside_token/acc",))
def counting(context: Context) -> StepResult:
    """Table `counting_summary` (grid point x subset: mean final test accuracy over seeds with its 95% CI, and the
    gap present_inside_token - present_own_token) and one line per grid point with the gap."""
    result = StepResult()
    table = counting_summary(context.scalars, context.members, random_state=context.random_state)
    result.tables["counting_summary"] = table
    for config, rows in table.groupby("config", sort=False):
        gaps = [_gap_text(rows[rows.subset == name], label) for name, label in
                ((GAP, "gap inside - own piece"), (RARE_GAP, RARE_GAP))]
        line = "; ".join(gap for gap in gaps if gap) or "no letter inside a multi-letter piece (one piece per letter)"
        every = rows[rows.subset == "all"]
        if len(every):
            line = f"test acc {every['mean'].iloc[0]:.3f}; " + line
        result.summary.append(f"counting [{config}]: {line}")
    return result


def _gap_text(gap: pd.DataFrame, label: str) -> str:
    """'<label> +0.012 [...] (95% CI over n seeds)' for one gap row of `counting_summary`, '' if none."""
    if gap.empty:
        return ""
    row = gap.iloc[0]
    text = f"{label} {row['mean']:+.3f}"
    if np.isfinite(row.ci_low):
        text += f" [{row.ci_low:+.3f}, {row.ci_high:+.3f}] (95% CI over {row.n_members} seeds)"
    return text
