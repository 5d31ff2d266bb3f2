"""Language step: on runs that record `kl/<reference>` or `uas/*` scalars (the language tasks), when each member
enters each strategy stage (closest to uniform, then unigram, then bigram, ...) and whether the implicit parse
(`uas/best`) comes before the minimal-pair accuracy (`pairs/acc`). Reads only the scalars, so it runs by default;
on any other run it does nothing and says why in `values["skipped"]`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analyze import Context, StepResult, analysis_step
from ..language import (KL_PREFIX, UAS_PREFIX, kl_references, onset_order, stage_summary, strategy_stages,
                        structure_line, structure_onsets)

ONSET_PAIR = ("uas/best", "pairs/acc")
MIN_RISE = 0.05  # both are shares in [0, 1]: a fitted rise under 5 points is noise, not an onset
EDELMAN_PREFIX = "edelman_"  # Edelman et al.'s strategies (tasks/markov.py)
MIN_STAY = 3  # checkpoints a reference must stay closest to open its stage (early ones are dense)


@analysis_step("language",
               writes=("language_stages", "language_stage_summary", "language_structure", "language_onsets"))
def language(context: Context) -> StepResult:
    """Tables `language_stages` (member x reference: boundary_step), `language_stage_summary` (config x reference:
    median boundary, CI, members reaching it, the stage order and whether every member follows it) and
    `language_onsets` (member: onsets of uas/best and pairs/acc, their lag) and `language_structure` (member:
    when uas/best first beats the offset baseline uas/offset by 0.15), with one summary line per grid point for
    each."""
    result, names = StepResult(), context.scalar_names
    has_kl = any(name.startswith(KL_PREFIX) for name in names)
    has_uas = any(name.startswith(UAS_PREFIX) for name in names)
    if not (has_kl or has_uas):
        result.values["skipped"] = "language: not a language run (no kl/* or uas/* scalars recorded)"
        return result
    groups = list(context.members.groupby("config", sort=False))
    if has_kl:
        _stages(context, groups, result)
    if all(name in names for name in ONSET_PAIR):
        _onsets(context, groups, result)
    if "uas/offset" in names:
        _structure(context, groups, result)
    elif has_uas:
        absent = " and ".join(name for name in ONSET_PAIR if name not in names)
        result.summary.append(f"language onsets: skipped (no {absent} recorded)")
    return result


def _stages(context: Context, groups: list, result: StepResult) -> None:
    """Stages among our references and, apart, among Edelman et al.'s (add-one, at the last token) where recorded:
    each set is its own competition, so the two never decide each other's closest reference."""
    references = kl_references(context.scalars)
    theirs = [name for name in references if name.startswith(EDELMAN_PREFIX)]
    tables, parts = [], []
    for chosen, label in (([n for n in references if n not in theirs], ""),
                          (theirs, ", Edelman et al.'s (add-one, last token)")):
        if not chosen:
            continue
        _, boundaries = strategy_stages(context.scalars, chosen, min_stay=MIN_STAY)
        tables.append(boundaries)
        for config, group in groups:
            summary = stage_summary(boundaries, group.member, random_state=context.random_state)
            parts.append(summary.assign(config=config))
            result.summary.append(f"language stages{label} [{config}]: " + stage_line(summary))
    result.tables["language_stages"] = pd.concat(tables, ignore_index=True)
    table = pd.concat(parts, ignore_index=True)
    result.tables["language_stage_summary"] = table[["config", *[c for c in table.columns if c != "config"]]]


def stage_line(summary: pd.DataFrame) -> str:
    """E.g. 'uniform -> unigram -> bigram in 6/6 members; entered: uniform at step 0 [0, 0], unigram at step 306
    [258, 363], ... (median, 95% CI over the seeds that reach it); reached bigram by 5/6'."""
    first = summary.iloc[0]
    line = f"{first.order} in {first.n_in_order}/{first.n_members} members"
    entered = [f"{row.reference} at step {row.median_step:,.0f}" + (
        f" [{row.ci_low:,.0f}, {row.ci_high:,.0f}]" if np.isfinite(row.ci_low) else "")
        for row in summary.itertuples() if np.isfinite(row.median_step)]
    if entered:
        line += "; entered: " + ", ".join(entered) + " (median, 95% CI over the seeds that reach it)"
    short = [f"{row.reference} by {row.n_reached}/{row.n_members}" for row in summary.itertuples()
             if row.n_reached < row.n_members]
    if short:
        line += "; reached " + ", ".join(short)
    return line


STRUCTURE_RELATIONS = ("all", "nsubj", "nsubj_attractor")  # every word, and the subject agreement reads


def _structure(context: Context, groups: list, result: StepResult) -> None:
    """Table `language_structure` (member x relation: when the best head first beats the offset baseline by 0.15)
    and one line per grid point and relation recorded."""
    parts, names = [], set(context.scalar_names)
    relations = [r for r in STRUCTURE_RELATIONS if r == "all" or f"uas/offset/{r}" in names]
    for config, group in groups:
        scalars = context.scalars[context.scalars.member.isin(group.member)]
        for relation in relations:
            table = structure_onsets(scalars, relation=relation)
            parts.append(table)
            label = "" if relation == "all" else f" {relation}"
            result.summary.append(f"language structure{label} [{config}]: "
                                  + structure_line(table, random_state=context.random_state)
                                  + _before_capability(table, result.tables.get("language_onsets")))
    result.tables["language_structure"] = pd.concat(parts, ignore_index=True)


def _before_capability(table: pd.DataFrame, onsets: pd.DataFrame | None) -> str:
    """'; before the pairs/acc onset in 4/4 seeds' (Chen et al.'s order: structure, then capability), or ''."""
    if onsets is None or table.empty:
        return ""
    capability = onsets.set_index("member")["second_onset"].reindex(table["member"]).to_numpy(dtype=float)
    both = np.isfinite(capability)
    before = int((table["structure_step"].to_numpy(dtype=float)[both] < capability[both]).sum())
    return f"; before the {onsets['second'].iloc[0]} onset in {before}/{int(both.sum())} seeds"


def _onsets(context: Context, groups: list, result: StepResult) -> None:
    parts = []
    for config, group in groups:
        scalars = context.scalars[context.scalars.member.isin(group.member)
                                  & context.scalars.name.isin(ONSET_PAIR)]
        per_member, order = onset_order(scalars, *ONSET_PAIR, min_change=MIN_RISE,
                                        random_state=context.random_state)
        parts.append(per_member)
        result.summary.append(f"language onsets [{config}]: {order.sentence}")
    result.tables["language_onsets"] = pd.concat(parts, ignore_index=True)

