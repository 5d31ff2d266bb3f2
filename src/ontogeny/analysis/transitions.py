"""Transitions: abrupt changes of level in training curves, found by change-point detection.

Pipeline per curve (values [S] at checkpoint steps [S]); every test is a Gaussian information criterion with the
noise scale sigma known, so no threshold is free:

0. Spikes: a lone checkpoint more than 4 noise sds from the median of the 5 around it takes that median
   (`despike`), so heavy-tailed noise does not read as a rise and a fall.
1. sigma: the long-run noise scale (`_common.long_run_sigma`): the MAD of first differences, robust to the few
   large differences of a transition, inflated by (1 + rho) / (1 - rho) for the lag-1 correlation rho of the
   noise, so that a plateau's correlated wobble is not taken for changes (real curves show rho ~ 0.5). It is
   estimated twice: the second time without the surroundings of the changes larger than 5 sds that the first
   estimate finds (on a short curve, a smoother's misfit around them passes for correlated noise); where most
   differences are exactly 0 (an accuracy at its ceiling), from the mean absolute difference instead. Noise often
   shrinks as the loss falls, so each checkpoint also has a local scale (`local_sigma`: the same estimate over the
   15 differences around it), which replaces sigma wherever it is larger.
2. Candidates: ruptures' binary segmentation into constant levels (l2 cost, each checkpoint weighted by its inverse
   local noise variance) under the penalty
   `penalty` * sigma^2 * ln(S). "mbic" (default) charges 3 ln(S) per change, the modified BIC of Zhang &
   Siegmund (2007): a change's location is searched, not estimated like a regular parameter, and plain BIC
   ("bic", 2 ln(S), Yao 1988) over-segments (on pure noise it flagged ~7% of curves, mbic none of 200).
3. Grouping: consecutive changes in the same direction form one candidate while a single sigmoid in log-step
   explains their segments at least as well as separate levels do (one rise that segmentation cut into a
   staircase of pieces), by the same criterion. A group can take the foot of the next rise in the same direction
   (one sigmoid explains a rise and the first piece of the next nearly as well as levels do); the next rise's
   window then starts on its way up, so where it fails it is judged again from one change earlier.
4. Acceptance: the sigmoid fitted to the candidate's window (from the start of the plateau before to the end of
   the plateau after) must beat every smooth explanation by the criterion with the window's noise scale (the rms
   of its local scales where larger than sigma), each charged its own parameters: a straight line in log-step, an
   exponential relaxation a + b exp(-t / tau) and a power law a + b (1 + t / t0)^-a in steps (the smooth losses
   of training); it must be seen whole (its 10% and 90% points inside the window: a
   curve already falling at its first checkpoint has no old level to leave); and its 10%-90% rise must be
   shorter than `max_rise_decades` (default RELAXATION_RISE_DECADES). Under correlated noise (rho > 0) every fit
   of this step is by generalized least squares for AR(1) noise (Prais & Winsten 1954), compared in units of the
   innovations' variance: the long-run scale alone is right for a slow rise but throws away what a sharp jump
   shows against the wobble before it.
   Smooth losses fail these tests; grokking-like jumps pass them. Fresh draws of the three corpora of
   `transition_corpus` (benchmarks/transition_fidelity.py --seed 20 --per-kind 300): the one it was tuned on
   (white noise, and correlated noise on power laws) precision 0.98, recall 0.91, at most 0.02 false transitions
   per smooth curve; the held-out one (other schedules, slow rises, stretched exponentials, Student-t and AR noise
   on every kind) 0.97, 0.91, at most 0.05; the unseen one (heteroscedastic, Laplace and AR noise of correlation
   up to 0.7; steps on falling power laws, Gompertz rises, overshoots; two relaxations a decade apart) 0.85, 0.90,
   at most 0.10.
5. Description: onset, midpoint and end are the first checkpoints by which the fitted sigmoid has covered 10%,
   50% and 90% of its change; `before` / `after` are its two asymptotic levels.

Parameter counting for the criteria: a level or a slope costs ln(n); a located parameter (a change's position,
a sigmoid's centre and width) costs ln(n) under "bic" and 2 ln(n) under "mbic".

Why no resampling onto an even log-step grid: a piecewise-constant model depends only on the order of the
checkpoints, not on their spacing, and each checkpoint is one independent noisy measurement. Interpolated grid
points are correlated copies of the same noise, which shrinks the difference-based sigma and breaks the
criteria (on pure noise, interpolating a log-spaced schedule onto a grid gave more than two false transitions
per curve). The spacing enters where it matters: the line and sigmoid fits use log10(1 + step) (or step).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import ruptures as rpt
from scipy.special import expit

from ._common import MAD_TO_SIGMA, check_curves, check_steps, difference_sigma, log_step, long_run_sigma, step_from_log
from ._sigmoid import fit_sigmoids, width_grid

# The smoothest simple dynamics, exponential relaxation 1 - exp(-t / tau), covers 10% -> 90% of its change between
# t = tau * ln(10/9) and t = tau * ln(10), i.e. over log10(ln(10) / ln(10/9)) = 1.34 decades of steps whatever tau;
# power laws (1 + t / t0)^-alpha take longer still. A change faster than that in log-step is abrupt.
RELAXATION_RISE_DECADES = float(np.log10(np.log(10.0) / np.log(10.0 / 9.0)))

TRANSITION_COLUMNS = ("curve", "step", "onset_step", "end_step", "before", "after", "size", "direction")

# Cost of a located parameter (change position, sigmoid centre or width) in units of ln(n), per criterion.
_LOCATION_COST = {"bic": 1.0, "mbic": 2.0}

# A noise-free curve would give sigma = 0; a floor far above float rounding keeps the criteria defined without
# affecting any curve that carries measurable noise.
_RELATIVE_NOISE_FLOOR = 1e-6


class TransitionDetector:
    """Detect abrupt level changes in one or many curves sharing checkpoint steps.

    Parameters (stored only): `log_steps` fits lines and sigmoids in log10(1 + step) rather than in step;
    `max_checkpoints`: longer curves are first thinned evenly in x (`thin_checkpoints`);
    `model` is the ruptures cost for the candidates ("l2": piecewise-constant mean); `min_size` is the shortest
    segment in checkpoints; `penalty` is "mbic", "bic" (see the module docstring) or a number in the cost's
    units (the later tests then use "mbic"); `max_rise_decades` is the slowest 10%-90% rise still called a
    transition.

    Fitted: `transitions_` (DataFrame, one row per transition, columns TRANSITION_COLUMNS; steps are checkpoint
    steps; `curve` is the curve's name), `sigma_` [C] noise scale per curve, `penalty_` [C] the penalty used.
    """

    def __init__(self, *, log_steps: bool = True, model: str = "l2", min_size: int = 3,
                 penalty: str | float = "mbic", max_rise_decades: float = RELAXATION_RISE_DECADES,
                 max_checkpoints: int = 1000):
        self.log_steps = log_steps
        self.model = model
        self.min_size = min_size
        self.penalty = penalty
        self.max_rise_decades = max_rise_decades
        self.max_checkpoints = max_checkpoints

    def fit(self, steps, values, *, names: Sequence | None = None) -> TransitionDetector:
        """Detect transitions: steps [S], values [S] or [C, S]; `names` [C] label the curves (default 0..C-1)."""
        if isinstance(self.penalty, str) and (self.penalty not in _LOCATION_COST or self.model != "l2"):
            raise ValueError(f"penalty={self.penalty!r}: named penalties are 'mbic' and 'bic', derived for the "
                             "Gaussian 'l2' cost; pass a number for any other model")
        given = np.asarray(steps)  # reported steps keep the caller's dtype (integer checkpoint steps)
        steps = check_steps(steps, min_length=2 * self.min_size)
        values = check_curves(values, len(steps))
        names = list(range(len(values))) if names is None else list(names)
        if len(names) != len(values):
            raise ValueError(f"got {len(names)} names for {len(values)} curves")
        criterion = self.penalty if isinstance(self.penalty, str) else "mbic"
        location_cost = _LOCATION_COST[criterion]
        x = log_step(steps) if self.log_steps else steps
        if len(steps) > self.max_checkpoints:  # a sigmoid fit's grid grows with the square of its window
            given, x, values = thin_checkpoints(given, x, values, self.max_checkpoints)
        values = despike(values)
        spread = values.max(axis=1) - values.min(axis=1)
        sigma, self.rho_ = long_run_sigma(values)  # [C], for correlated noise too
        penalty = self._penalties(sigma, spread, len(x), location_cost)
        # again without the surroundings of the large changes found: on a short curve they pass for correlated noise
        white = difference_sigma(values)
        changes = [self._large_changes(values[c], penalty[c], 5 * white[c]) if spread[c] > 0 else []
                   for c in range(len(values))]
        sigma, self.rho_ = long_run_sigma(values, changes=changes)
        # most differences exactly 0 (an accuracy at its ceiling, a count): the MAD says no noise at all, and every
        # one-example wiggle would pass; the mean absolute difference still measures how much the curve moves. Only
        # here, not in difference_sigma: the transition's own differences inflate it, which the correlation and
        # large-change estimates above must not see (done there, 305 -> 461 rises over 0.3 lost on recorded curves)
        sigma = np.where(white > 0, sigma, mean_difference_sigma(values))
        sigma = np.maximum(sigma, _RELATIVE_NOISE_FLOOR * spread)
        penalty = self._penalties(sigma, spread, len(x), location_cost)

        # noise may shrink or grow along a curve (training noise falls with the loss): a noisy stretch is judged by
        # its own noise, never a quieter one than the curve's
        local = local_sigma(values) * np.sqrt((1.0 + self.rho_) / (1.0 - self.rho_) ** 2)[:, None]  # [C, S]
        rows = []
        for curve, name in enumerate(names):
            if spread[curve] == 0:
                continue
            weights = (sigma[curve] / np.maximum(local[curve], sigma[curve])) ** 2  # in units of the curve's sigma
            for start, end, other_start in self._windows(x, values[curve], sigma[curve], penalty[curve],
                                                          location_cost, weights):
                for begin in (start, other_start):  # the second only if the first fails
                    if begin is None:
                        break
                    scale = max(sigma[curve], float(np.sqrt(np.mean(local[curve, begin:end] ** 2))))
                    row = self._describe(given[begin:end], x[begin:end], values[curve, begin:end], scale,
                                         location_cost, self.rho_[curve])
                    if row is not None:
                        break
                if row is not None:
                    rows.append({"curve": name, **row})
        self.transitions_ = pd.DataFrame(rows, columns=list(TRANSITION_COLUMNS))
        self.sigma_, self.penalty_ = sigma, penalty
        return self

    def _penalties(self, sigma, spread, n_steps: int, location_cost: float) -> np.ndarray:
        """Penalty per curve [C] in the cost's units: a change adds one level and one location."""
        if not isinstance(self.penalty, str):
            return np.full(len(sigma), float(self.penalty))
        sigma = np.maximum(sigma, _RELATIVE_NOISE_FLOOR * spread)
        return _n_params(1, 1, location_cost) * sigma**2 * np.log(n_steps)

    def _changes(self, y, penalty: float, weights=None) -> list[int]:
        """Change points of y [S] (index of each new segment's first checkpoint), by binary segmentation (Scott &
        Knott 1974) rather than PELT: ruptures' PELT is pure Python with O(S^2) cost calls at this penalty, ~50x
        slower here, and the grouping in `_windows` repairs greedy splits anyway."""
        cost = {"custom_cost": _PrefixSumL2(weights)} if self.model == "l2" else {"model": self.model}
        return rpt.Binseg(**cost, min_size=self.min_size, jump=1).fit(y).predict(pen=penalty)[:-1]

    def _large_changes(self, y, penalty: float, size: float) -> list[int]:
        """The change points of y whose segments' means differ by more than `size`."""
        bounds = [0, *self._changes(y, penalty), len(y)]
        means = [y[lo:hi].mean() for lo, hi in zip(bounds[:-1], bounds[1:])]
        return [bounds[j] for j in range(1, len(bounds) - 1) if abs(means[j] - means[j - 1]) > size]

    def _windows(self, x, y, sigma: float, penalty: float, location_cost: float, weights=None) -> list[tuple]:
        """Checkpoint windows (start, end, other start), each spanning one candidate transition and its two plateaus;
        other start is None, or where the plateau before starts if the group before took this rise's first change
        (a sigmoid over the first rise and the foot of the next explains them nearly as well as levels do, which
        leaves the next rise a window that starts on its way up: not seen whole, or no better than a relaxation)."""
        bounds = [0, *self._changes(y, penalty, weights), len(y)]
        # segment k is y[bounds[k]:bounds[k+1]]; change j sits between segments j-1 and j
        means = np.array([y[lo:hi].mean() for lo, hi in zip(bounds[:-1], bounds[1:])])
        windows = []
        j, previous_first = 1, 1
        while j < len(bounds) - 1:
            first = j
            direction = np.sign(means[j] - means[j - 1])
            while (j + 1 < len(bounds) - 1 and np.sign(means[j + 1] - means[j]) == direction
                   and _one_sigmoid_suffices(x, y, bounds[first - 1:j + 3], sigma, location_cost)):
                j += 1
            took_foot = first - 1 > previous_first and np.sign(means[first - 1] - means[first - 2]) == direction
            windows.append((bounds[first - 1], bounds[j + 1], bounds[first - 2] if took_foot else None))
            previous_first = first
            j += 1
        return windows

    def _describe(self, steps, xs, ys, sigma: float, location_cost: float, rho: float) -> dict | None:
        """Table row for the candidate in a window of checkpoints (steps, axis xs, values ys, all [W]; noise scale
        sigma, lag-1 correlation rho), or None when it fails the acceptance tests of the module docstring."""
        # candidate centres at the checkpoints and halfway between them: a clean jump is fitted exactly
        centers = np.sort(np.concatenate([xs, (xs[1:] + xs[:-1]) / 2]))
        fit = fit_sigmoids(xs, ys[None, :], centers=centers)
        sigmoid_sse = float(((fit.at(xs)[0] - ys) ** 2).sum())
        if rho > 0:  # correlated noise: every fit by generalized least squares, the sigmoid's on its grid
            shapes = expit((xs[:, None, None] - centers[None, :, None]) / width_grid(xs, 12)[None, None, :])
            refined = expit((xs - fit.center[0]) / fit.width[0])  # the least-squares optimum, off the grid
            sigmoid_sse = _best_basis_sse(ys, np.column_stack([shapes.reshape(len(xs), -1), refined]), rho)
            sigma = sigma * (1.0 - rho)  # the innovations' scale (sigma is the long-run one: theirs / (1 - rho))
        # The sigmoid must beat every smooth explanation by the criterion: a line in log-step, an exponential
        # relaxation and a power law in steps (the smooth losses of training), each charged its own parameters.
        smooth = [(_best_basis_sse(ys, xs[:, None], rho), _n_params(2, 0, location_cost))]
        t = step_from_log(xs) if self.log_steps else xs
        smooth += [(_relaxation_sse(t, ys, rho), _n_params(2, 1, location_cost)),
                   (_power_law_sse(t, ys, rho), _n_params(2, 2, location_cost))]
        for sse, k in smooth:
            extra = max(_n_params(2, 2, location_cost) - k, location_cost)  # at least one located parameter
            if (sse - sigmoid_sse) / sigma**2 <= extra * np.log(len(xs)):
                return None
        spread = np.log(9.0) * fit.width[0]  # a logistic is 10% / 90% of the way at centre -/+ ln(9) * width
        marks = np.array([fit.center[0] - spread, fit.center[0], fit.center[0] + spread])
        if marks[0] < xs[0] or marks[-1] > xs[-1]:
            return None
        in_decades = marks if self.log_steps else log_step(marks)
        if in_decades[-1] - in_decades[0] > self.max_rise_decades:
            return None
        onset, mid, end = steps[np.minimum(np.searchsorted(xs, marks, side="left"), len(xs) - 1)].tolist()
        before, after = float(fit.low[0]), float(fit.low[0] + fit.amplitude[0])  # the levels it connects
        return {"step": mid, "onset_step": onset, "end_step": end, "before": before, "after": after,
                "size": after - before, "direction": int(np.sign(after - before))}


def thin_checkpoints(steps, x, values, n_bins: int):
    """Curves of many checkpoints thinned to the middle checkpoint of each of at most `n_bins` bins of equal width
    in x (log-step: a loss logged every step keeps its early checkpoints and one in each stretch of the dense late
    ones). Not averaged: a bin's mean is less noisy the more checkpoints it holds, and that changing noise read as
    transitions (22 false on 40 curves of 20,000 checkpoints, none thinned). Returns (steps [B], x [B], values
    [C, B]) at the kept checkpoints."""
    index = np.minimum(((x - x[0]) / (x[-1] - x[0]) * n_bins).astype(int), n_bins - 1)
    starts = np.flatnonzero(np.r_[True, np.diff(index) > 0])  # first checkpoint of each non-empty bin
    middle = starts + (np.diff(np.r_[starts, len(x)]) - 1) // 2
    return steps[middle], x[middle], values[:, middle]


def despike(values: np.ndarray, *, window: int = 5, threshold: float = 4.0) -> np.ndarray:
    """values [C, S] with spikes replaced (a Hampel filter, Pearson 2002): a checkpoint farther than `threshold`
    noise sds (`difference_sigma`) from the median of the `window` around it takes that median. A median follows
    steps and monotone rises exactly, so only lone excursions change: heavy-tailed noise (Student-t, 2 degrees of
    freedom) otherwise reads a spike as a rise and a fall."""
    from scipy.ndimage import median_filter

    if values.shape[1] < window:
        return values
    median = median_filter(values, size=(1, window), mode="nearest")
    scale = difference_sigma(values)[:, None]  # not the deviations' MAD: on a clean monotone stretch it is 0
    return np.where(np.abs(values - median) > threshold * scale, median, values)


def mean_difference_sigma(values: np.ndarray) -> np.ndarray:
    """Noise scale per curve, [C, S] -> [C], from the mean absolute first difference (about its median), scaled to
    match `difference_sigma` on Gaussian noise: defined where more than half the differences are exactly 0."""
    diffs = np.diff(values, axis=-1)
    deviation = np.abs(diffs - np.median(diffs, axis=-1, keepdims=True)).mean(axis=-1)
    return np.sqrt(np.pi / 2) * deviation / np.sqrt(2.0)


def local_sigma(values: np.ndarray, width: int = 15) -> np.ndarray:
    """Noise scale at each checkpoint, [C, S]: `difference_sigma` over the `width` first differences around it."""
    from numpy.lib.stride_tricks import sliding_window_view

    diffs = np.diff(values, axis=-1)
    half = width // 2
    padded = np.pad(diffs, ((0, 0), (half, width - 1 - half)), mode="edge")
    windows = sliding_window_view(padded, width, axis=-1)  # [C, S-1, width]
    centred = windows - np.median(windows, axis=-1, keepdims=True)
    per_diff = MAD_TO_SIGMA * np.median(np.abs(centred), axis=-1) / np.sqrt(2.0)  # [C, S-1]
    return np.concatenate([per_diff[:, :1], (per_diff[:, 1:] + per_diff[:, :-1]) / 2, per_diff[:, -1:]], axis=1)


def _n_params(regular: int, located: int, location_cost: float) -> float:
    """Effective parameter count: regular parameters cost 1, located ones `location_cost` (module docstring)."""
    return regular + located * location_cost


def _one_sigmoid_suffices(x, y, bounds: list[int], sigma: float, location_cost: float) -> bool:
    """Within y[bounds[0]:bounds[-1]], one sigmoid explains the data at least as well by the criterion as
    constant levels with changes at the inner bounds."""
    lo, hi = bounds[0], bounds[-1]
    levels = sum(_sse(y[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))
    sigmoid = float(((fit_sigmoids(x[lo:hi], y[None, lo:hi]).at(x[lo:hi])[0] - y[lo:hi]) ** 2).sum())
    n_changes = len(bounds) - 2
    extra = _n_params(n_changes + 1, n_changes, location_cost) - _n_params(2, 2, location_cost)
    return (sigmoid - levels) / sigma**2 <= extra * np.log(hi - lo)


def _best_basis_sse(y: np.ndarray, basis: np.ndarray, rho: float = 0.0) -> float:
    """Smallest residual sum of squares of y [W] ~ a + b * basis[:, k] over the candidate shapes basis [W, K]; for
    AR(1) noise of lag-1 correlation rho > 0, the generalized one (Prais & Winsten 1954: both sides whitened)."""
    ones = np.ones(len(y))
    if rho > 0:
        y, ones, basis = (_whiten(z, rho) for z in (y, ones, basis))
    # regress out the (whitened) constant: plain centring when rho is 0
    y = y - ones * (ones @ y) / (ones @ ones)
    centred = basis - ones[:, None] * (ones @ basis)[None, :] / (ones @ ones)
    ss = (centred**2).sum(axis=0)
    explained = np.where(ss > 0, (y @ centred) ** 2 / np.where(ss > 0, ss, 1.0), 0.0)
    return max(float(y @ y) - float(explained.max()), 0.0)


def _whiten(z: np.ndarray, rho: float) -> np.ndarray:
    """z [W] or [W, K] with AR(1) correlation rho taken out along the first axis (Prais-Winsten: the first row
    scaled by sqrt(1 - rho^2), the others z[i] - rho z[i - 1])."""
    out = np.array(z, dtype=float)
    out[1:] -= rho * np.asarray(z, dtype=float)[:-1]
    out[0] *= np.sqrt(1.0 - rho**2)
    return out


def _relaxation_sse(t: np.ndarray, y: np.ndarray, rho: float = 0.0) -> float:
    """Best fit of exponential relaxation a + b * exp(-t / tau), tau on a grid over the window's steps."""
    taus = np.geomspace(max(t[0], 1.0) / 3, max(t[-1], 1.0) * 3, 64)
    return _best_basis_sse(y, np.exp(-t[:, None] / taus[None, :]), rho)


def _power_law_sse(t: np.ndarray, y: np.ndarray, rho: float = 0.0) -> float:
    """Best fit of a power law a + b * (1 + t / t0)^-alpha, (t0, alpha) on a grid."""
    t0 = np.geomspace(max(t[0], 1.0) / 3, max(t[-1], 1.0) * 3, 24)
    alpha = np.geomspace(0.1, 3.0, 16)
    basis = (1 + t[:, None, None] / t0[None, :, None]) ** -alpha[None, None, :]
    return _best_basis_sse(y, basis.reshape(len(t), -1), rho)


def _sse(y: np.ndarray) -> float:
    """Residual sum of squares of a constant fit."""
    return float(((y - y.mean()) ** 2).sum())


class _PrefixSumL2(rpt.base.BaseCost):
    """ruptures' "l2" cost (segment RSS around its mean) of one curve in O(1) per segment from prefix sums, weighted
    by `weights` [S] (the inverse noise variance at each checkpoint, relative to the curve's) when given."""

    model = "l2"
    min_size = 1

    def __init__(self, weights=None):
        self.weights = weights

    def fit(self, signal):
        y = np.asarray(signal, dtype=float).ravel()
        w = np.ones_like(y) if self.weights is None else np.asarray(self.weights, dtype=float)
        self.signal = y[:, None]
        # Python lists: scalar indexing into them is several times faster than into numpy arrays
        self.w, self.wy, self.wyy = ([0.0, *np.cumsum(term).tolist()] for term in (w, w * y, w * y * y))
        return self

    def error(self, start, end):
        if end - start < self.min_size:
            raise rpt.exceptions.NotEnoughPoints
        total, weighted = self.w[end] - self.w[start], self.wy[end] - self.wy[start]
        return self.wyy[end] - self.wyy[start] - weighted * weighted / total
