"""Solution types: do seeds of one configuration end in one kind of solution or several, and which are odd?

Members are described by outcome columns (final accuracies, weight norm, a probe score...). We standardize the
columns robustly (median / MAD, so one wild member cannot squash the rest), fit Gaussian mixtures with
diagonal covariance for 1..max_clusters components and keep the lowest BIC (Fraley & Raftery 2002); one
cluster is a possible answer, which silhouette-based choices cannot give. A cluster must hold at least
`min_cluster_size` members: a solution type reached by a single seed is an outlier, not a type.

Outliers: within its cluster, a member whose modified z-score 0.6745 * (x - median) / MAD exceeds 3.5 on any
column (Iglewicz & Hoaglin 1993), with the mean absolute deviation * 1.2533 standing in where MAD is 0. The
clusters are then refitted without the outliers, so they do not distort the types.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._common import MAD_TO_SIGMA
from ._mixture import select_mixture

# MAD of a normal sample is 0.6745 sigma; mean absolute deviation is sqrt(2 / pi) sigma = sigma / 1.2533.
_MAD_CONSISTENCY = 0.6745
_MEAN_AD_CONSISTENCY = 1.253314

# Variance floor in standardized units: far below any real spread, it only stops a component from
# collapsing onto identical values (e.g. many seeds at exactly 100% train accuracy).
_VARIANCE_FLOOR = 1e-4


def modified_z_scores(values) -> np.ndarray:
    """Iglewicz-Hoaglin modified z-scores of values [N, D] per column -> [N, D]; 0 for a constant column
    and inf for the values off a column whose other values are all identical."""
    values = np.asarray(values, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    deviation = values - np.median(values, axis=0)
    mad = np.median(np.abs(deviation), axis=0)
    mean_ad = np.abs(deviation).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(mad > 0, _MAD_CONSISTENCY * deviation / np.where(mad > 0, mad, 1.0),
                     deviation / (_MEAN_AD_CONSISTENCY * np.where(mean_ad > 0, mean_ad, 1.0)))
    return np.where((mad == 0) & (mean_ad == 0), 0.0, z)


def _robust_standardize(values: np.ndarray) -> np.ndarray:
    """Centre on the median, scale by MAD * 1.4826 (std where MAD is 0, 1 where both are)."""
    centre = np.median(values, axis=0)
    scale = MAD_TO_SIGMA * np.median(np.abs(values - centre), axis=0)
    scale = np.where(scale > 0, scale, values.std(axis=0))
    return (values - centre) / np.where(scale > 0, scale, 1.0)


class SolutionTypes:
    """Cluster members on outcome columns (BIC-selected Gaussian mixture) and flag outliers.

    Parameters (stored only): `max_clusters`; `min_cluster_size` (smallest solution type); `outlier_threshold`
    on the modified z-score (3.5, Iglewicz & Hoaglin 1993); `random_state` seeds the mixture restarts.

    Fitted (indexed by the frame's `member` column if it has one, else by its index): `labels_` (Series:
    cluster 0..n_clusters_-1 ordered by the first column's mean, -1 for outliers and rows with missing
    outcomes), `n_clusters_`, `outliers_` (boolean Series), `z_scores_` (DataFrame of within-cluster modified
    z-scores), `centers_` (DataFrame: per cluster, n_members and the mean of each column in original units),
    `bics_` (BIC per number of clusters, NaN where a cluster would be smaller than min_cluster_size).
    """

    def __init__(self, *, max_clusters: int = 4, min_cluster_size: int = 2, outlier_threshold: float = 3.5,
                 random_state=0):
        self.max_clusters = max_clusters
        self.min_cluster_size = min_cluster_size
        self.outlier_threshold = outlier_threshold
        self.random_state = random_state

    def fit(self, frame: pd.DataFrame, columns: Sequence[str]) -> SolutionTypes:
        """frame: one row per member; columns: the outcome columns to compare members on."""
        columns = list(columns)
        index = pd.Index(frame["member"]) if "member" in frame.columns else frame.index
        values = frame[columns].to_numpy(dtype=float)  # [N, D]
        complete = np.isfinite(values).all(axis=1)
        if complete.sum() == 0:
            raise ValueError(f"no member has finite values in all of {columns}")
        standardized = np.full_like(values, np.nan)
        standardized[complete] = _robust_standardize(values[complete])

        # first pass on every complete member, to find the outliers within their clusters
        labels, _ = self._cluster(standardized, complete)
        z_scores = self._within_cluster_z(values, labels)
        outliers = ~complete | (np.abs(z_scores) > self.outlier_threshold).any(axis=1)
        # second pass without them, so an outlier cannot pull or widen a solution type
        labels, self.bics_ = self._cluster(standardized, ~outliers)
        self.n_clusters_ = int(labels.max() + 1) if (labels >= 0).any() else 0
        self.labels_ = pd.Series(labels, index=index, name="cluster")
        self.outliers_ = pd.Series(outliers, index=index, name="outlier")
        self.z_scores_ = pd.DataFrame(z_scores, index=index, columns=columns)
        centers = frame.loc[labels >= 0, columns].groupby(labels[labels >= 0]).mean()
        centers.insert(0, "n_members", np.bincount(labels[labels >= 0], minlength=self.n_clusters_))
        self.centers_ = centers.rename_axis("cluster")
        return self

    def _cluster(self, standardized: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Labels [N] from the BIC-selected mixture fitted to the rows in `use` (-1 elsewhere), and the BICs."""
        labels = np.full(len(standardized), -1)
        points = standardized[use]
        if len(points) < 2 * self.min_cluster_size:  # too few members for more than one type
            labels[use] = 0
            return labels, [float("nan")] * self.max_clusters
        mixture, bics = select_mixture(points, self.max_clusters, variance_floor=_VARIANCE_FLOOR,
                                       random_state=self.random_state, min_size=self.min_cluster_size)
        labels[use] = mixture.labels
        return labels, bics

    @staticmethod
    def _within_cluster_z(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Modified z-scores [N, D] of every member against its own cluster (NaN outside any cluster)."""
        z = np.full_like(values, np.nan)
        for cluster in np.unique(labels[labels >= 0]):
            members = labels == cluster
            z[members] = modified_z_scores(values[members])
        return z
