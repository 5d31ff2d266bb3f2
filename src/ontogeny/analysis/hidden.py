"""Hidden transitions: a smooth aggregate curve can be the average of many sharp ones at different times.

Given sub-curves [N, S] (per example, per subset or per member) and their aggregate [S], we fit a sigmoid in
log-step to each (the same fit as the age of acquisition, `dynamics`), then report

- each sub-curve's onset (halfway step) and 10%-90% rise width, and the distribution of onsets;
- how many distinct groups the onsets form: a 1-D Gaussian mixture on log10(1 + onset) with the number of
  components chosen by BIC (Fraley & Raftery 2002), one component allowed; the variance floor is the
  quantisation variance h^2 / 12 of a time read off checkpoints spaced h apart in log-step, so groups finer
  than the checkpoints can resolve are not invented;
- sharpness: the aggregate's rise width over the median sub-curve rise width. A ratio well above 1 means the
  aggregate's smoothness comes from averaging sharp transitions at spread-out times (as Schaeffer et al. 2023
  argue the reverse for metrics, and as per-token curves show in Chang et al. 2024).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import check_curves, check_steps, log_step, step_from_log
from ._mixture import select_mixture
from ._sigmoid import fit_sigmoids


def onset_groups(log_onsets, *, max_groups: int = 5, resolution: float, random_state=0):
    """Cluster onsets given in log-step [N] (NaN ignored) with a BIC-selected 1-D Gaussian mixture.

    `resolution` is the checkpoint spacing in the same log units (variance floor resolution^2 / 12). Returns
    (labels [N] ordered by time, -1 for NaN; n_groups; mixture or None; BIC per number of groups).
    """
    log_onsets = np.asarray(log_onsets, dtype=float)
    labels = np.full(len(log_onsets), -1)
    known = np.isfinite(log_onsets)
    if known.sum() == 0:
        return labels, 0, None, []
    mixture, bics = select_mixture(log_onsets[known], min(max_groups, int(known.sum())),
                                   variance_floor=resolution**2 / 12, random_state=random_state)
    labels[known] = mixture.labels
    return labels, mixture.n_components, mixture, bics


class HiddenTransitions:
    """Onsets and sharpness of sub-curves against their aggregate.

    Parameters (stored only): `log_steps` fits in log10(1 + step) (if False, rises and spreads are in steps,
    not decades); `max_groups` bounds the number of onset groups; `random_state` seeds the mixture restarts.

    Fitted: `table_` (per sub-curve: onset_step, rise_decades, r2, group), `onsets_` [N], `rises_` [N],
    `aggregate_onset_`, `aggregate_rise_` (floats, same units), `sharpness_ratio_` (aggregate rise over the
    median sub-curve rise), `onset_quantiles_` (Series: 0.1, 0.25, 0.5, 0.75, 0.9 quantiles of the onsets),
    `onset_spread_decades_` (interquartile range of log10 onsets), `n_groups_`, `groups_` (DataFrame per
    group: n_curves, center_step, low_step, high_step as the component mean -/+ one standard deviation),
    `group_bics_` (BIC per number of groups).
    """

    def __init__(self, *, log_steps: bool = True, max_groups: int = 5, random_state=0):
        self.log_steps = log_steps
        self.max_groups = max_groups
        self.random_state = random_state

    def fit(self, steps, curves, aggregate=None) -> HiddenTransitions:
        """steps [S]; curves [N, S] sub-curves; aggregate [S] (default: their mean over N)."""
        steps = check_steps(steps, min_length=3)
        curves = check_curves(curves, len(steps), name="curves")
        aggregate = curves.mean(axis=0) if aggregate is None else check_curves(aggregate, len(steps))[0]
        x = log_step(steps) if self.log_steps else steps
        fits = fit_sigmoids(x, np.vstack([curves, aggregate[None]]))
        to_step = step_from_log if self.log_steps else (lambda v: v)
        onsets, rises = to_step(fits.halfway[:-1]), fits.rise[:-1]
        labels, n_groups, mixture, bics = onset_groups(
            fits.halfway[:-1], max_groups=self.max_groups, resolution=float(np.median(np.diff(x))),
            random_state=self.random_state)

        self.onsets_, self.rises_ = onsets, rises
        self.aggregate_onset_, self.aggregate_rise_ = float(to_step(fits.halfway[-1])), float(fits.rise[-1])
        self.sharpness_ratio_ = float(self.aggregate_rise_ / np.nanmedian(rises))
        self.table_ = pd.DataFrame({"onset_step": onsets, "rise_decades": rises, "r2": fits.r2[:-1],
                                    "group": labels})
        known = np.isfinite(fits.halfway[:-1])
        self.onset_quantiles_ = pd.Series(np.quantile(onsets[known], [0.1, 0.25, 0.5, 0.75, 0.9]) if known.any()
                                          else np.full(5, np.nan), index=[0.1, 0.25, 0.5, 0.75, 0.9])
        q25, q75 = (np.quantile(fits.halfway[:-1][known], [0.25, 0.75]) if known.any() else (np.nan, np.nan))
        self.onset_spread_decades_ = float(q75 - q25)
        self.n_groups_, self.group_bics_ = n_groups, bics
        if mixture is None:
            self.groups_ = pd.DataFrame(columns=["n_curves", "center_step", "low_step", "high_step"])
        else:
            center, scale = mixture.means[:, 0], np.sqrt(mixture.variances[:, 0])
            self.groups_ = pd.DataFrame({
                "n_curves": np.bincount(labels[labels >= 0], minlength=n_groups),
                "center_step": to_step(center), "low_step": to_step(center - scale),
                "high_step": to_step(center + scale)}).rename_axis("group")
        return self
