"""Solution types: do seeds of one configuration end in one kind of solution or several, and which are odd?

Members are described by outcome columns (final accuracies, weight norm, a probe score...). Both verdicts are
tests with a stated false-alarm rate, so that 4-16 identical seeds flag nothing in at least 1 - alpha of runs
(measured in `benchmarks/solutions_calibration.py`):

- Outliers: Rosner's (1983) generalized ESD test per column (normal theory; at most a quarter of the members),
  level alpha / 2 shared by the columns (Bonferroni). It runs on all members, then within each type.
- Types: the number of Gaussian mixture components with one shared diagonal variance (types differ in where they
  sit, not in spread: a wide-plus-narrow pair would read heavy tails as two types), raised from 1 while the
  likelihood ratio against one more component beats its parametric-bootstrap null (McLachlan 1987) at level
  alpha / 2. BIC, used before, split identical normal seeds into types in 9-39% of runs at 4-16 members. The
  null draws are rounded to the data's own grid, so accuracies on a finite test set (ties) are not read as clusters.

Both tests read accuracies on a finite test set (a column in [0, 1] with ties) on the arcsine-square-root scale,
the types test's null drawn there and rounded back to the accuracies' grid: near 100% a binomial accuracy is
skewed, and normal-theory tests read its long lower tail as outliers and as a second type.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ._mixture import tied_mixture_log_likelihood


def generalized_esd(values, *, alpha: float = 0.05, max_outliers: int | None = None, grid: float = 0.0) -> np.ndarray:
    """Rosner's generalized ESD test on values [N]: boolean [N], True for the detected outliers.

    Removes the most extreme value (largest |x - mean| / sd) up to `max_outliers` times (default a quarter of N - 1:
    Rosner's lambda_i hold the level for N >= 25; below, each extra i adds false alarms);
    the number of outliers is the largest i whose statistic R_i exceeds its critical value lambda_i. Written here:
    a short formula, checked against NIST's worked example in the tests. Values recorded on a grid of step `grid`
    (an accuracy on a finite test set) tie; their sd is taken as sqrt(sd^2 + grid^2 / 12) (Sheppard's rounding
    variance), else three seeds at 100% and one at 99.5% make the most extreme sample four values can form."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    limit = max(1, (n - 1) // 4) if max_outliers is None else max_outliers
    limit = min(limit, n - 2)  # lambda_i needs n - i - 1 >= 1 degrees of freedom
    flagged = np.zeros(n, dtype=bool)
    if limit < 1:
        return flagged
    remaining, removed, found = np.arange(n), [], 0
    for i in range(1, limit + 1):
        sample = values[remaining]
        deviation = np.abs(sample - sample.mean())
        sd = np.sqrt(sample.var(ddof=1) + grid**2 / 12)
        if sd == 0:
            break
        worst = int(np.argmax(deviation))
        if deviation[worst] / sd > esd_critical_value(n, i, alpha):
            found = i
        removed.append(remaining[worst])
        remaining = np.delete(remaining, worst)
    flagged[removed[:found]] = True
    return flagged


def as_proportions(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values [N, D], proportion [D]): each column that reads as an accuracy on a finite test set (every value in
    [0, 1], with ties) on the arcsine-square-root scale, where a binomial proportion's variance no longer shrinks
    toward 0 and 1 and its skew near 100% is gone (Anscombe 1948); other columns as they are."""
    proportion = np.array([_is_proportion(c) for c in values.T], dtype=bool)
    return np.where(proportion, np.arcsin(np.sqrt(np.clip(values, 0, 1))), values), proportion


def _is_proportion(column: np.ndarray) -> bool:
    finite = column[np.isfinite(column)]
    return bool(len(finite)) and finite.min() >= 0 and finite.max() <= 1 and _grid_step(finite) > 0


def esd_critical_value(n: int, i: int, alpha: float) -> float:
    """Rosner's lambda_i for the i-th most extreme of n values at level alpha (lambda_1 is Grubbs' two-sided
    critical value)."""
    t = stats.t.ppf(1 - alpha / (2 * (n - i + 1)), n - i - 1)
    return float((n - i) * t / np.sqrt((n - i - 1 + t**2) * (n - i + 1)))


def _grid_step(column: np.ndarray) -> float:
    """The spacing of the values a column with ties can take (e.g. 1 / test-set size for an accuracy): the
    smallest gap between distinct values; 0 for a column without ties (read as continuous) or a constant one."""
    distinct = np.unique(column)
    if len(distinct) == len(column) or len(distinct) < 2:
        return 0.0
    return float(np.diff(distinct).min())


def _standardize(values: np.ndarray):
    """(points, grid, on_grid) for the types test: the values per column (accuracies on the arcsine scale, as
    `as_proportions`) minus their mean over their sd (1 where constant); the grid step in those units [D], 0 where it
    is finer than a tenth of an sd (rounding there hardly changes the likelihoods); and `on_grid(draws [..., D])`,
    which puts simulated points where data can lie (an accuracy: back to [0, 1], rounded to its test set's grid and
    transformed again), or None when no column needs it."""
    transformed, proportion = as_proportions(values)
    center, scale = transformed.mean(axis=0), transformed.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    standardized = (transformed - center) / scale
    grid = np.array([_grid_step(c) for c in standardized.T])
    grid = np.where(grid < 0.1, 0.0, grid)
    raw_grid = np.array([_grid_step(c) for c in values.T])
    if not grid.any() and not proportion.any():
        return standardized, grid, None

    def on_grid(draws: np.ndarray) -> np.ndarray:
        plain = np.where(grid > 0, np.round(draws / np.where(grid > 0, grid, 1)) * grid, draws)
        raw = np.sin(np.clip(draws * scale + center, 0, np.pi / 2)) ** 2
        raw = np.clip(np.round(raw / np.where(proportion, raw_grid, 1)) * raw_grid, 0, 1)
        return np.where(proportion, (np.arcsin(np.sqrt(raw)) - center) / scale, plain)

    return standardized, grid, on_grid


@functools.lru_cache(maxsize=64)
def _one_type_null(n: int, n_dims: int, n_null: int) -> np.ndarray:
    """Likelihood ratios of two types against one in `n_null` standard normal samples of n points [n_null]. The
    ratio is unchanged by shifting or scaling a column, so this null serves every continuous sample of that shape
    (computed once per shape, from a fixed seed)."""
    rng = np.random.default_rng([n, n_dims, n_null])
    draws = rng.standard_normal((n_null, n, n_dims))
    floor = np.zeros(n_dims)
    one, two = (tied_mixture_log_likelihood(draws, k, floor, rng) for k in (1, 2))
    return 2 * (two.log_likelihood - one.log_likelihood)


class SolutionTypes:
    """Test whether members split into solution types on outcome columns, and flag outliers.

    Parameters (stored only): `alpha`, the chance that members of one distribution get any flag (half to the types
    test, half to the outliers); `max_clusters`; `min_cluster_size` (smallest solution type; a type reached by one
    seed is an outlier); `n_null` parametric-bootstrap draws per types test; `random_state` seeds the fits and the
    draws (the null of one type on continuous columns depends only on the number of members and columns, and is
    drawn once).

    Fitted (indexed by the frame's `member` column if it has one, else by its index): `labels_` (Series: cluster
    0..n_clusters_-1 ordered by the first column's mean, -1 for outliers and rows with missing outcomes),
    `n_clusters_`, `outliers_` (boolean Series), `centers_` (DataFrame: per cluster, n_members and the mean of each
    column in original units), `p_values_` (the types tests' p-values: entry k tests k + 1 types against k),
    `too_small_` (the smallest type of a significant split refused for having under min_cluster_size members, else
    None: a lone seed far from the rest that the outlier test at this seed count did not flag)."""

    def __init__(self, *, alpha: float = 0.05, max_clusters: int = 4, min_cluster_size: int = 2, n_null: int = 400,
                 random_state=0):
        self.alpha = alpha
        self.max_clusters = max_clusters
        self.min_cluster_size = min_cluster_size
        self.n_null = n_null
        self.random_state = random_state

    def fit(self, frame: pd.DataFrame, columns: Sequence[str]) -> SolutionTypes:
        """frame: one row per member; columns: the outcome columns to compare members on."""
        columns = list(columns)
        index = pd.Index(frame["member"]) if "member" in frame.columns else frame.index
        values = frame[columns].to_numpy(dtype=float)  # [N, D]
        complete = np.isfinite(values).all(axis=1)
        if complete.sum() == 0:
            raise ValueError(f"no member has finite values in all of {columns}")
        outlier_alpha = self.alpha / 2 / len(columns)
        outliers = ~complete
        outliers[complete] = self._outliers(values[complete], outlier_alpha)
        self.too_small_ = None
        labels, self.p_values_ = self._cluster(values, ~outliers)
        n_clusters = int(labels.max() + 1) if (labels >= 0).any() else 0
        if n_clusters > 1:  # an outlier within one type hides behind the spread between types
            for cluster in range(n_clusters):
                members = np.flatnonzero(labels == cluster)
                odd = members[self._outliers(values[members], outlier_alpha / n_clusters)]
                outliers[odd], labels[odd] = True, -1
        self.n_clusters_ = n_clusters
        self.labels_ = pd.Series(labels, index=index, name="cluster")
        self.outliers_ = pd.Series(outliers, index=index, name="outlier")
        kept = labels >= 0
        centers = frame.loc[kept, columns].groupby(labels[kept]).mean()
        centers.insert(0, "n_members", np.bincount(labels[kept], minlength=n_clusters))
        self.centers_ = centers.rename_axis("cluster")
        return self

    @staticmethod
    def _outliers(values: np.ndarray, alpha: float) -> np.ndarray:
        """Rows [N] flagged by the generalized ESD test on any column, each at level alpha."""
        flagged = np.zeros(len(values), dtype=bool)
        for column in as_proportions(values)[0].T:
            flagged |= generalized_esd(column, alpha=alpha, grid=_grid_step(column))
        return flagged

    def _cluster(self, values: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Labels [N] of the rows in `use` (-1 elsewhere) from the sequential types test, and its p-values."""
        labels = np.full(len(values), -1)
        points, grid, on_grid = _standardize(values[use])
        rng = np.random.default_rng(self.random_state)
        floor = grid**2 / 12  # Sheppard: a value known to a grid step h carries h^2 / 12 of rounding variance
        fit = tied_mixture_log_likelihood(points[None], 1, floor, rng)
        chosen, p_values = fit.labels[0], []
        for k in range(1, self.max_clusters):
            if len(points) < (k + 1) * self.min_cluster_size:
                break
            larger = tied_mixture_log_likelihood(points[None], k + 1, floor, rng)
            sizes = np.bincount(larger.labels[0], minlength=k + 1)
            observed = 2 * (larger.log_likelihood[0] - fit.log_likelihood[0])
            null = self._null_ratios(fit, len(points), k, on_grid, floor, rng)
            p_values.append(float((1 + np.sum(null >= observed)) / (1 + len(null))))
            if p_values[-1] > self.alpha / 2:
                break
            if sizes.min() < self.min_cluster_size:
                self.too_small_ = int(sizes.min())  # the split is significant but one of its types is too small
                break
            fit, chosen = larger, larger.labels[0]
        # number the types by their mean on the first column, so labels are reproducible and ordered
        order = np.argsort([points[chosen == c, 0].mean() for c in range(chosen.max() + 1)], kind="stable")
        labels[use] = np.argsort(order)[chosen]
        return labels, p_values

    def _null_ratios(self, fit, n: int, k: int, on_grid, floor: np.ndarray, rng) -> np.ndarray:
        """Likelihood ratios of k + 1 against k types in `n_null` samples drawn from the fitted k types [n_null]."""
        if k == 1 and on_grid is None:
            return _one_type_null(n, len(floor), self.n_null)
        component = rng.choice(k, size=(self.n_null, n), p=fit.weights[0])
        draws = fit.means[0][component] + rng.standard_normal((self.n_null, n, len(floor))) * np.sqrt(fit.variance[0])
        if on_grid is not None:
            draws = on_grid(draws)  # where the data can lie
        null_k = tied_mixture_log_likelihood(draws, k, floor, rng)
        null_larger = tied_mixture_log_likelihood(draws, k + 1, floor, rng)
        return 2 * (null_larger.log_likelihood - null_k.log_likelihood)
