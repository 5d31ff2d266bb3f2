"""Fourier step (on request: `ontogeny analyze RUN --what fourier`): on modular addition, each member's key
frequencies and its restricted and excluded losses at every checkpoint with saved weights (Nanda et al. 2023)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .._common import cannot_rebuild
from ..analyze import Context, StepResult, analysis_step


@analysis_step("fourier", writes=("fourier",), on_request=True)
def fourier(context: Context) -> StepResult:
    """Table `fourier` (member, step: key frequencies, losses; see `analysis.fourier.COLUMNS`) and one summary line
    per grid point."""
    from ..fourier import KEY_SHARE, run_fourier  # torch and the models: only when asked for

    run, result = context.run, StepResult()
    problem = cannot_rebuild(run, "fourier")
    if problem:
        result.summary.append(problem)
        return result
    task = run.spec.task
    ops = {getattr(task, "op", None)} | {v for k, values in run.spec.sweep if k == "task.op" for v in values}
    if getattr(task, "name", None) != "modular" or "+" not in ops:
        what = f"{task.name} with op {task.op!r}" if getattr(task, "name", None) == "modular" else task.name
        result.summary.append(f"fourier: skipped (task {what}: the Fourier measures are defined for modular "
                              "addition, task.name = 'modular' with task.op = '+')")
        return result
    table = run_fourier(run)
    table = table[table.member.isin(context.members.member)].reset_index(drop=True)
    result.tables["fourier"] = table
    if len(ops) > 1:
        result.summary.append(f"fourier: members whose task.op is not '+' left out (ops {sorted(ops)})")
    for config, group in context.members.groupby("config", sort=False):
        rows = table[table.member.isin(group.member)]
        if not rows.empty:
            result.summary.append(f"fourier [{config}]: " + summary_line(rows, KEY_SHARE))
    return result


def summary_line(rows: pd.DataFrame, share: float) -> str:
    """Medians over members: key-frequency count first -> last checkpoint, the losses at the last one, and the first
    step where restricted and test loss fall below half of log p."""
    by_step = rows.groupby("step")[["n_key_frequencies", "restricted_loss", "excluded_loss", "train_loss",
                                    "test_loss"]].median()
    first, last = by_step.iloc[0], by_step.iloc[-1]
    uniform = float(rows.uniform_loss.iloc[0])
    line = (f"key frequencies ({share:.0%} of the embedding's Fourier power) {first.n_key_frequencies:g} at step "
            f"{by_step.index[0]} -> {last.n_key_frequencies:g} at step {by_step.index[-1]}; there restricted loss "
            f"{last.restricted_loss:.3g}, excluded loss {last.excluded_loss:.3g} (uniform log p = {uniform:.3g}), "
            f"train {last.train_loss:.3g}, test {last.test_loss:.3g}")
    below = {name: _first_below(by_step[name], uniform / 2) for name in ("restricted_loss", "test_loss")}
    line += (f"; below log p / 2 first at step {_text(below['restricted_loss'])} (restricted) and "
             f"{_text(below['test_loss'])} (test) (medians over members)")
    final = rows[rows.step == rows.step.max()]
    if "neuron_key_frequencies" in final and final.neuron_key_frequencies.notna().any():
        counts = final.neuron_key_frequencies.fillna("").map(lambda text: len([k for k in text.split(", ") if k]))
        line += (f"; Nanda et al.'s rule (the neurons' own frequencies) {counts.median():g} key frequencies, "
                 f"{final.neurons_clustered.median():.0%} of neurons above 85% explained (medians)")
    return line


def _first_below(curve: pd.Series, level: float) -> float:
    """The first step after the start where `curve` is below `level` (NaN if never)."""
    hits = curve[(curve.index > curve.index[0]) & (curve < level)]
    return float(hits.index[0]) if len(hits) else math.nan


def _text(step: float) -> str:
    return "never" if np.isnan(step) else f"{step:.0f}"
