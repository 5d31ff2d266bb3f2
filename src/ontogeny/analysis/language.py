"""Language runs from their recorded scalars: strategy stages, the order of two onsets, per-head parse scores.

The language tasks record, per member and checkpoint:
- `kl/<reference>`: KL(reference || model) of next-token (or masked-token) distributions averaged over the probe's
  tokens, for references such as uniform, unigram, bigram (and bayes / trigram); lower is closer.
  A model that passes through uniform -> unigram -> bigram predictions is the staged learning of in-context Markov
  chains (Edelman et al. 2024, "The evolution of statistical induction heads").
- `uas/L{layer}H{head}` and `uas/best`: Chen et al. 2024's implicit-parse UAS ("Sudden drops in the loss", their
  released probe): the share of words whose most-attended word (or the word attending to them most) is their gold
  head; `uas/offset` the best fixed-offset baseline (no syntax), `uas/best/<relation>` and `uas/offset/<relation>`
  per relation. `uas_undirected/*`: the head-or-dependent score that runs before this one recorded as `uas/*`.
- `pairs/acc`, `pairs/<construction>/acc`, `test/loss`, `test/acc`.

Every function takes the store's long `scalars` frame (member, step, name, value).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .bootstrap import multibootstrap
from .dynamics import sigmoid_summary

KL_PREFIX, UAS_PREFIX = "kl/", "uas/"
HEAD_PATTERN = re.compile(r"uas/L(\d+)H(\d+)")  # the task's own naming of a head's curve, not a path
STAGE_COLUMNS = ["member", "reference", "boundary_step"]
SUMMARY_COLUMNS = ["reference", "position", "median_step", "ci_low", "ci_high", "n_reached", "n_members",
                   "order", "same_order", "n_in_order"]
ONSET_COLUMNS = ["member", "first", "second", "first_onset", "second_onset", "lag"]


def kl_references(scalars: pd.DataFrame) -> list[str]:
    """The references with a `kl/<reference>` curve, in the order they first appear in `scalars`."""
    names = pd.unique(scalars["name"])
    return [name[len(KL_PREFIX):] for name in names if str(name).startswith(KL_PREFIX)]


def strategy_stages(scalars: pd.DataFrame, references: list[str] | None = None, *,
                    min_stay: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Which reference each member's predictions are closest to at each checkpoint, and when each stage begins.

    Returns (per_checkpoint, boundaries):
    - per_checkpoint: member, step, closest (the reference of lowest `kl/<reference>`; ties go to the one listed
      first; checkpoints where every reference's KL is missing are left out), margin (second-lowest KL minus the
      lowest: how clearly it is closest) and one column per reference with its KL.
    - boundaries: member, reference, boundary_step, one row per member and reference. The rule: a member enters a
      stage at the first checkpoint from which that reference is the closest at `min_stay` consecutive recorded
      checkpoints, so a single checkpoint's flicker (noise near a crossing) does not open a stage. Stages entered
      more than once keep the first entry. NaN if that never happens, including a stage reached only in the last
      `min_stay - 1` checkpoints (not yet shown to last).

    `references` are names with or without the `kl/` prefix, default every `kl/*` curve in `scalars` (in the order
    they first appear). ValueError (one line) when a reference has no curve or min_stay < 1.
    """
    references = [name.removeprefix(KL_PREFIX) for name in (references or kl_references(scalars))]
    if not references:
        raise ValueError("no kl/* scalars recorded: strategy stages need KL curves to compare")
    if min_stay < 1:
        raise ValueError(f"min_stay must be at least 1 checkpoint, got {min_stay}")
    recorded = set(kl_references(scalars))
    absent = [name for name in references if name not in recorded]
    if absent:
        raise ValueError(f"no kl/ curve for {', '.join(absent)} (recorded: {', '.join(sorted(recorded)) or 'none'})")
    rows = scalars[scalars["name"].isin([KL_PREFIX + name for name in references])]
    wide = rows.pivot_table(index=["member", "step"], columns="name", values="value", aggfunc="last", dropna=False)
    wide = wide.reindex(columns=[KL_PREFIX + name for name in references])  # [checkpoints, references]
    wide = wide[wide.notna().any(axis=1)]
    kl = wide.to_numpy(dtype=float)
    filled = np.where(np.isnan(kl), np.inf, kl)  # a reference missing at a checkpoint is never the closest there
    ranked = np.sort(filled, axis=1)
    per_checkpoint = wide.index.to_frame(index=False)
    per_checkpoint["closest"] = np.asarray(references, dtype=object)[np.argmin(filled, axis=1)]
    margin = ranked[:, 1] - ranked[:, 0] if len(references) > 1 else np.full(len(kl), np.nan)
    per_checkpoint["margin"] = np.where(np.isfinite(margin), margin, np.nan)
    for i, name in enumerate(references):
        per_checkpoint[name] = kl[:, i]
    records = []
    for member, rows in per_checkpoint.groupby("member", sort=True):
        closest, steps = rows["closest"].to_numpy(), rows["step"].to_numpy()
        for name in references:
            records.append({"member": member, "reference": name,
                            "boundary_step": _first_stay(closest == name, steps, min_stay)})
    boundaries = pd.DataFrame(records, columns=STAGE_COLUMNS)
    boundaries["boundary_step"] = boundaries["boundary_step"].astype(float)
    return per_checkpoint, boundaries


def _first_stay(hits: np.ndarray, steps: np.ndarray, min_stay: int) -> float:
    """The step of the first index from which `hits` [S] is True `min_stay` times in a row (NaN if never)."""
    if len(hits) < min_stay:
        return np.nan
    runs = np.lib.stride_tricks.sliding_window_view(hits, min_stay).all(axis=1)  # [S - min_stay + 1]
    return float(steps[np.argmax(runs)]) if runs.any() else np.nan


def stage_summary(boundaries: pd.DataFrame, members, *, n_boot: int = 2000, ci: float = 0.95,
                  random_state=None) -> pd.DataFrame:
    """Per reference (rows in the consensus order): the median boundary step over the members that reach it with its
    Multi-Bootstrap CI over those seeds (NaN with fewer than 2), how many of `members` reach it, and whether the
    stages come in the same order in every member.

    `members`: the member ids to summarize (a sequence, or a frame with a `member` column). The consensus order
    sorts the references by median boundary (never-reached ones last, as listed); `position` is 1-based. A member is
    in order when its reached stages, sorted by its own boundary steps, follow the consensus order (a stage it
    never reaches is skipped, not counted against it); `same_order` is True when every member is (n_in_order ==
    n_members) and is repeated on every row with `order` ("uniform -> unigram -> bigram").
    """
    ids = list(members["member"] if isinstance(members, pd.DataFrame) else members)
    rows = boundaries[boundaries["member"].isin(ids)]
    references = list(dict.fromkeys(rows["reference"]))
    table = rows.pivot_table(index="member", columns="reference", values="boundary_step", aggfunc="first",
                             dropna=False).reindex(index=ids, columns=references)  # [members, references]
    medians = table.median(axis=0, skipna=True)
    order = sorted(references, key=lambda name: (np.isnan(medians[name]), medians[name], references.index(name)))
    rank = {name: i for i, name in enumerate(order)}
    in_order = 0
    for _, steps in table.iterrows():
        reached = steps.dropna().sort_values(kind="stable")
        positions = [rank[name] for name in reached.index]
        in_order += positions == sorted(positions)
    records = []
    for position, name in enumerate(order, start=1):
        reached = table[name].dropna().to_numpy(dtype=float)
        low = high = np.nan
        if len(reached) >= 2:
            interval = multibootstrap(reached, statistic=np.median, n_boot=n_boot, ci=ci, random_state=random_state)
            low, high = interval.low, interval.high
        records.append({"reference": name, "position": position, "median_step": float(medians[name]),
                        "ci_low": low, "ci_high": high, "n_reached": len(reached), "n_members": len(ids)})
    summary = pd.DataFrame(records, columns=SUMMARY_COLUMNS[:7])
    summary["order"] = " -> ".join(name for name in order if not np.isnan(medians[name]))  # stages some member reached
    summary["same_order"] = in_order == len(ids)
    summary["n_in_order"] = in_order
    return summary


@dataclass(frozen=True)
class OnsetOrder:
    """Which of two curves moves first over seeds: counts of members, the median lag (second - first, in steps) with
    its Multi-Bootstrap CI over the members where both move, and `sentence`, one line saying so."""

    first: str
    second: str
    n_members: int
    n_first_precedes: int
    n_second_precedes: int
    n_same_step: int
    n_first_never: int
    n_second_never: int
    median_lag: float
    lag_low: float
    lag_high: float
    sentence: str


def onset_order(scalars: pd.DataFrame, first: str, second: str, *,
                increasing: tuple[bool | None, bool | None] = (True, True), min_change: float = 0.0,
                n_boot: int = 2000, ci: float = 0.95, random_state=None) -> tuple[pd.DataFrame, OnsetOrder]:
    """Onset of the curves `first` and `second` per member, and whether `first` comes first.

    Onset: the project's age of acquisition (`dynamics.age_of_acquisition`, Chang & Bergen 2022): the step where a
    sigmoid fitted in log10(1 + step) is halfway between its fitted first- and last-checkpoint values, continuous
    between checkpoints and fit for rising and falling curves alike. `increasing` says per curve which way it
    must move (True rising, False falling, None either); a curve whose fit moves the other way or by less than
    `min_change` (in the curve's units) did not move and gets NaN, as does a member with fewer than 3 checkpoints.

    Returns (per_member, summary): per_member has ONSET_COLUMNS (lag = second_onset - first_onset, NaN unless both
    moved); summary is an OnsetOrder whose CI resamples the members' lags (seeds are members, so resampling lags
    is the paired Multi-Bootstrap of the two onsets).
    """
    records = []
    scalars = scalars[scalars["name"].isin([first, second])]
    members = np.sort(scalars["member"].unique())
    for member, rows in scalars.groupby("member", sort=True):
        onsets = [_onset(rows, name, way, min_change) for name, way in zip((first, second), increasing)]
        records.append({"member": member, "first": first, "second": second, "first_onset": onsets[0],
                        "second_onset": onsets[1], "lag": onsets[1] - onsets[0]})
    per_member = pd.DataFrame(records, columns=ONSET_COLUMNS)
    lags = per_member["lag"].dropna().to_numpy(dtype=float)
    median = low = high = np.nan
    if len(lags):
        median = float(np.median(lags))
    if len(lags) >= 2:
        interval = multibootstrap(lags, statistic=np.median, n_boot=n_boot, ci=ci, random_state=random_state)
        low, high = interval.low, interval.high
    counts = {"n_first_precedes": int((lags > 0).sum()), "n_second_precedes": int((lags < 0).sum()),
              "n_same_step": int((lags == 0).sum()),
              "n_first_never": int(per_member["first_onset"].isna().sum()),
              "n_second_never": int(per_member["second_onset"].isna().sum())}
    sentence = _onset_sentence(first, second, len(members), counts, median, low, high, ci)
    return per_member, OnsetOrder(first, second, len(members), **counts, median_lag=median, lag_low=low,
                                  lag_high=high, sentence=sentence)


def _onset(rows: pd.DataFrame, name: str, increasing: bool | None, min_change: float) -> float:
    """One member's onset of curve `name` (see onset_order), NaN when it is absent or did not move."""
    curve = rows[rows["name"] == name].dropna(subset=["value"]).sort_values("step")
    if len(curve) < 3:
        return np.nan
    # age_of_acquisition is sigmoid_summary's halfway step kept where the fit moved the right way; its fitted
    # start and end are needed here too, to also ask for a move of at least min_change.
    fit = sigmoid_summary(curve["step"].to_numpy(dtype=float), curve["value"].to_numpy(dtype=float)).iloc[0]
    moved = fit["end"] - fit["start"]
    if increasing is not None:
        moved = moved if increasing else -moved
    elif moved < 0:
        moved = -moved
    return float(fit["halfway_step"]) if moved > 0 and moved >= min_change else np.nan


def _onset_sentence(first: str, second: str, n_members: int, counts: dict, median: float, low: float,
                    high: float, ci: float) -> str:
    """E.g. 'uas/best precedes pairs/acc in 8/8 seeds, median lag 1,200 steps [900, 1,500] (95% CI over seeds)'."""
    line = f"{first} precedes {second} in {counts['n_first_precedes']}/{n_members} seeds"
    if counts["n_second_precedes"]:
        line += f", follows it in {counts['n_second_precedes']}"
    if counts["n_same_step"]:
        line += f", same step in {counts['n_same_step']}"
    never = [f"{counts[key]} where {name} never moves" for key, name in (("n_first_never", first),
                                                                          ("n_second_never", second)) if counts[key]]
    if never:
        line += f" ({'; '.join(never)})"
    if np.isfinite(median):
        line += f", median lag {median:,.0f} steps"
        if np.isfinite(low):
            line += f" [{low:,.0f}, {high:,.0f}] ({ci:.0%} CI over seeds)"
    else:
        line += ", no member where both move"
    return line


STRUCTURE_MARGIN = 0.15  # the best head must beat the best offset baseline by this much (Chen et al.'s onset)
STRUCTURE_COLUMNS = ["member", "relation", "structure_step", "final_uas", "offset_uas", "final_margin", "max_margin"]


def structure_onsets(scalars: pd.DataFrame, margin: float = STRUCTURE_MARGIN, relation: str = "all") -> pd.DataFrame:
    """Per member: the first checkpoint where `uas/best` exceeds by `margin` both the no-syntax baseline
    `uas/offset` and its own value at the first checkpoint (the best of many heads at initialization beats a weak
    baseline by chance: across an attractor no fixed offset is ever right), NaN if never; the final UAS, the
    offset baseline, and the final and largest margins over it; for a `relation` other than "all", its own
    `uas/best/<relation>` and `uas/offset/<relation>`. Columns STRUCTURE_COLUMNS."""
    best, offset = ("uas/best", "uas/offset") if relation == "all" else (f"uas/best/{relation}",
                                                                         f"uas/offset/{relation}")
    wide = scalars[scalars["name"].isin([best, offset])].pivot_table(
        index=["member", "step"], columns="name", values="value").dropna()
    records = []
    for member, rows in wide.groupby(level="member", sort=True):
        rows = rows.droplevel("member").sort_index()
        above = rows[best] - rows[offset]
        start = rows[best].iloc[0]
        reached = above.index[(above >= margin) & (rows[best] - start >= margin)]
        records.append({"member": member, "relation": relation,
                        "structure_step": float(reached[0]) if len(reached) else np.nan,
                        "final_uas": float(rows[best].iloc[-1]), "offset_uas": float(rows[offset].iloc[-1]),
                        "final_margin": float(above.iloc[-1]), "max_margin": float(above.max())})
    return pd.DataFrame(records, columns=STRUCTURE_COLUMNS)


def structure_line(table: pd.DataFrame, margin: float = STRUCTURE_MARGIN, *, random_state=None) -> str:
    """E.g. 'best head above the best offset baseline and its start by >= 0.15 in 8/8 seeds, first at step 400
    [300, 500] (median, 95% CI over seeds); final UAS 0.62 vs offset 0.36'."""
    reached = table["structure_step"].dropna().to_numpy(dtype=float)
    line = (f"best head above the best offset baseline and its start by >= {margin:.2f} in {len(reached)}/"
            f"{len(table)} seeds")
    if len(reached):
        line += f", first at step {np.median(reached):,.0f}"
        if len(reached) >= 2:
            interval = multibootstrap(reached, statistic=np.median, random_state=random_state)
            line += f" [{interval.low:,.0f}, {interval.high:,.0f}] (median, 95% CI over the seeds that reach it)"
    return (line + f"; final UAS {table['final_uas'].median():.2f} vs offset {table['offset_uas'].median():.2f}, "
            f"largest margin {table['max_margin'].median():+.2f} (medians)")


def uas_matrix(scalars: pd.DataFrame) -> pd.DataFrame:
    """UAS per attention head and checkpoint: rows (member, head) with heads ordered by layer then head
    ("L0H0", "L0H1", ...), columns the checkpoint steps (sorted), values the `uas/L{l}H{h}` scalars; after each
    member's rows come the rows of member "median", the median over members at each head and step. `uas/best` is
    not a head and is left out. Empty frame when no head's UAS is recorded."""
    rows = scalars[scalars["name"].str.fullmatch(HEAD_PATTERN.pattern)]
    if rows.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_arrays([[], []], names=["member", "head"]))
    heads = sorted(rows["name"].unique(), key=lambda name: tuple(map(int, HEAD_PATTERN.fullmatch(name).groups())))
    rows = rows.assign(head=rows["name"].str.removeprefix(UAS_PREFIX))
    labels = [name.removeprefix(UAS_PREFIX) for name in heads]
    wide = rows.pivot_table(index=["member", "head"], columns="step", values="value", aggfunc="last")
    members = np.sort(rows["member"].unique())
    wide = wide.reindex(pd.MultiIndex.from_product([members, labels], names=["member", "head"]))
    median = wide.groupby(level="head", sort=False).median().reindex(labels)
    median.index = pd.MultiIndex.from_product([["median"], labels], names=["member", "head"])
    matrix = pd.concat([wide, median])
    matrix.columns.name = "step"
    return matrix
