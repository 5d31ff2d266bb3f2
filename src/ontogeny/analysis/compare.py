"""Two runs compared: the difference of a metric between them, per subset, with a verdict valid at 4-8 seeds.

A metric is read per member at the final checkpoint, at a given step, or as its onset (the first checkpoint where
it has covered half its change from the first checkpoint to the last). Members are paired by seed (init seed,
data seed) when both runs have the same seeds, and taken as two independent samples otherwise.

At the seed counts people use, a bootstrap over seeds is too narrow (its 95% interval covered 81% at 4 seeds), so
the interval is Student's t on the paired differences (Welch's for unpaired runs), and the test is exact: every
sign flip of the paired differences (every relabelling of the two runs' members), through scipy's
`permutation_test`. A verdict claims a difference only when both agree, and says so when the seeds are too few for
any exact test to reach p < 0.05 (fewer than 6 pairs). Coverage and false verdicts by n, from simulations:
`benchmarks/compare_calibration.py`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ..store import Run
from ._common import t_interval
from .summary import grid_columns

ALPHA = 0.05
EXACT_RESAMPLES = 1 << 16  # every sign flip up to 16 pairs (every relabelling up to 9 + 9 members); beyond:
RANDOM_RESAMPLES = 9_999  # a Monte Carlo test (p's resolution 1e-4)

MIN_ACC_CHANGE = 0.1  # an accuracy curve that moves less than this has no onset (it never learned)
COLUMNS = ["metric", "at", "paired", "n_a", "n_b", "a", "b", "difference", "low", "high", "p_value", "verdict"]


def member_values(scalars: pd.DataFrame, members: pd.DataFrame, metric: str, at: str | int) -> pd.Series:
    """One value per member that did not diverge, indexed by (init_seed, data_seed): the metric at the final
    checkpoint (`"final"`), at a step, or its onset step (`"onset"`). ValueError (one line) for a step not
    recorded."""
    ok = members[members.status != "diverged"].set_index("member")
    rows = scalars[(scalars.name == metric) & scalars.member.isin(ok.index)].sort_values("step")
    values = {}
    for member, curve in rows.groupby("member"):
        steps, series = curve.step.to_numpy(), curve.value.to_numpy(dtype=float)
        if at == "final":
            values[member] = series[-1]
        elif at == "onset":
            values[member] = _onset(steps, series, MIN_ACC_CHANGE if metric.endswith("acc") else 0.0)
        else:
            if int(at) not in set(steps):
                raise ValueError(f"{metric} is not recorded at step {at} (recorded: {steps.min()}..{steps.max()}, "
                                 f"{len(steps)} checkpoints)")
            values[member] = series[steps == int(at)][0]
    index = pd.MultiIndex.from_frame(ok.loc[list(values), ["init_seed", "data_seed"]])
    return pd.Series(list(values.values()), index=index, name=metric, dtype=float)


def _onset(steps: np.ndarray, values: np.ndarray, min_change: float = 0.0) -> float:
    """First step where the curve has covered half its change from first to last value (NaN for a change of at most
    `min_change`)."""
    start, end = values[0], values[-1]
    if not np.isfinite(start) or not np.isfinite(end) or abs(end - start) <= min_change:
        return np.nan
    covered = (values - start) / (end - start)
    return float(steps[np.argmax(covered >= 0.5)])


def compare_values(a: pd.Series, b: pd.Series, *, metric: str, at: str | int, random_state: int = 0,
                   subject: str = "B") -> dict:
    """B minus A of per-member values (indexed by seed): a row of COLUMNS (low, high: the 95% t interval;
    p_value: the exact permutation test), with a plain-language verdict whose subject (what B is) is `subject`."""
    a, b = a.dropna(), b.dropna()
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"{metric} at {at}: need at least 2 members with a value on each side (got {len(a)} and "
                         f"{len(b)})")
    paired = set(a.index) == set(b.index) and not a.index.has_duplicates
    difference, low, high, p_value, smallest = _paired(b - a.loc[b.index]) if paired else _unpaired(a, b)
    row = {"metric": metric, "at": str(at), "paired": paired, "n_a": len(a), "n_b": len(b), "a": float(a.mean()),
           "b": float(b.mean()), "difference": difference, "low": low, "high": high, "p_value": p_value}
    row["verdict"] = _verdict(row, (b - a.loc[b.index]) if paired else None, subject, smallest)
    return row


def _paired(differences: pd.Series) -> tuple[float, float, float, float, float]:
    """(mean, t interval low, high, exact sign-flip p, the smallest p any sign-flip test can give at this n)."""
    d = differences.to_numpy(dtype=float)
    n = len(d)
    test = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=_resamples(2**n),
                                  random_state=0)
    return float(d.mean()), *t_interval(d, 1 - ALPHA), float(test.pvalue), min(1.0, 2 / 2**n)


def _unpaired(a: pd.Series, b: pd.Series) -> tuple[float, float, float, float, float]:
    """(difference of means, Welch's t interval low, high, exact permutation p, the smallest p possible)."""
    x, y = b.to_numpy(dtype=float), a.to_numpy(dtype=float)
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1)) if se > 0 else len(x) + len(y) - 2
    difference = float(x.mean() - y.mean())
    half = stats.t.ppf(1 - ALPHA / 2, df) * se
    test = stats.permutation_test((x, y), lambda u, v, axis: u.mean(axis) - v.mean(axis),
                                  permutation_type="independent", vectorized=True, random_state=0,
                                  n_resamples=_resamples(math.comb(len(x) + len(y), len(x))))
    smallest = min(1.0, 2 / math.comb(len(x) + len(y), len(x)))
    return difference, difference - half, difference + half, float(test.pvalue), smallest


def _resamples(distinct: int) -> int:
    """Every one of `distinct` relabellings where there are few enough (scipy then runs the exact test)."""
    return EXACT_RESAMPLES if distinct <= EXACT_RESAMPLES else RANDOM_RESAMPLES


def _verdict(row: dict, differences: pd.Series | None, subject: str, smallest: float) -> str:
    what = f"the onset of {row['metric']}" if row["at"] == "onset" else f"{row['metric']} at {row['at']}"
    unit = " steps" if row["at"] == "onset" else ""
    interval = f"[{row['low']:,.4g}, {row['high']:,.4g}]"
    seeds = (f"{int((differences > 0).sum()) if row['difference'] > 0 else int((differences < 0).sum())}/"
             f"{len(differences)} seeds" if differences is not None else
             f"{row['n_a']} vs {row['n_b']} seeds, unpaired")
    estimate = f"B - A = {row['difference']:+,.4g}{unit} {interval}"
    if smallest > ALPHA:
        n = f"{len(differences)} paired seeds" if differences is not None else f"{row['n_a']} vs {row['n_b']} seeds"
        return (f"too few seeds to show a difference in {what}: with {n} no exact test can reach p < {ALPHA:g} "
                f"(smallest p = {smallest:.2g}); {estimate} (95% t interval; {seeds})")
    if row["low"] <= 0 <= row["high"] or row["p_value"] >= ALPHA:
        why = "95% CI includes 0" if row["low"] <= 0 <= row["high"] else f"exact test p >= {ALPHA:g}"
        return f"no difference shown in {what}: {estimate} ({why}, p = {row['p_value']:.2g}; {seeds})"
    if row["at"] == "onset":
        verb = "delays" if row["difference"] > 0 else "advances"
        return (f"{subject} {verb} {what} by {abs(row['difference']):,.4g} steps {interval} "
                f"(p = {row['p_value']:.2g}) in {seeds}")
    verb = "raises" if row["difference"] > 0 else "lowers"
    return f"{subject} {verb} {what} by {abs(row['difference']):,.4g} {interval} (p = {row['p_value']:.2g}) in {seeds}"


def compare_runs(run_a: Run, run_b: Run, *, metric: str = "test/acc", at: str | int = "final",
                 random_state: int = 0) -> pd.DataFrame:
    """The metric and each of its per-subset versions (split/subset/stat) present in both runs, B minus A, per grid
    point the runs share (column `where`; "" without a sweep)."""
    for run in (run_a, run_b):
        if run.has_spec is False and not run.producer:
            raise ValueError(f"{run.path}: not an ontogeny run")
    task_a, task_b = _task(run_a), _task(run_b)
    if task_a != task_b:
        raise ValueError(f"runs that cannot be compared: different tasks ({task_a} in {run_a.path}, {task_b} in "
                         f"{run_b.path})")
    scalars_a, scalars_b = run_a.scalars(), run_b.scalars()
    names_a, names_b = set(scalars_a.name), set(scalars_b.name)
    if metric not in names_a or metric not in names_b:
        missing = run_a.path if metric not in names_a else run_b.path
        raise ValueError(f"{missing}: no scalar {metric!r} (recorded: {', '.join(sorted(names_a & names_b)[:12])})")
    split, _, stat = metric.partition("/")
    subsets = sorted(n for n in names_a & names_b
                     if n.startswith(f"{split}/") and n.endswith(f"/{stat}") and n.count("/") == 2)
    members_a, members_b = run_a.members(), run_b.members()
    points_a, points_b = _grid_points(members_a, members_b)
    shared = sorted(set(points_a) & set(points_b))
    if not shared:
        raise ValueError(f"the runs share no grid point (A: {'; '.join(sorted(set(points_a)))}; B: "
                         f"{'; '.join(sorted(set(points_b)))})")
    rows = []
    for where in shared:  # a sweep is compared grid point by grid point, each paired by seed
        for name in [metric, *subsets]:
            a = member_values(scalars_a, members_a[points_a == where], name, at)
            b = member_values(scalars_b, members_b[points_b == where], name, at)
            rows.append({"where": where, **compare_values(a, b, metric=name, at=at, random_state=random_state)})
    return pd.DataFrame(rows, columns=["where", *COLUMNS])


def _grid_points(*tables: pd.DataFrame) -> list[np.ndarray]:
    """Each member's grid point in each members table: its values of the settings that vary within any of the runs
    ("" for every member where none does)."""
    settings = sorted({column for table in tables for column in grid_columns(table)})
    return [np.array([", ".join(f"{c}={row.get(c)}" for c in settings) for _, row in table.iterrows()])
            for table in tables]


def _task(run: Run) -> str:
    if run.has_spec:
        return run.spec.task.name
    return str(run.producer.get("kind", "?"))


INTERVENTION = "task.intervention"


def intervention_effects(scalars: pd.DataFrame, members: pd.DataFrame, *, metric: str = "test/acc",
                         random_state: int = 0) -> pd.DataFrame:
    """Every arm of a data-intervention sweep against the baseline arm ("" in `task.intervention`), paired by seed:
    the metric and its per-subset versions at the final checkpoint and as onsets. Rows: `arm` then COLUMNS.
    A sweep over other settings too is compared within each of their grid points (`where`)."""
    others = [c for c in members.columns if c.startswith(("task.", "model.", "optim.")) and c != INTERVENTION
              and members[c].astype(str).nunique() > 1]
    split, _, stat = metric.partition("/")
    names = [metric, *sorted(n for n in scalars.name.unique()
                             if n.startswith(f"{split}/") and n.endswith(f"/{stat}") and n.count("/") == 2)]
    rows = []
    for point, group in members.groupby(others, sort=True) if others else [((), members)]:
        where = ", ".join(f"{k}={v}" for k, v in zip(others, point if isinstance(point, tuple) else (point,)))
        base = group[group[INTERVENTION] == ""]
        for arm in sorted(set(group[INTERVENTION]) - {""}):
            chosen = group[group[INTERVENTION] == arm]
            for at in ("final", "onset"):
                for name in names:
                    a, b = (member_values(scalars, side, name, at) for side in (base, chosen))
                    if a.notna().sum() < 2 or b.notna().sum() < 2:
                        continue  # e.g. a subset whose curve never moves has no onset
                    row = compare_values(a, b, metric=name, at=at, random_state=random_state, subject=repr(arm))
                    rows.append({"where": where, "arm": arm, **row})
    return pd.DataFrame(rows, columns=["where", "arm", *COLUMNS])
