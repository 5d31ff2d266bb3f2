"""Scaling axes: final loss over a width x unique-data grid, power-law fits, and what a repeated epoch is worth.

A scaling run trains every grid point (width, `task.n_train`) for the same steps and batch size, so the same
compute: samples seen = steps x B, epochs E = steps x B / n_train over a fixed set (n_train = 0: fresh samples).
- Per grid point: final test loss and accuracy, median over seeds with a Multi-Bootstrap CI.
- Power laws L = a x^-alpha, fitted by least squares in log-log on the per-grid-point medians: loss vs width at
  each n_train, loss vs unique examples (n_train > 0) at each width. No irreducible term: the tasks this targets
  (sparse parity, multitask sparse parity) label each input deterministically, so the Bayes loss is 0, and with 3-5
  points per axis a free
  offset trades off against alpha (an unstable three-parameter fit). Medians <= 0 (hinge loss can reach 0) have
  no logarithm and are left out of a fit.
- Repeated vs fresh data at matched compute (Muennighoff et al. 2023, "Scaling data-constrained language models"):
  each repeated member's final test loss is found on the fresh-data (n_train = 0) curve of the same width and init
  seed; the fresh samples seen when it is first reached are the effective data D'. D' / n_train is "worth ~x
  epochs of fresh data"; w = (D' - n_train) / (n_train (E - 1)) is the worth of each repeated epoch (1: as good
  as new data). A fresh curve that never reaches the target censors D' at the whole budget (a lower bound).
  Their form D' = U + U R* (1 - exp(-R / R*)), R = E - 1, U = n_train, is fitted for R* per width.
CIs over seeds: a quantity of one grid point uses `multibootstrap` over that grid point's seeds. A fit spans grid
points: when they all hold the same init seeds (the Multi-Bootstrap's paired design), each seed is fitted on its
own and the interval is a t interval over seeds (alpha, log R*), which keeps 0.92-0.96 coverage at 4-16 seeds
(benchmarks/scaling_calibration.py); else each draw resamples each grid point's seeds and refits (percentile).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import log_step, step_from_log, t_interval
from .bootstrap import multibootstrap
from .summary import grid_columns

WIDTH_KEYS = ("model.width", "model.d_model")  # the first one the members table has is the width axis
DATA_KEY, BATCH_KEY = "task.n_train", "task.batch_size"
LOSS, ACC = "test/loss", "test/acc"
NEAR_FRESH_EPOCHS = 4  # Muennighoff et al. 2023: up to ~4 epochs, repeated data is almost as good as new
NEAR_FRESH_WORTH = 0.9  # "almost as much as fresh data": each repeated epoch worth at least this share of a new one
R_STAR_GRID = np.geomspace(1e-2, 1e4, 2001)  # R* candidates (0.7% apart): a grid fits every bootstrap draw at once

OUTCOME_COLUMNS = ["member", "init_seed", "width", "n_train", "batch_size", "last_step", "samples_seen",
                   "epochs", "final_loss", "final_acc"]
POINT_COLUMNS = ["width", "n_train", "unique_examples", "samples_seen", "epochs", "n_members", "loss", "loss_low",
                 "loss_high", "acc", "acc_low", "acc_high"]
FIT_COLUMNS = ["fit", "at", "x", "n_points", "a", "alpha", "alpha_low", "alpha_high", "r_squared"]
REPEAT_COLUMNS = ["width", "n_train", "epochs", "repetitions", "n_members", "n_paired", "n_censored",
                  "effective_data", "effective_data_low", "effective_data_high", "effective_epochs",
                  "effective_epochs_low", "effective_epochs_high", "worth", "worth_low", "worth_high", "r_star",
                  "r_star_low", "r_star_high", "r_star_log_rms", "worth_at_4", "worth_at_4_low", "worth_at_4_high"]


def scaling_axes(members: pd.DataFrame) -> tuple[str | None, str | None]:
    """(width key, problem): width key None and problem None when the run is no scaling run (no `task.n_train`, or
    neither it nor the width varies), a one-line problem when it is one this analysis cannot read."""
    width_key = next((key for key in WIDTH_KEYS if key in members), None)
    if DATA_KEY not in members or width_key is None:
        return None, None
    if members[DATA_KEY].nunique() < 2 and members[width_key].nunique() < 2:
        return None, None
    if BATCH_KEY not in members:
        return None, f"scaling: skipped (the members table has no {BATCH_KEY}: samples seen are unknown)"
    other = [c for c in _grid_columns(members) if c not in (width_key, DATA_KEY)]
    if other:
        return None, (f"scaling: skipped (the grid also varies {', '.join(other)}; the scaling analysis needs a "
                      f"{width_key} x {DATA_KEY} grid at one batch size and compute)")
    return width_key, None


def _grid_columns(members: pd.DataFrame) -> list[str]:
    return grid_columns(members.drop(columns="config", errors="ignore"))


def member_outcomes(scalars: pd.DataFrame, members: pd.DataFrame, width_key: str = "model.width") -> pd.DataFrame:
    """One row per member with a test/loss curve (OUTCOME_COLUMNS): its grid point, last recorded step, samples
    seen there (last_step x batch size), epochs over its fixed set (NaN for fresh data) and final test loss and
    accuracy (NaN if test/acc is not recorded)."""
    last = scalars[scalars["name"].isin([LOSS, ACC])].sort_values("step").groupby(["member", "name"]).last()
    final = last["value"].unstack("name").reindex(columns=[LOSS, ACC])
    steps = last["step"].unstack("name")[LOSS]
    table = members.set_index("member").loc[final.index.intersection(members["member"])]
    out = pd.DataFrame({"member": table.index, "init_seed": table["init_seed"].to_numpy(),
                        "width": table[width_key].to_numpy(), "n_train": table[DATA_KEY].to_numpy(dtype=int),
                        "batch_size": table[BATCH_KEY].to_numpy(dtype=int),
                        "last_step": steps.loc[table.index].to_numpy(dtype=int)})
    out["samples_seen"] = out["last_step"] * out["batch_size"]
    out["epochs"] = np.where(out["n_train"] > 0, out["samples_seen"] / out["n_train"].where(out["n_train"] > 0),
                             np.nan)
    out["final_loss"] = final.loc[table.index, LOSS].to_numpy(dtype=float)
    out["final_acc"] = final.loc[table.index, ACC].to_numpy(dtype=float)
    return out[OUTCOME_COLUMNS].dropna(subset=["final_loss"]).reset_index(drop=True)


def _median_ci(values: np.ndarray, *, n_boot: int, ci: float, random_state) -> tuple[float, float, float]:
    """(median, low, high) over seeds; no interval from fewer than two seeds."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    if len(values) < 2:
        return float(values[0]), np.nan, np.nan
    fit = multibootstrap(values, n_boot=n_boot, ci=ci, statistic=np.median, random_state=random_state)
    return fit.estimate, fit.low, fit.high


def grid_points(outcomes: pd.DataFrame, *, n_boot: int = 2000, ci: float = 0.95, random_state=None) -> pd.DataFrame:
    """One row per grid point (POINT_COLUMNS): final test loss and accuracy, median and CI over seeds; unique
    examples is n_train, or the samples seen for fresh data (or for a set bigger than the samples seen)."""
    records = []
    for (width, n_train), rows in outcomes.groupby(["width", "n_train"], sort=True):
        seen = float(rows["samples_seen"].median())
        loss = _median_ci(rows["final_loss"], n_boot=n_boot, ci=ci, random_state=random_state)
        acc = _median_ci(rows["final_acc"], n_boot=n_boot, ci=ci, random_state=random_state)
        unique = min(n_train, seen) if n_train > 0 else seen
        records.append({"width": width, "n_train": n_train, "unique_examples": unique,
                        "samples_seen": seen, "epochs": seen / n_train if n_train > 0 else np.nan,
                        "n_members": len(rows), "loss": loss[0], "loss_low": loss[1], "loss_high": loss[2],
                        "acc": acc[0], "acc_low": acc[1], "acc_high": acc[2]})
    return pd.DataFrame(records, columns=POINT_COLUMNS)


# ---- seed resampling shared by every fit ----------------------------------------------------------------------


def seed_counts(n_labels: int, *, n_boot: int, random_state=None) -> np.ndarray:
    """How often each init-seed label is drawn in each of n_boot resamples with replacement: [n_boot, n_labels]."""
    rng = np.random.default_rng(random_state)
    draws = rng.integers(0, n_labels, size=(n_boot, n_labels))
    counts = np.zeros((n_boot, n_labels))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts


def weighted_medians(values: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The median of `values` [N] when the value of label labels[i] is repeated counts[b, labels[i]] times, per draw
    b: [n_boot] (numpy's median of the repeated values; NaN when a draw holds none of them)."""
    order = np.argsort(values, kind="stable")
    values, weights = np.asarray(values, dtype=float)[order], counts[:, np.asarray(labels)[order]]  # [N], [B, N]
    cumulative = np.cumsum(weights, axis=1)  # [B, N]
    total = cumulative[:, -1] if len(values) else np.zeros(len(counts))
    low_rank, high_rank = (total - 1) // 2, total // 2  # 0-based ranks of the two middle values
    low = np.argmax(cumulative > low_rank[:, None], axis=1)
    high = np.argmax(cumulative > high_rank[:, None], axis=1)
    medians = (values[low] + values[high]) / 2 if len(values) else np.full(len(counts), np.nan)
    return np.where(total > 0, medians, np.nan)


def resampled_medians(outcomes: pd.DataFrame, group: str, value: str, *, n_boot: int,
                      random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """Per level of `group` (sorted): its median of `value` under each of n_boot seed resamples: (levels [G],
    medians [n_boot, G]). Levels that share their init seeds are resampled with one draw of seed labels for all
    (the Multi-Bootstrap's paired design); otherwise each level's members are resampled on their own (unpaired)."""
    rows = outcomes[np.isfinite(outcomes[value])]
    levels = np.sort(rows[group].unique())
    seed_sets = {frozenset(rows.loc[rows[group] == level, "init_seed"]) for level in levels}
    if len(seed_sets) == 1:  # paired: every level holds the same seeds
        labels = pd.Index(np.sort(rows["init_seed"].unique()))
        counts = seed_counts(len(labels), n_boot=n_boot, random_state=random_state)
        columns = [weighted_medians(part[value].to_numpy(), labels.get_indexer(part["init_seed"]), counts)
                   for part in (rows[rows[group] == level] for level in levels)]
    else:
        rng = np.random.default_rng(random_state)
        columns = []
        for level in levels:
            part = rows[rows[group] == level]
            counts = seed_counts(len(part), n_boot=n_boot, random_state=rng)
            columns.append(weighted_medians(part[value].to_numpy(), np.arange(len(part)), counts))
    return levels, np.stack(columns, axis=1) if columns else np.empty((n_boot, 0))


def _has_several_seeds(rows: pd.DataFrame, group: str) -> bool:
    """Whether every level of `group` holds at least two members (else a seed resample has nothing to vary)."""
    return bool(len(rows)) and int(rows.groupby(group).size().min()) >= 2


# ---- power laws ---------------------------------------------------------------------------------------------


def power_law(x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares fits of log y = log a - alpha log x, over the positive finite points of each row:
    x [G], y [G] or [n_boot, G] -> (a, alpha, r_squared), each [] or [n_boot]; NaN with fewer than 2 points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    single = y.ndim == 1
    y = np.atleast_2d(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        usable = np.isfinite(y) & (y > 0) & (x > 0)  # [B, G]
        log_x, log_y = np.where(usable, np.log(np.where(x > 0, x, 1.0)), 0.0), np.where(usable, np.log(y), 0.0)
        n = usable.sum(axis=1)
        mean_x, mean_y = log_x.sum(axis=1) / n, log_y.sum(axis=1) / n
        dx, dy = np.where(usable, log_x - mean_x[:, None], 0.0), np.where(usable, log_y - mean_y[:, None], 0.0)
        sxx, sxy, syy = (dx * dx).sum(axis=1), (dx * dy).sum(axis=1), (dy * dy).sum(axis=1)
        slope = sxy / sxx
        r_squared = np.where(syy > 0, sxy**2 / (sxx * syy), 1.0)
        a = np.exp(mean_y - slope * mean_x)
    bad = (n < 2) | (sxx <= 0)
    a, alpha, r_squared = (np.where(bad, np.nan, v) for v in (a, -slope, r_squared))
    return (a[0], alpha[0], r_squared[0]) if single else (a, alpha, r_squared)


def power_law_fits(outcomes: pd.DataFrame, *, n_boot: int = 2000, ci: float = 0.95,
                   random_state=None) -> pd.DataFrame:
    """FIT_COLUMNS: "loss vs width" at each n_train (fresh data included) and "loss vs unique examples" at each
    width (n_train > 0 and at least one epoch: a set never seen whole has fewer unique examples). When every grid
    point holds the same init seeds (paired), each seed's own curve is fitted and alpha is their mean, with a t
    interval over seeds (the percentile bootstrap covered a planted exponent 0.865 of the time at 4 seeds); else
    the fit is on the median final test loss per grid point, with its CI from refits on seed resamples."""
    records = []
    for fit, at_key, x_key, rows in [
            ("loss vs width", "n_train", "width", outcomes),
            ("loss vs unique examples", "width", "n_train", outcomes[(outcomes["n_train"] > 0)
                                                                     & (outcomes["epochs"] >= 1)])]:
        for at, group in rows.groupby(at_key, sort=True):
            x = np.sort(group[x_key].unique())
            if len(x) < 2:
                continue
            medians = np.array([group.loc[group[x_key] == level, "final_loss"].median() for level in x])
            per_seed = _per_seed(group, x_key, "final_loss")
            if per_seed is not None:
                a, alpha, r_squared = power_law(x, np.exp(np.log(per_seed).mean(axis=0)))
                low, high = t_interval(power_law(x, per_seed)[1], ci)
            else:
                a, alpha, r_squared = power_law(x, medians)
                _, draws = resampled_medians(group, x_key, "final_loss", n_boot=n_boot, random_state=random_state)
                alphas = power_law(x, draws)[1]
                alphas = alphas[np.isfinite(alphas)]
                low, high = (np.quantile(alphas, [(1 - ci) / 2, (1 + ci) / 2])
                             if len(alphas) and _has_several_seeds(group, x_key) else (np.nan, np.nan))
            records.append({"fit": fit, "at": at, "x": x_key, "n_points": int(np.sum(medians > 0)), "a": float(a),
                            "alpha": float(alpha), "alpha_low": float(low), "alpha_high": float(high),
                            "r_squared": float(r_squared)})
    return pd.DataFrame(records, columns=FIT_COLUMNS)


def _per_seed(rows: pd.DataFrame, group: str, value: str) -> np.ndarray | None:
    """[seeds, levels of `group`] of `value` when at least two init seeds each have one positive finite value at
    every level (a paired design whose seeds can be fitted one by one), else None."""
    usable = rows[np.isfinite(rows[value]) & (rows[value] > 0)]
    table = usable.pivot_table(index="init_seed", columns=group, values=value, aggfunc="first")
    if table.shape[1] != rows[group].nunique() or usable.duplicated(["init_seed", group]).any():
        return None
    table = table.dropna()
    complete = len(table) == rows["init_seed"].nunique()
    return table.to_numpy(dtype=float) if complete and len(table) >= 2 else None


# ---- repeated vs fresh data -----------------------------------------------------------------------------------


def effective_data(steps, fresh_loss, target: float, batch_size: int) -> tuple[float, bool]:
    """(D', censored): the fresh samples (step x batch_size) at which `fresh_loss` [S] at checkpoints `steps` [S]
    first reaches `target` (<=), interpolated linearly in log(1 + step) between the checkpoints around the crossing
    (in log loss when all three losses are positive, so a power-law curve is followed exactly up to the +1). A
    curve that never reaches it gives the whole budget, steps[-1] x batch_size, and censored=True (D' is at least
    that)."""
    steps, loss = np.asarray(steps, dtype=float), np.asarray(fresh_loss, dtype=float)
    if steps.ndim != 1 or steps.shape != loss.shape or len(steps) == 0:
        raise ValueError(f"steps and fresh_loss must be 1-D of one length, got {steps.shape} and {loss.shape}")
    reached = np.flatnonzero(loss <= target)
    if len(reached) == 0:
        return float(steps[-1] * batch_size), True
    j = reached[0]
    if j == 0:
        return float(steps[0] * batch_size), False
    before, after, goal = loss[j - 1], loss[j], target
    if min(before, after, goal) > 0:
        before, after, goal = np.log(before), np.log(after), np.log(goal)
    share = (before - goal) / (before - after)  # before > goal >= after
    x = log_step(steps[j - 1]) + share * (log_step(steps[j]) - log_step(steps[j - 1]))
    return float(step_from_log(x) * batch_size), False


def repeat_members(scalars: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per repeated member (n_train > 0) with fresh-data members of its width: member, init_seed, width, n_train,
    epochs, effective_data, censored, paired (a fresh member of the same init seed; else the fresh members' median
    curve is used), effective_epochs (D' / n_train) and worth ((D' - n_train) / (n_train (E - 1)), NaN at E <= 1)."""
    curves = scalars[scalars["name"] == LOSS].pivot_table(index="step", columns="member", values="value")
    records = []
    fresh_all = outcomes[outcomes["n_train"] == 0]
    for row in outcomes[outcomes["n_train"] > 0].itertuples():
        fresh = fresh_all[fresh_all["width"] == row.width]
        if fresh.empty:
            continue
        twin = fresh[fresh["init_seed"] == row.init_seed]
        curve = curves[twin["member"].iloc[0]] if len(twin) else curves[fresh["member"]].median(axis=1)
        curve = curve.dropna()
        data, censored = effective_data(curve.index.to_numpy(), curve.to_numpy(), row.final_loss, row.batch_size)
        worth = (data - row.n_train) / (row.n_train * (row.epochs - 1)) if row.epochs > 1 else np.nan
        records.append({"member": row.member, "init_seed": row.init_seed, "width": row.width,
                        "n_train": row.n_train, "epochs": row.epochs, "effective_data": data,
                        "censored": censored, "paired": bool(len(twin)),
                        "effective_epochs": data / row.n_train, "worth": worth})
    return pd.DataFrame(records, columns=["member", "init_seed", "width", "n_train", "epochs", "effective_data",
                                          "censored", "paired", "effective_epochs", "worth"])


def muennighoff_epochs(repetitions, r_star) -> np.ndarray:
    """Effective epochs D' / U = 1 + R* (1 - exp(-R / R*)) (Muennighoff et al. 2023, eq. 5 over U), broadcast."""
    repetitions, r_star = np.asarray(repetitions, dtype=float), np.asarray(r_star, dtype=float)
    return 1.0 + r_star * -np.expm1(-repetitions / r_star)


def fit_r_star(repetitions, effective_epochs) -> np.ndarray:
    """R* minimizing the squared error of log effective epochs (relative error: the grid spans 1 to ~100 epochs),
    over R_STAR_GRID, per row: repetitions [G], effective_epochs [G] or [n_boot, G] -> [] or [n_boot]; points
    without a positive finite value are left out; NaN with none left. An R* at the grid's top end means
    indistinguishable from fresh data over the range."""
    repetitions = np.asarray(repetitions, dtype=float)
    observed = np.atleast_2d(np.asarray(effective_epochs, dtype=float))  # [B, G]
    usable = np.isfinite(observed) & (observed > 0) & (repetitions > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_observed = np.where(usable, np.log(observed), 0.0)
    model = np.log(muennighoff_epochs(repetitions[None, :], R_STAR_GRID[:, None]))  # [K, G]
    errors = np.einsum("bg,kg->bk", usable.astype(float), model**2) - 2 * (log_observed * usable) @ model.T
    best = R_STAR_GRID[np.argmin(errors, axis=1)]  # the sum of log_observed**2 is the same for every R*
    best = np.where(usable.any(axis=1), best, np.nan)
    return best[0] if np.ndim(effective_epochs) == 1 else best


def repeat_table(per_member: pd.DataFrame, *, n_boot: int = 2000, ci: float = 0.95,
                 random_state=None) -> pd.DataFrame:
    """REPEAT_COLUMNS, one row per repeated grid point: effective data, effective epochs and worth per epoch,
    median and CI over seeds (censored members count at their lower bound: a censored median is a lower bound),
    and per width the fitted R* (with the root mean square of its log residuals: the form cannot follow a worth
    below 1 at few epochs) and the worth of each repeated epoch it gives at NEAR_FRESH_EPOCHS epochs. R* is fitted
    per seed when every n_train holds the same init seeds (paired; the estimate is their geometric mean, with a t
    interval over seeds on log R*: the percentile bootstrap covered a planted R* 0.80 of the time at 4 seeds), else
    on the medians, with CIs from refits on seed resamples."""
    if per_member.empty:
        return pd.DataFrame(columns=REPEAT_COLUMNS)
    records = []
    for width, rows in per_member.groupby("width", sort=True):
        n_trains, draws = resampled_medians(rows, "n_train", "effective_epochs", n_boot=n_boot,
                                            random_state=random_state)
        epochs = np.array([rows.loc[rows["n_train"] == n, "epochs"].median() for n in n_trains])
        medians = np.array([rows.loc[rows["n_train"] == n, "effective_epochs"].median() for n in n_trains])
        per_seed = _per_seed(rows, "n_train", "effective_epochs")
        if per_seed is not None:
            log_r_stars = np.log(fit_r_star(epochs - 1, per_seed))
            r_star = float(np.exp(np.nanmean(log_r_stars)))
            r_low, r_high = np.exp(t_interval(log_r_stars, ci))
        else:
            r_star = fit_r_star(epochs - 1, medians)
            r_stars = fit_r_star(epochs - 1, draws)
            r_stars = r_stars[np.isfinite(r_stars)]
            r_low, r_high = (np.quantile(r_stars, [(1 - ci) / 2, (1 + ci) / 2])
                             if len(r_stars) and _has_several_seeds(rows, "n_train") else (np.nan, np.nan))
        usable = (epochs > 1) & (medians > 0)  # the points the fit used
        residual = np.log(medians[usable]) - np.log(muennighoff_epochs(epochs[usable] - 1, r_star))
        log_rms = float(np.sqrt(np.mean(residual**2))) if usable.any() else np.nan
        at = NEAR_FRESH_EPOCHS - 1  # repetitions at NEAR_FRESH_EPOCHS epochs
        # worth falls as R* falls, so the worth's interval is the R* interval mapped through it
        worth_at = [(muennighoff_epochs(at, value) - 1) / at if np.isfinite(value) else np.nan
                    for value in (r_star, r_low, r_high)]
        for n_train, group in rows.groupby("n_train", sort=True):
            summaries = {name: _median_ci(group[name].to_numpy(), n_boot=n_boot, ci=ci, random_state=random_state)
                         for name in ("effective_data", "effective_epochs", "worth")}
            records.append({"width": width, "n_train": n_train, "epochs": float(group["epochs"].median()),
                            "repetitions": float(group["epochs"].median() - 1), "n_members": len(group),
                            "n_paired": int(group["paired"].sum()), "n_censored": int(group["censored"].sum()),
                            **{f"{name}{suffix}": value for name, (m, lo, hi) in summaries.items()
                               for suffix, value in (("", m), ("_low", lo), ("_high", hi))},
                            "r_star": r_star, "r_star_low": r_low, "r_star_high": r_high, "r_star_log_rms": log_rms,
                            "worth_at_4": worth_at[0], "worth_at_4_low": worth_at[1],
                            "worth_at_4_high": worth_at[2]})
    return pd.DataFrame(records, columns=REPEAT_COLUMNS)


# ---- synthetic runs with known answers, for tests and examples ---------------------------------------------------
