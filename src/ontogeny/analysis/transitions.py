"""Transitions: abrupt changes of level in training curves, found by change-point detection.

Pipeline per curve (values [S] at checkpoint steps [S]):

1. Estimate the noise scale sigma robustly from first differences (MAD), so transitions do not inflate it.
2. Segment the checkpoints into constant levels with ruptures' PELT (Killick et al. 2012) under the BIC
   penalty 2 * sigma^2 * ln(S): Schwarz's criterion for a Gaussian mean-shift model with known variance, two
   parameters (location and new level) per change point (Yao 1988).
3. Keep a change only if a jump explains its two neighbouring segments better than a straight line in
   log10(1 + step) does (again BIC; step: 3 parameters, line: 2). A smooth trend such as a power-law loss, which
   PELT cuts into a staircase, is locally a line and so yields no transition; a real jump beats any line.
4. Merge consecutive kept changes in the same direction when the segment between them is a ramp rather than a
   plateau (a line beats a constant there, BIC): one sigmoid rise cut into pieces is one transition.
5. Fit a sigmoid in log-step to the checkpoints spanning each transition's two plateaus; the onset, midpoint
   and end are the first checkpoints by which the fitted curve has covered 10%, 50% and 90% of its change, and
   `before` / `after` are its fitted values at the ends of that window.

Why no resampling onto an even log-step grid: a piecewise-constant model depends only on the order of the
checkpoints, not on their spacing, and each checkpoint is one independent noisy measurement. Interpolated grid
points would be correlated copies of the same noise, which shrinks the difference-based sigma and breaks the BIC
(on pure noise, interpolating a log-then-linear schedule gave more than two false transitions per curve). The
checkpoint spacing enters where it matters: the line, plateau and sigmoid fits use log10(1 + step) (or step).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import os; DEG=int(os.environ.get("DEG","2")); PENK=float(os.environ.get("PENK","1"))
import pandas as pd
import ruptures as rpt

from ._common import check_curves, check_steps, difference_sigma, log_step, step_from_log
from ._sigmoid import fit_sigmoids

# The smoothest simple dynamics, exponential relaxation 1 - exp(-t / tau), covers 10% -> 90% of its change between
# t = tau * ln(10/9) and t = tau * ln(10), i.e. over log10(ln(10) / ln(10/9)) = 1.34 decades of steps whatever tau;
# power laws (1 + t / t0)^-alpha take longer still. A change that is faster than that in log-step is abrupt.
RELAXATION_RISE_DECADES = float(np.log10(np.log(10.0) / np.log(10.0 / 9.0)))

TRANSITION_COLUMNS = ("curve", "step", "onset_step", "end_step", "before", "after", "size", "direction")

# A noise-free curve would give sigma = 0 and a zero penalty; a floor far above float rounding keeps the criteria
# defined without affecting any curve that carries measurable noise.
_RELATIVE_NOISE_FLOOR = 1e-6


class TransitionDetector:
    """Detect abrupt level changes in one or many curves sharing checkpoint steps.

    Parameters (stored only): `log_steps` measures trends and widths in log10(1 + step) rather than in step;
    `model` is the ruptures cost ("l2": piecewise-constant mean); `min_size` is the shortest segment in
    checkpoints; `penalty` is "bic" (2 sigma^2 ln S per change), "mbic" (3 sigma^2 ln S, the stricter modified
    BIC of Zhang & Siegmund 2007) or a number in the cost's units; `max_rise_decades` is the slowest 10%-90%
    rise, in decades of steps, still called a transition (default: that of exponential relaxation,
    RELAXATION_RISE_DECADES).

    Fitted: `transitions_` (DataFrame, one row per transition, columns TRANSITION_COLUMNS; steps are checkpoint
    steps), `sigma_` [C] noise scale per curve, `penalty_` [C] the penalty used.
    """

    def __init__(self, *, log_steps: bool = True, model: str = "l2", min_size: int = 3,
                 penalty: str | float = "bic", max_rise_decades: float = RELAXATION_RISE_DECADES):
        self.log_steps = log_steps
        self.model = model
        self.min_size = min_size
        self.penalty = penalty
        self.max_rise_decades = max_rise_decades

    def fit(self, steps, values, *, names: Sequence | None = None) -> TransitionDetector:
        """Detect transitions: steps [S], values [S] or [C, S]; `names` [C] label the curves (default 0..C-1)."""
        criteria = {"bic": 2.0, "mbic": 3.0}  # penalty per change point, in units of sigma^2 ln(S)
        if isinstance(self.penalty, str) and (self.penalty not in criteria or self.model != "l2"):
            raise ValueError(f"penalty={self.penalty!r}: named penalties are 'bic' and 'mbic', derived for the "
                             "Gaussian 'l2' cost; pass a number for any other model")
        steps = check_steps(steps, min_length=2 * self.min_size)
        values = check_curves(values, len(steps))
        names = list(range(len(values))) if names is None else list(names)
        if len(names) != len(values):
            raise ValueError(f"got {len(names)} names for {len(values)} curves")
        x = log_step(steps) if self.log_steps else steps
        spread = values.max(axis=1) - values.min(axis=1)
        sigma = np.maximum(difference_sigma(values), _RELATIVE_NOISE_FLOOR * spread)  # [C]
        if isinstance(self.penalty, str):
            penalty = criteria[self.penalty] * sigma**2 * np.log(len(steps))
        else:
            penalty = np.full(len(values), float(self.penalty))

        rows = []
        for curve, name in enumerate(names):
            if spread[curve] == 0:
                continue
            for start, end in self._windows(x, values[curve], sigma[curve], penalty[curve]):
                row = self._describe(steps[start:end], x[start:end], values[curve, start:end], sigma[curve])
                if row is not None:
                    rows.append({"curve": name, **row})
        self.transitions_ = pd.DataFrame(rows, columns=list(TRANSITION_COLUMNS))
        self.sigma_, self.penalty_ = sigma, penalty
        return self

    def _windows(self, x: np.ndarray, y: np.ndarray, sigma: float, penalty: float) -> list[tuple[int, int]]:
        """Checkpoint windows [start, end), each spanning one candidate transition and its two plateaus."""
        # Binary segmentation (Scott & Knott 1974) rather than PELT: ruptures' PELT is pure Python and O(S^2)
        # cost calls at this penalty, ~50x slower here; the pruning below corrects its greedy splits anyway.
        cost = {"custom_cost": _PrefixSumL2()} if self.model == "l2" else {"model": self.model}
        algo = rpt.Binseg(**cost, min_size=self.min_size, jump=1)
        bounds = [0, *algo.fit(y).predict(pen=penalty)]
        # segment k is y[bounds[k]:bounds[k+1]]; change j sits between segments j-1 and j
        means = np.array([y[lo:hi].mean() for lo, hi in zip(bounds[:-1], bounds[1:])])
        windows = []
        j = 1
        while j < len(bounds) - 1:
            first = j
            direction = np.sign(means[j] - means[j - 1])
            # extend through further changes the same way while one sigmoid explains them all (a rise cut
            # into pieces) at least as well as separate jumps (a staircase)
            while (j + 1 < len(bounds) - 1 and np.sign(means[j + 1] - means[j]) == direction
                   and _one_sigmoid_suffices(x, y, bounds[first - 1:j + 3], sigma)):
                j += 1
            windows.append((bounds[first - 1], bounds[j + 1]))
            j += 1
        return windows

    def _describe(self, steps: np.ndarray, xs: np.ndarray, ys: np.ndarray, sigma: float) -> dict | None:
        """Table row for the transition in a window of checkpoints (steps, axis xs, values ys, all [W]).

        None when the change is not observed whole (its fitted 10% or 90% point lies outside the window, as
        for a curve already falling at its first checkpoint: there is no old level to leave) or when it is
        slower than `max_rise_decades`.
        """
        # candidate centres at the checkpoints and halfway between them: a clean jump is fitted exactly
        centers = np.sort(np.concatenate([xs, (xs[1:] + xs[:-1]) / 2]))
        fit = fit_sigmoids(xs, ys[None, :], centers=centers)
        sigmoid_sse = float(((fit.at(xs)[0] - ys) ** 2).sum())
        if (_poly_sse(xs, ys, DEG) - sigmoid_sse) / sigma**2 <= PENK * np.log(len(xs)):
            return None  # a smooth parabola explains the window as well (BIC; the sigmoid has 1 parameter more)
        spread = np.log(9.0) * fit.width[0]  # a logistic is 10% / 90% of the way at centre -/+ ln(9) * width
        marks = np.array([fit.center[0] - spread, fit.center[0], fit.center[0] + spread])
        if marks[0] < xs[0] or marks[-1] > xs[-1]:
            return None
        in_decades = marks if self.log_steps else log_step(marks)
        if in_decades[-1] - in_decades[0] > self.max_rise_decades:
            return None
        onset, mid, end = steps[np.minimum(np.searchsorted(xs, marks, side="left"), len(xs) - 1)].tolist()
        before, after = float(fit.start[0]), float(fit.end[0])
        return {"step": mid, "onset_step": onset, "end_step": end, "before": before, "after": after,
                "size": after - before, "direction": int(np.sign(after - before))}


class _PrefixSumL2(rpt.base.BaseCost):
    """ruptures' "l2" cost (segment RSS around its mean) in O(1) per segment from prefix sums."""

    model = "l2"
    min_size = 1

    def fit(self, signal):
        self.signal = np.asarray(signal, dtype=float).reshape(len(signal), -1)  # [S, 1] for one curve
        # Python lists: scalar indexing into them is several times faster than into numpy arrays
        self.sums = [row.tolist() for row in np.vstack([np.zeros((1, self.signal.shape[1])),
                                                        np.cumsum(self.signal, axis=0)])]
        self.squares = np.concatenate([[0.0], np.cumsum((self.signal**2).sum(axis=1))]).tolist()
        return self

    def error(self, start, end):
        if end - start < self.min_size:
            raise rpt.exceptions.NotEnoughPoints
        totals = [high - low for high, low in zip(self.sums[end], self.sums[start])]
        return self.squares[end] - self.squares[start] - sum(t * t for t in totals) / (end - start)


def _sse(y: np.ndarray) -> float:
    """Residual sum of squares of a constant fit."""
    return float(((y - y.mean()) ** 2).sum())


def _poly_sse(x: np.ndarray, y: np.ndarray, degree: int) -> float:
    """Residual sum of squares of the least-squares polynomial of `degree` in x."""
    t = (x - x.mean()) / (np.ptp(x) or 1.0)
    design = np.vander(t, degree + 1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(((design @ coef - y) ** 2).sum())


def _one_sigmoid_suffices(x: np.ndarray, y: np.ndarray, bounds: list[int], sigma: float) -> bool:
    """Within y[bounds[0]:bounds[-1]], one sigmoid (4 parameters) explains the data at least as well by BIC as
    constant levels with jumps at the inner bounds (2 parameters per jump, 1 per level)."""
    lo, hi = bounds[0], bounds[-1]
    levels = sum(_sse(y[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))
    fit = fit_sigmoids(x[lo:hi], y[None, lo:hi])
    sigmoid = float(((fit.at(x[lo:hi])[0] - y[lo:hi]) ** 2).sum())
    n_jumps = len(bounds) - 2
    return (sigmoid - levels) / sigma**2 <= (2 * n_jumps + 1 - 4) * np.log(hi - lo)


def synthetic_curves(n_curves: int, n_steps: int, *, n_transitions: int = 1, noise: float = 0.05,
                     kind: str = "sigmoid", power_law: float = 0.0, max_step: float = 1e5,
                     random_state=None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Curves with known transitions, like ruptures' `pw_constant`.

    Returns (steps [S] integer log-spaced checkpoints from 1 to max_step, values [C, S], true_steps: one array
    per curve of its transition midpoints). `kind` "sigmoid" gives logistic changes of width 0.02-0.1 decades,
    "step" gives jumps (their true step is the first checkpoint after the change). Transitions are at least 0.5
    decades apart and from the ends; jumps are 0.3-1.0 in size with random sign; Gaussian noise of scale
    `noise` is added, and `power_law` > 0 adds the smooth background power_law * (1 + step)^-0.5.
    """
    rng = np.random.default_rng(random_state)
    raw = np.round(np.geomspace(1, max_step, n_steps))
    steps = np.maximum.accumulate(raw - np.arange(n_steps)) + np.arange(n_steps)  # strictly increasing integers
    x = log_step(steps)
    values = np.empty((n_curves, n_steps))
    true_steps = []
    for curve in range(n_curves):
        centers = _spaced_centers(rng, x[0] + 0.5, x[-1] - 0.5, n_transitions, gap=0.5)
        sizes = rng.uniform(0.3, 1.0, n_transitions) * rng.choice([-1.0, 1.0], n_transitions)
        level = np.full(n_steps, rng.uniform(0.0, 1.0))
        for center, size in zip(centers, sizes):
            if kind == "sigmoid":
                level += size / (1 + np.exp(-(x - center) / rng.uniform(0.02, 0.1)))
            elif kind == "step":
                level += size * (x >= center)
            else:
                raise ValueError(f"kind must be 'sigmoid' or 'step', got {kind!r}")
        if kind == "step":
            true_steps.append(steps[np.searchsorted(x, centers)].astype(float))
        else:
            true_steps.append(step_from_log(centers))
        values[curve] = level + power_law * (1 + steps) ** -0.5 + rng.normal(0.0, noise, n_steps)
    return steps.astype(np.int64), values, true_steps


def _spaced_centers(rng, low: float, high: float, count: int, *, gap: float) -> np.ndarray:
    """`count` sorted uniform draws in [low, high], consecutive ones at least `gap` apart."""
    free = high - low - gap * max(count - 1, 0)
    if free < 0:
        raise ValueError(f"cannot fit {count} transitions {gap} decades apart in [{low:.2f}, {high:.2f}]")
    return np.sort(rng.uniform(0.0, free, count)) + low + gap * np.arange(count)


def breakpoint_scores(true, found, margin: float, *, log_steps: bool = True) -> tuple[float, float]:
    """Precision and recall of found change steps against true ones (Truong et al. 2020, ruptures' metric).

    `true` and `found` are each the steps of one curve ([K]) or a list with one such array per curve; a found
    step is a hit if it is within `margin` of a still unmatched true step, one-to-one, nearest first; `margin`
    is in decades of log10(1 + step) when log_steps, else in steps. Empty sets count as perfect scores.
    """
    true_sets, found_sets = _per_curve(true), _per_curve(found)
    if len(true_sets) != len(found_sets):
        raise ValueError(f"{len(true_sets)} curves of true steps but {len(found_sets)} of found steps")
    hits = n_true = n_found = 0
    for truth, guess in zip(true_sets, found_sets):
        if log_steps:
            truth, guess = log_step(truth), log_step(guess)
        n_true, n_found = n_true + len(truth), n_found + len(guess)
        distance = np.abs(guess[:, None] - truth[None, :])  # [found, true]
        pairs = sorted(zip(*np.nonzero(distance <= margin)), key=lambda pair: distance[pair])
        used_found, used_true = set(), set()
        for i, j in pairs:  # greedy nearest-first one-to-one matching
            if i not in used_found and j not in used_true:
                used_found.add(i)
                used_true.add(j)
        hits += len(used_found)
    precision = hits / n_found if n_found else 1.0
    recall = hits / n_true if n_true else 1.0
    return precision, recall


def _per_curve(steps) -> list[np.ndarray]:
    """A flat sequence of steps is one curve; a sequence of sequences is one per curve."""
    steps = list(steps)
    if steps and np.ndim(steps[0]) > 0:
        return [np.asarray(s, dtype=float).ravel() for s in steps]
    return [np.asarray(steps, dtype=float)]
