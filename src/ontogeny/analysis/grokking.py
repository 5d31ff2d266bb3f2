"""Grokking: when each member memorizes and generalizes, and the data threshold of a train-fraction sweep.

Memorization / generalization step: first checkpoint where train/acc, resp. test/acc, reaches 0.99 (Power et al.
2022); delay = generalization - memorization. Over a sweep column (default "task.train_fraction"), the data
threshold is the smallest swept value from which on at least half the seeds generalize within the budget
(the critical training-set size of Power et al. 2022 and Zhu et al. 2024 "Critical data size of language
models from a grokking perspective"), with a bootstrap CI that resamples seeds within each swept value. The
spread of generalization steps per value (IQR, std of log10 steps) shows how precarious grokking is near it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .summary import THRESHOLD, first_step_at_or_above

BY_SWEEP_COLUMNS = ("n_seeds", "n_generalized", "success_rate", "median_step", "q25_step", "q75_step",
                    "iqr_steps", "log10_std", "median_delay")


def grokking_steps(scalars: pd.DataFrame, *, threshold: float = THRESHOLD, train: str = "train/acc",
                   test: str = "test/acc") -> pd.DataFrame:
    """Per member (index): memorization_step, generalization_step (NaN if never), delay (generalization -
    memorization, NaN unless both happened) and last_step (last checkpoint recorded), from a scalars frame
    with columns member, step, name, value."""
    members = pd.Index(np.sort(scalars["member"].unique()), name="member")
    table = pd.DataFrame(index=members)
    table["memorization_step"] = first_step_at_or_above(scalars, train, threshold).reindex(members).astype(float)
    table["generalization_step"] = first_step_at_or_above(scalars, test, threshold).reindex(members).astype(float)
    table["delay"] = table["generalization_step"] - table["memorization_step"]
    table["last_step"] = scalars.groupby("member")["step"].max().reindex(members).astype(float)
    return table


def sweep_table(steps: pd.DataFrame, members: pd.DataFrame, *, sweep: str = "task.train_fraction",
                budget: float | None = None) -> pd.DataFrame:
    """Per swept value (index, sorted): the columns BY_SWEEP_COLUMNS. A seed generalized if its
    generalization step is at most `budget` (default: within its own run). Step statistics use the seeds
    that generalized; log10_std is the sample std (ddof=1) of their log10 generalization steps."""
    frame = _generalized(steps, members, sweep, budget)
    rows = {}
    for value, group in frame.groupby(sweep, sort=True):
        done = group.loc[group["generalized"], "generalization_step"].to_numpy(dtype=float)
        q25, median, q75 = np.quantile(done, [0.25, 0.5, 0.75]) if len(done) else (np.nan,) * 3
        rows[value] = {
            "n_seeds": len(group), "n_generalized": len(done), "success_rate": len(done) / len(group),
            "median_step": median, "q25_step": q25, "q75_step": q75, "iqr_steps": q75 - q25,
            "log10_std": np.log10(done).std(ddof=1) if len(done) > 1 else np.nan,
            "median_delay": group.loc[group["generalized"], "delay"].median(),
        }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(BY_SWEEP_COLUMNS)).rename_axis(sweep)


def data_threshold(steps: pd.DataFrame, members: pd.DataFrame, *, sweep: str = "task.train_fraction",
                   budget: float | None = None, success: float = 0.5, n_boot: int = 2000, ci: float = 0.95,
                   random_state=None) -> tuple[float, float, float]:
    """(threshold, ci_low, ci_high): the smallest swept value from which on (at it and every larger value) the
    share of seeds generalizing within `budget` is at least `success`; inf if no such value.

    "From which on" rather than "at which": with few seeds a lucky low value should not set the threshold; the
    two agree whenever the success rate rises with the swept value. The CI is the percentile interval of the
    threshold over bootstrap resamples of the seeds within each value; resampling n seeds with replacement
    from k successes is exactly a Binomial(n, k / n) count, so that is what is drawn.
    """
    frame = _generalized(steps, members, sweep, budget)
    counts = frame.groupby(sweep, sort=True)["generalized"].agg(["size", "sum"])
    values = counts.index.to_numpy(dtype=float)
    estimate = _threshold(values, (counts["sum"] / counts["size"]).to_numpy()[None, :], success)[0]
    rng = np.random.default_rng(random_state)
    sizes = counts["size"].to_numpy()
    rates = rng.binomial(sizes, counts["sum"].to_numpy() / sizes, size=(n_boot, len(sizes))) / sizes  # [B, V]
    boot = _threshold(values, rates, success)
    # the threshold takes only swept values (or inf), so take order statistics rather than interpolating
    low, high = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2], method="inverted_cdf")
    return float(estimate), float(low), float(high)


def _threshold(values: np.ndarray, rates: np.ndarray, success: float) -> np.ndarray:
    """Smallest value from which on rates >= success, per row of rates [B, V] -> [B] (inf if none)."""
    ok = rates >= success
    from_here_on = np.flip(np.logical_and.accumulate(np.flip(ok, axis=1), axis=1), axis=1)  # [B, V]
    first = from_here_on.argmax(axis=1)
    return np.where(from_here_on.any(axis=1), values[first], np.inf)


def _generalized(steps: pd.DataFrame, members: pd.DataFrame, sweep: str, budget: float | None) -> pd.DataFrame:
    """Members joined with their steps and a boolean `generalized` column."""
    if sweep not in members.columns:
        raise ValueError(f"members has no column {sweep!r}; columns: {sorted(members.columns)}")
    frame = members.set_index("member")[[sweep]].join(steps, how="left")
    limit = frame["last_step"] if budget is None else budget
    frame["generalized"] = (frame["generalization_step"] <= limit).fillna(False).astype(bool)
    return frame


class GrokkingAnalysis:
    """Memorization / generalization steps per member and, over a sweep, the data threshold.

    Parameters (stored only): `threshold` accuracy (0.99); `sweep` the members column swept; `budget` the
    step by which a seed must generalize (None: by the end of its run); `success` the share of seeds that
    must generalize (0.5); `n_boot`, `ci`, `random_state` for the bootstrap.

    Fitted: `steps_` (per member, `grokking_steps`), `by_sweep_` (per swept value, `sweep_table`; None if the
    members have no sweep column), `data_threshold_` and `data_threshold_ci_` (low, high); inf means not reached
    within the sweep.
    """

    def __init__(self, *, threshold: float = THRESHOLD, sweep: str = "task.train_fraction",
                 budget: float | None = None, success: float = 0.5, n_boot: int = 2000, ci: float = 0.95,
                 random_state=None):
        self.threshold = threshold
        self.sweep = sweep
        self.budget = budget
        self.success = success
        self.n_boot = n_boot
        self.ci = ci
        self.random_state = random_state

    def fit(self, scalars: pd.DataFrame, members: pd.DataFrame) -> GrokkingAnalysis:
        """scalars: member, step, name, value; members: member plus hyperparameter columns."""
        self.steps_ = grokking_steps(scalars, threshold=self.threshold)
        self.by_sweep_ = self.data_threshold_ = self.data_threshold_ci_ = None
        if self.sweep in members.columns:
            self.by_sweep_ = sweep_table(self.steps_, members, sweep=self.sweep, budget=self.budget)
            estimate, low, high = data_threshold(self.steps_, members, sweep=self.sweep, budget=self.budget,
                                                 success=self.success, n_boot=self.n_boot, ci=self.ci,
                                                 random_state=self.random_state)
            self.data_threshold_, self.data_threshold_ci_ = estimate, (low, high)
        return self
