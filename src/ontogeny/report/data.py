"""What the report plots, read from a run: small frames only, downsampled inside DuckDB.

Per-example data can be 64M rows (32 members x 10k examples x 200 checkpoints), so nothing here loads the
`examples` table into pandas: queries aggregate or pick rows (one member, chosen examples, chosen steps) first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..analysis.summary import grid_columns, member_summary
from ..store import Run

MAX_CURVE_STEPS = 400  # checkpoints per curve; beyond this, steps are picked evenly in log(step + 1)
MAX_RASTER_ROWS = 400  # examples (or subsets) per raster, picked evenly over the onset order
MAX_RASTER_STEPS = 200  # checkpoints per raster, picked evenly in log(step + 1)
SUBSET_LEARNED = 0.9  # fallback subset onset: accuracy stays at or above this from then on


@dataclass
class Raster:
    """One member's per-example (or per-subset) curves on one split, rows sorted by onset step.

    `values` [R, S] (correct as 0/1, or subset accuracy) at `steps` [S] for `labels` [R] with `onsets` [R]
    (NaN: never learned); `aggregate` [S_all] is the mean over every example at `aggregate_steps` [S_all].
    `n_rows` / `n_steps` count what the run holds before downsampling.
    """

    member: int
    split: str
    level: str  # "example" or "subset"
    steps: np.ndarray
    labels: np.ndarray
    onsets: np.ndarray
    values: np.ndarray
    aggregate_steps: np.ndarray
    aggregate: np.ndarray
    n_rows: int
    n_steps: int
    onset_source: str


def log_even(steps, n: int) -> np.ndarray:
    """Pick at most `n` of the sorted distinct `steps`, evenly spaced in log(step + 1), always keeping the ends."""
    steps = np.unique(np.asarray(steps))
    if len(steps) <= n:
        return steps
    targets = np.linspace(np.log1p(steps[0]), np.log1p(steps[-1]), n)
    return np.unique(steps[np.abs(np.log1p(steps)[None, :] - targets[:, None]).argmin(axis=1)])


def even_rows(n_rows: int, n: int) -> np.ndarray:
    """Indices of at most `n` rows of `n_rows`, evenly spaced (first and last kept)."""
    return np.arange(n_rows) if n_rows <= n else np.unique(np.linspace(0, n_rows - 1, n).round().astype(int))


def has_rows(run: Run, table: str) -> bool:
    """Whether the streamed table `table` (scalars or examples) has any row yet."""
    return not run.sql(f"SELECT 1 AS one FROM {table} LIMIT 1").empty


def scalar_names(run: Run) -> list[str]:
    """The distinct scalar names of the run, sorted."""
    if not has_rows(run, "scalars"):
        return []
    return run.sql("SELECT DISTINCT name FROM scalars ORDER BY name").name.tolist()


def sweep_keys(run: Run) -> list[str]:
    """The members' setting columns that vary: the grid's axes (see `analysis.summary.grid_columns`)."""
    return grid_columns(run.members())


def summary(run: Run) -> pd.DataFrame:
    """One row per member: member_summary's columns plus the diverged step and each swept value."""
    members = run.members()
    table = member_summary(run.scalars(name=["train/acc", "test/acc"]), members)
    keys = sweep_keys(run)
    extra = members.set_index("member")[["diverged_step", *keys]]
    return table.join(extra, on="member")


def curves(run: Run, names: list[str], max_steps: int = MAX_CURVE_STEPS,
           members: list[int] | None = None) -> tuple[pd.DataFrame, int]:
    """Rows (member, step, name, value) of the scalars `names` (of `members` only, if given), at most `max_steps`
    steps per curve.

    Returns the frame and the number of distinct steps the run holds (more than `max_steps`: downsampled).
    """
    frame = run.scalars(name=names, member=members)
    all_steps = frame.step.unique() if members is None else curve_steps(run, names)
    kept = log_even(all_steps, max_steps)
    if len(kept) < len(all_steps):
        frame = frame[frame.step.isin(kept)]
    return frame.reset_index(drop=True), len(all_steps)


def curve_steps(run: Run, names: list[str]) -> np.ndarray:
    """The distinct steps at which any of the scalars `names` was recorded, sorted."""
    return run.sql("SELECT DISTINCT step FROM scalars WHERE list_contains($names, name) ORDER BY step",
                   {"names": list(names)}).step.to_numpy()


def drawn_members(configs: pd.Series, per_group: int) -> list[int]:
    """At most `per_group` members of each grid point (`configs`: member -> label), spread evenly over their ids:
    the members whose own lines a large run's figures draw."""
    drawn = []
    for _, group in configs.groupby(configs, sort=False):
        ids = np.sort(group.index.to_numpy())
        drawn.extend(int(m) for m in ids[even_rows(len(ids), per_group)])
    return sorted(drawn)


def grid_spread(run: Run, names: list[str], configs: pd.Series, steps: np.ndarray) -> pd.DataFrame:
    """Per (config, name, step) of the scalars `names` at `steps`, across a grid point's members (`configs`: member
    -> label): n, median, min, max, q25, q75 of the finite values, computed inside DuckDB (a run of 10,000 members
    never loads its curves into pandas for it)."""
    labels = pd.DataFrame({"member": configs.index.to_numpy(dtype=np.int64), "config": configs.to_numpy(dtype=str)})
    run.connection.register("report_configs", labels)
    try:
        return run.sql(
            "SELECT c.config, s.name, s.step, count(*) AS n, median(s.value) AS median, min(s.value) AS min, "
            "max(s.value) AS max, quantile_cont(s.value, 0.25) AS q25, quantile_cont(s.value, 0.75) AS q75 "
            "FROM scalars s JOIN report_configs c USING (member) WHERE list_contains($names, s.name) "
            "AND list_contains($steps, s.step) AND isfinite(s.value) GROUP BY ALL ORDER BY ALL",
            {"names": list(names), "steps": [int(step) for step in steps]})
    finally:
        run.connection.unregister("report_configs")


def example_steps(run: Run) -> np.ndarray:
    """The distinct checkpoint steps of the examples table, sorted."""
    return run.sql("SELECT DISTINCT step FROM examples ORDER BY step").step.to_numpy()


def example_splits(run: Run) -> list[str]:
    """The splits of the examples table, 'test' first."""
    splits = run.sql("SELECT DISTINCT split FROM examples").split.tolist()
    return sorted(splits, key=lambda s: (s != "test", s))


def example_onsets(run: Run, member: int | None = None, split: str | None = None) -> tuple[pd.DataFrame, str]:
    """Rows (member, split, example, onset) with onset NaN where never learned, and where the onsets come from.

    From the `example_dynamics` analysis table (aoa_step) when the run has it; otherwise computed here as the
    first checkpoint from which the example stays correct to the end.
    """
    if "example_dynamics" in run.tables():
        where, params = _where(member, split)
        frame = run.sql(f"SELECT member, split, example, CASE WHEN acquired THEN aoa_step END AS onset "
                        f"FROM example_dynamics {where}", params)
        return frame, "ontogeny analyze (example_dynamics.aoa_step)"
    where, params = _where(member, split)
    frame = run.sql(f"""SELECT member, split, example, max(step) FILTER (WHERE NOT correct) AS last_wrong,
                        max(step) AS last_step FROM examples {where} GROUP BY ALL""", params)
    steps = example_steps(run)
    last_wrong = frame.last_wrong.to_numpy(dtype=float, na_value=np.nan)
    following = np.searchsorted(steps, np.nan_to_num(last_wrong, nan=-1.0), side="right")
    onset = steps[np.minimum(following, len(steps) - 1)].astype(float)
    onset[following >= len(steps)] = np.nan
    onset[last_wrong >= frame.last_step.to_numpy(dtype=float)] = np.nan  # wrong at its last checkpoint
    frame["onset"] = onset
    return frame[["member", "split", "example", "onset"]], "first checkpoint from which the example stays correct"


def example_raster(run: Run, member: int, split: str, max_rows: int = MAX_RASTER_ROWS,
                   max_steps: int = MAX_RASTER_STEPS) -> Raster:
    """Correctness [R, S] of at most `max_rows` examples (evenly over the onset order) at `max_steps` steps."""
    onsets, source = example_onsets(run, member, split)
    onsets = onsets.sort_values(["onset", "example"], na_position="last", ignore_index=True)
    chosen = onsets.iloc[even_rows(len(onsets), max_rows)]
    all_steps = example_steps(run)
    steps = log_even(all_steps, max_steps)
    rows = run.sql("""SELECT example, step, correct::FLOAT AS value FROM examples
                      WHERE member = $member AND split = $split AND list_contains($examples, example)
                      AND list_contains($steps, step)""",
                   {"member": member, "split": split, "examples": chosen.example.tolist(), "steps": steps.tolist()})
    values = _matrix(rows, chosen.example.to_numpy(), steps, "example")
    aggregate = _aggregate_accuracy(run, member, split)
    return Raster(member, split, "example", steps, chosen.example.to_numpy(), chosen.onset.to_numpy(float), values,
                  aggregate.step.to_numpy(), aggregate.value.to_numpy(), len(onsets), len(all_steps), source)


def _aggregate_accuracy(run: Run, member: int, split: str) -> pd.DataFrame:
    """Rows (step, value): one member's accuracy over all probed examples of `split`."""
    return run.sql("""SELECT step, avg(correct::DOUBLE) AS value FROM examples
                      WHERE member = $member AND split = $split GROUP BY step ORDER BY step""",
                   {"member": member, "split": split})


def subset_curves(run: Run, member: int | None, split: str) -> pd.DataFrame:
    """Rows (member, subset, step, value): accuracy of each named subset over the probed examples."""
    where = "WHERE e.split = $split" + (" AND e.member = $member" if member is not None else "")
    params = {"split": split} | ({"member": member} if member is not None else {})
    return run.sql(f"""SELECT e.member, s.subset, e.step, avg(e.correct::DOUBLE) AS value
                       FROM examples e JOIN subsets s ON e.split = s.split AND e.example = s.example
                       {where} GROUP BY ALL ORDER BY e.member, s.subset, e.step""", params)


def subset_onsets(run: Run, split: str, member: int | None = None) -> tuple[pd.DataFrame, str]:
    """Rows (member, subset, onset): from the `subset_onsets` analysis table, else the first checkpoint from
    which the subset's accuracy stays at or above SUBSET_LEARNED (NaN: never)."""
    if "subset_onsets" in run.tables():
        frame = run.table("subset_onsets")
        frame = frame[(frame.split == split) & ((frame.member == member) if member is not None else True)]
        return (frame.rename(columns={"onset_step": "onset"})[["member", "subset", "onset"]],
                "ontogeny analyze (subset_onsets.onset_step)")
    curves_ = subset_curves(run, member, split)
    rows = []
    for (m, subset), curve in curves_.groupby(["member", "subset"], sort=True):
        below = np.flatnonzero(curve.value.to_numpy() < SUBSET_LEARNED)
        steps = curve.step.to_numpy()
        first = 0 if len(below) == 0 else below[-1] + 1
        rows.append((m, subset, float(steps[first]) if first < len(steps) else np.nan))
    return (pd.DataFrame(rows, columns=["member", "subset", "onset"]),
            f"first checkpoint from which subset accuracy stays >= {SUBSET_LEARNED:.0%}")


def subset_raster(run: Run, member: int, split: str, max_rows: int = MAX_RASTER_ROWS,
                  max_steps: int = MAX_RASTER_STEPS) -> Raster:
    """Accuracy [R, S] of at most `max_rows` subsets of one member, sorted by onset, at `max_steps` steps."""
    onsets, source = subset_onsets(run, split, member)
    onsets = onsets.sort_values(["onset", "subset"], na_position="last", ignore_index=True)
    chosen = onsets.iloc[even_rows(len(onsets), max_rows)]
    curves_ = subset_curves(run, member, split)
    all_steps = np.unique(curves_.step)
    steps = log_even(all_steps, max_steps)
    rows = curves_[curves_.step.isin(steps)]
    values = _matrix(rows, chosen.subset.to_numpy(), steps, "subset")
    aggregate = _aggregate_accuracy(run, member, split)
    return Raster(member, split, "subset", steps, chosen.subset.to_numpy(), chosen.onset.to_numpy(float), values,
                  aggregate.step.to_numpy(), aggregate.value.to_numpy(), len(onsets), len(all_steps), source)


def phase_table(run: Run, table: pd.DataFrame) -> pd.DataFrame:
    """Per grid point (one column per swept key): n_members, share generalized, median delay (steps).

    `table` is `summary(run)`; memorization/generalization come from the `grokking` analysis table if present.
    """
    keys = sweep_keys(run)
    frame = table[["member", *keys]].copy()
    if "grokking" in run.tables():
        grok = run.table("grokking").set_index("member")
        frame["generalization"] = frame.member.map(grok.generalization_step)
        frame["delay"] = frame.member.map(grok.delay)
    else:
        frame["generalization"] = table.generalization.astype(float)
        frame["delay"] = (table.generalization - table.memorization).astype(float)
    frame["generalized"] = frame.generalization.notna()
    grouped = frame.groupby(keys, sort=True)
    return grouped.agg(n_members=("member", "size"), share=("generalized", "mean"),
                       median_delay=("delay", "median")).reset_index()


def cartography(run: Run, max_points: int) -> tuple[pd.DataFrame, int]:
    """A reproducible random sample of at most `max_points` rows of `example_dynamics` and the total row count."""
    total = int(run.sql("SELECT count(*) AS n FROM example_dynamics").n.iloc[0])
    frame = run.sql("""SELECT member, split, example, confidence, variability, correctness FROM example_dynamics
                       ORDER BY hash(member, split, example) LIMIT $n""", {"n": max_points})
    return frame, total


def _where(member: int | None, split: str | None) -> tuple[str, dict]:
    clauses, params = [], {}
    if member is not None:
        clauses.append("member = $member")
        params["member"] = int(member)
    if split is not None:
        clauses.append("split = $split")
        params["split"] = split
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _matrix(rows: pd.DataFrame, labels: np.ndarray, steps: np.ndarray, key: str) -> np.ndarray:
    """Scatter rows (key, step, value) into a float32 matrix [len(labels), len(steps)], NaN where missing."""
    values = np.full((len(labels), len(steps)), np.nan, dtype=np.float32)
    row_of = pd.Series(np.arange(len(labels)), index=labels)
    i = row_of.reindex(rows[key].to_numpy()).to_numpy()
    j = np.searchsorted(steps, rows.step.to_numpy())
    ok = ~np.isnan(i.astype(float))
    values[i[ok].astype(int), j[ok]] = rows.value.to_numpy()[ok]
    return values
