"""Gaussian mixtures: scikit-learn's, with the number of components chosen by BIC (Fraley & Raftery 2002) and a
variance floor against collapse onto a single point; and, written here, mixtures whose components share one
diagonal variance, fitted to hundreds of bootstrap samples at once (scikit-learn fits one sample per call, and its
tied covariance is a full matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits


@dataclass(frozen=True)
class Mixture:
    """A fitted mixture: weights [K], means [K, D], variances [K, D], labels [N] (most probable component),
    log_likelihood and bic (-2 log L + n_parameters * ln N; lower is better)."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    labels: np.ndarray
    log_likelihood: float
    bic: float

    @property
    def n_components(self) -> int:
        return len(self.weights)


def fit_mixture(points, n_components: int, *, variance_floor: float, random_state=None, n_init: int = 5) -> Mixture:
    """Best of `n_init` EM runs of a diagonal Gaussian mixture on points [N, D] (scikit-learn's, k-means seeded);
    `variance_floor` is added to every variance, so a component cannot collapse onto one point."""
    points = np.asarray(points, dtype=float)
    points = points[:, None] if points.ndim == 1 else points
    if not 1 <= n_components <= len(points):
        raise ValueError(f"cannot fit {n_components} components to {len(points)} points")
    if n_components == 1:  # closed form (scikit-learn refuses a single point)
        variance = points.var(axis=0) + variance_floor
        log_likelihood = float(-0.5 * (((points - points.mean(0)) ** 2 / variance).sum()
                                       + len(points) * np.log(2 * np.pi * variance).sum()))
        return Mixture(np.ones(1), points.mean(0)[None], variance[None], np.zeros(len(points), dtype=np.int64),
                       log_likelihood, -2 * log_likelihood + 2 * points.shape[1] * np.log(len(points)))
    if isinstance(random_state, np.random.Generator):  # scikit-learn takes an int or a legacy RandomState
        random_state = int(random_state.integers(2**32))
    with threadpool_limits(limits=1):  # its k-means start on OpenMP threads costs 3x the work here (measured)
        fit = GaussianMixture(n_components, covariance_type="diag", reg_covar=float(variance_floor), n_init=n_init,
                              random_state=random_state).fit(points)
    # number the components by their mean along the first axis, so labels are reproducible and ordered
    order = np.argsort(fit.means_[:, 0], kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(n_components)
    return Mixture(fit.weights_[order], fit.means_[order], fit.covariances_[order], rank[fit.predict(points)],
                   float(fit.score(points) * len(points)), float(fit.bic(points)))


def select_mixture(points, max_components: int, *, variance_floor, random_state=None,
                   min_size: int = 1) -> tuple[Mixture, list[float]]:
    """Fit 1..max_components components and keep the lowest BIC among fits whose every occupied component holds
    at least `min_size` points, and no more components than distinct points. Returns (the chosen mixture, BIC per
    number of components, NaN if skipped)."""
    points = np.asarray(points, dtype=float)
    n_distinct = len(np.unique(points, axis=0))  # tied onsets (one checkpoint) cannot seed more components
    bics, best = [], None
    for n_components in range(1, max_components + 1):
        if n_components > n_distinct:
            bics.append(float("nan"))
            continue
        mixture = fit_mixture(points, n_components, variance_floor=variance_floor, random_state=random_state)
        sizes = np.bincount(mixture.labels, minlength=n_components)
        if n_components > 1 and (sizes.min() < min_size):
            bics.append(float("nan"))
            continue
        bics.append(mixture.bic)
        if best is None or mixture.bic < best.bic:
            best = mixture
    return best, bics


@dataclass(frozen=True)
class TiedMixtures:
    """Mixtures fitted to B samples at once, every component sharing one diagonal variance: weights [B, K],
    means [B, K, D], variance [B, D], labels [B, N], log_likelihood [B]."""

    weights: np.ndarray
    means: np.ndarray
    variance: np.ndarray
    labels: np.ndarray
    log_likelihood: np.ndarray


def tied_mixture_log_likelihood(points, n_components: int, variance_floor, rng, *, n_init: int = 4,
                                max_iter: int = 60, tol: float = 1e-8) -> TiedMixtures:
    """Maximum-likelihood mixtures with a shared diagonal variance, by EM, for B samples at once (points [B, N, D];
    batched because the types test fits hundreds of bootstrap samples). Each of `n_init` restarts seeds the
    means at K distinct random points of each sample; the best restart per sample is kept. A few samples are
    still short of the maximum after `max_iter` steps: the types test applies the same fit to the data and to
    its null samples, so its level holds all the same. `variance_floor` ([D] or scalar) is added to the variance
    so no fit reaches infinite likelihood."""
    points = np.asarray(points, dtype=float)
    n_samples, n_points, n_dims = points.shape
    floor = np.broadcast_to(np.asarray(variance_floor, dtype=float), (n_dims,)) + 1e-9
    best = None
    for _ in range(n_init if n_components > 1 else 1):
        start = np.argsort(rng.random((n_samples, n_points)), axis=1)[:, :n_components]  # distinct points
        means = np.take_along_axis(points, start[:, :, None], axis=1)  # [B, K, D]
        variance = points.var(axis=1) + floor  # [B, D]
        weights = np.full((n_samples, n_components), 1 / n_components)
        previous = np.full(n_samples, -np.inf)
        for _ in range(max_iter):
            joint = _tied_log_joint(points, means, variance, weights)  # [B, N, K]
            total = logsumexp(joint, axis=2)  # [B, N]
            log_likelihood = total.sum(axis=1)
            responsibility = np.exp(joint - total[:, :, None])
            mass = responsibility.sum(axis=1) + 1e-12  # [B, K]
            weights = mass / n_points
            means = np.einsum("bnk,bnd->bkd", responsibility, points) / mass[:, :, None]
            spread = (points[:, :, None, :] - means[:, None]) ** 2  # [B, N, K, D]
            variance = np.einsum("bnk,bnkd->bd", responsibility, spread) / n_points + floor
            if np.all(log_likelihood - previous <= tol * n_points):
                break
            previous = log_likelihood
        joint = _tied_log_joint(points, means, variance, weights)
        log_likelihood = logsumexp(joint, axis=2).sum(axis=1)
        fitted = TiedMixtures(weights, means, variance, joint.argmax(axis=2), log_likelihood)
        best = fitted if best is None else _better(best, fitted)
    return best


def _tied_log_joint(points, means, variance, weights) -> np.ndarray:
    """log(weight_k N(point | mean_k, diag(variance))) [B, N, K]."""
    diff = points[:, :, None, :] - means[:, None]  # [B, N, K, D]
    log_density = -0.5 * ((diff**2 / variance[:, None, None]).sum(-1)
                          + np.log(2 * np.pi * variance).sum(-1)[:, None, None])
    return log_density + np.log(weights + 1e-300)[:, None]


def _better(a: TiedMixtures, b: TiedMixtures) -> TiedMixtures:
    """Per sample, whichever of two fits has the higher likelihood."""
    take = b.log_likelihood > a.log_likelihood  # [B]
    pick = lambda x, y: np.where(take.reshape(-1, *[1] * (x.ndim - 1)), y, x)  # noqa: E731
    return TiedMixtures(*(pick(getattr(a, f), getattr(b, f)) for f in ("weights", "means", "variance", "labels",
                                                                       "log_likelihood")))
