"""Vectorised least-squares sigmoid fits of many curves at once (shared by dynamics, hidden and transitions).

Model per curve, on a log-step axis x:  y(x) = a + b * logistic((x - m) / w).

For fixed (m, w) the model is linear in (a, b), so the best (a, b) and the residual sum of squares have a
closed form (variable projection, Golub & Pereyra 1973). We therefore profile (a, b) out and search a fixed grid
of (m, w) for every curve at once with one matrix product, [N, S] @ [S, K] -> [N, K], refine the winner by a
parabola through its grid neighbours, then polish all four parameters with two Levenberg-Marquardt steps,
vectorised over curves. The global grid search cannot diverge or stall in a far local minimum, as per-curve
Gauss-Newton from a fixed start can; the polish removes the grid's quantisation (the RSS matches scipy's
curve_fit started at the truth, see tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logit

# The 10%-90% rise of a logistic of width w spans 2 * ln(9) * w.
RISE_PER_WIDTH = 2.0 * np.log(9.0)


def expit(z) -> np.ndarray:
    """Logistic function as 0.5 + 0.5 tanh(z / 2): the same values, about 3x faster than scipy's expit here."""
    out = np.tanh(np.multiply(z, 0.5))
    out *= 0.5
    out += 0.5
    return out


@dataclass(frozen=True)
class SigmoidFit:
    """Fitted sigmoids y = low + amplitude * logistic((x - center) / width), every field [N].

    `start` and `end` are the fitted values at the first and last checkpoint; `halfway` is the x where the
    fitted curve is halfway between them (NaN for a constant curve); `r2` is the share of variance explained.
    """

    center: np.ndarray
    width: np.ndarray
    low: np.ndarray
    amplitude: np.ndarray
    start: np.ndarray
    end: np.ndarray
    halfway: np.ndarray
    r2: np.ndarray

    @property
    def rise(self) -> np.ndarray:
        """10%-90% rise width in x units (decades on a log10 axis), [N]."""
        return RISE_PER_WIDTH * self.width

    def at(self, x) -> np.ndarray:
        """Fitted curves evaluated at x [S] -> [N, S]."""
        shape = expit((np.asarray(x, dtype=float)[None, :] - self.center[:, None]) / self.width[:, None])
        return self.low[:, None] + self.amplitude[:, None] * shape


def width_grid(x: np.ndarray, n_widths: int) -> np.ndarray:
    """Candidate widths: from well below the median checkpoint spacing (a step) to half the x range (a line)."""
    spacing = float(np.median(np.diff(x)))
    return np.geomspace(spacing / 16.0, (x[-1] - x[0]) / 2.0, n_widths)


def fit_sigmoids(x, values, *, centers=None, n_centers: int = 96, n_widths: int = 12,
                 chunk: int = 2048) -> SigmoidFit:
    """Least-squares sigmoid of every curve: x [S] increasing, values [N, S] -> SigmoidFit with fields [N].

    Centres are searched on `centers` (default: `n_centers` even points over [x[0], x[-1]], so a transition is
    located only inside the observed range), widths on `width_grid`; the winner is refined by one parabola along
    each grid axis and polished by Levenberg-Marquardt within the grid's bounds (module docstring).
    """
    x = np.asarray(x, dtype=float)
    values = np.atleast_2d(np.asarray(values, dtype=float))
    n_curves, n_steps = values.shape
    if centers is None:
        centers = np.linspace(x[0], x[-1], min(n_centers, max(n_steps, 3)))
    centers = np.asarray(centers, dtype=float)
    log_widths = np.log(width_grid(x, n_widths))
    grid_m, grid_lw = np.meshgrid(centers, log_widths, indexing="ij")  # [Km, Kw]
    basis = expit((x[:, None] - grid_m.ravel()[None, :]) / np.exp(grid_lw.ravel())[None, :])  # [S, K]
    basis -= basis.mean(axis=0)
    inverse_ss = (1.0 / np.maximum((basis**2).sum(axis=0), 1e-30)).astype(np.float32)  # [K]
    basis32 = basis.astype(np.float32)  # float32 halves the cost; only the argmax and its neighbours use it

    fields = {name: np.empty(n_curves) for name in SigmoidFit.__dataclass_fields__}
    for lo in range(0, n_curves, chunk):  # chunks small enough to stay in cache
        block = values[lo:lo + chunk]  # [n, S]
        means = block.mean(axis=1, keepdims=True)
        centred = block - means
        cov = centred.astype(np.float32) @ basis32  # [n, K]
        cov *= cov
        cov *= inverse_ss  # explained sum of squares of the best (a, b) per candidate: maximising it minimises RSS
        score = cov.reshape(len(block), *grid_m.shape)  # [n, Km, Kw]
        i_m, i_w = np.unravel_index(score.reshape(len(block), -1).argmax(axis=1), grid_m.shape)
        center = centers[i_m] + _parabola_offset(score, i_m, i_w, axis=1) * _spacing(centers, i_m)
        log_width = log_widths[i_w] + _parabola_offset(score, i_m, i_w, axis=2) * _step(log_widths)
        center, width = _levenberg_marquardt(x, block, center, log_width, bounds=(centers[0], centers[-1],
                                                                                   log_widths[0], log_widths[-1]))
        for name, value in _profile(x, block, centred, means[:, 0], center, width).items():
            fields[name][lo:lo + chunk] = value
    return SigmoidFit(**fields)


def _profile(x, block, centred, means, center, width) -> dict[str, np.ndarray]:
    """Closed-form levels, fit quality and halfway point at the refined (center, width), every value [n]."""
    shape = expit((x[None, :] - center[:, None]) / width[:, None])  # [n, S]
    shape_mean = shape.mean(axis=1)
    shape_ss = (shape**2).sum(axis=1) - len(x) * shape_mean**2
    cross = (centred * shape).sum(axis=1)
    positive = shape_ss > 0
    amplitude = np.where(positive, cross / np.where(positive, shape_ss, 1.0), 0.0)
    low = means - amplitude * shape_mean
    start, end = low + amplitude * shape[:, 0], low + amplitude * shape[:, -1]
    total_ss = (centred**2).sum(axis=1)
    scale = np.abs(block).max(axis=1) + 1.0
    # a constant curve (up to float rounding) has no transition, hence no halfway point
    changed = (total_ss > 1e-24 * scale**2 * len(x)) & (np.abs(end - start) > 1e-12 * scale)
    r2 = np.where(total_ss > 0, amplitude**2 * shape_ss / np.where(total_ss > 0, total_ss, 1.0), np.nan)
    target = np.clip((shape[:, 0] + shape[:, -1]) / 2.0, 1e-300, 1 - 1e-16)
    halfway = np.where(changed, center + width * logit(target), np.nan)
    return {"center": center, "width": width, "low": low, "amplitude": amplitude, "start": start, "end": end,
            "halfway": halfway, "r2": r2}


def _levenberg_marquardt(x, block, center, log_width, *, bounds, iterations: int = 2):
    """Polish every curve's fit [n, S] by a few damped Gauss-Newton steps on all four parameters (Levenberg
    1944, Marquardt 1963), vectorised with the 4 x 4 normal equations summed explicitly; a step is kept only
    where it lowers the RSS. Returns (center [n], width [n]) clipped to the grid's bounds."""
    m_lo, m_hi, lw_lo, lw_hi = bounds
    low, amplitude, rss = _levels(x, block, center, np.exp(log_width))
    damping = np.full(len(block), 1e-3)
    for _ in range(iterations):
        width = np.exp(log_width)[:, None]
        offset = x[None, :] - center[:, None]  # [n, S]
        shape = expit(offset / width)
        residual = block - low[:, None] - amplitude[:, None] * shape
        # Jacobian columns: 1, shape, d/d centre = -slope, d/d log width = -slope * offset
        slope = amplitude[:, None] * shape * (1 - shape) / width
        slope_offset = slope * offset
        columns = (None, shape, -slope, -slope_offset)
        normal = np.empty((len(block), 4, 4))
        gradient = np.empty((len(block), 4))
        for i in range(4):  # row-wise dot products without [n, S, 4] temporaries
            gradient[:, i] = residual.sum(axis=1) if i == 0 else np.einsum("ns,ns->n", columns[i], residual)
            for j in range(i, 4):
                if i == 0:
                    value = float(x.size) if j == 0 else columns[j].sum(axis=1)
                else:
                    value = np.einsum("ns,ns->n", columns[i], columns[j])
                normal[:, i, j] = normal[:, j, i] = value
        diagonal = normal[:, np.arange(4), np.arange(4)].copy()
        normal[:, np.arange(4), np.arange(4)] += damping[:, None] * diagonal + 1e-12
        delta = np.linalg.solve(normal, gradient[..., None])[..., 0]  # [n, 4]
        new_center = np.clip(center + delta[:, 2], m_lo, m_hi)
        new_log_width = np.clip(log_width + delta[:, 3], lw_lo, lw_hi)
        new_low, new_amplitude = low + delta[:, 0], amplitude + delta[:, 1]
        new_shape = expit((x[None, :] - new_center[:, None]) / np.exp(new_log_width)[:, None])
        new_rss = ((block - new_low[:, None] - new_amplitude[:, None] * new_shape) ** 2).sum(axis=1)
        better = new_rss < rss
        center, log_width = np.where(better, new_center, center), np.where(better, new_log_width, log_width)
        low, amplitude = np.where(better, new_low, low), np.where(better, new_amplitude, amplitude)
        rss = np.where(better, new_rss, rss)
        damping = np.where(better, damping / 10, damping * 10)
    return center, np.exp(log_width)


def _levels(x, block, center, width) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form (low, amplitude, RSS) of curves [n, S] for a given centre and width, each [n]."""
    shape = expit((x[None, :] - center[:, None]) / width[:, None])
    shape_mean, value_mean = shape.mean(axis=1), block.mean(axis=1)
    shape_c = shape - shape_mean[:, None]
    shape_ss = (shape_c**2).sum(axis=1)
    amplitude = np.where(shape_ss > 0, ((block - value_mean[:, None]) * shape_c).sum(axis=1)
                         / np.where(shape_ss > 0, shape_ss, 1.0), 0.0)
    low = value_mean - amplitude * shape_mean
    rss = ((block - low[:, None] - amplitude[:, None] * shape) ** 2).sum(axis=1)
    return low, amplitude, rss


def _step(grid: np.ndarray) -> float:
    return float(grid[1] - grid[0]) if len(grid) > 1 else 0.0


def _spacing(grid: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Distance to the nearer neighbour of grid[index] (an uneven grid may be passed as centres)."""
    if len(grid) < 2:
        return np.zeros(len(index))
    gaps = np.diff(grid)
    left = gaps[np.clip(index - 1, 0, len(gaps) - 1)]
    right = gaps[np.clip(index, 0, len(gaps) - 1)]
    return np.minimum(left, right)


def _parabola_offset(score: np.ndarray, i_m: np.ndarray, i_w: np.ndarray, *, axis: int) -> np.ndarray:
    """Vertex offset, in grid steps within [-0.5, 0.5], of the parabola through the best score and its two
    neighbours along `axis` (1: centres, 2: widths); 0 at the grid edge or where the score is not concave."""
    size = score.shape[axis]
    index = i_m if axis == 1 else i_w
    rows = np.arange(len(score))
    interior = (index > 0) & (index < size - 1)
    below, above = np.clip(index - 1, 0, size - 1), np.clip(index + 1, 0, size - 1)
    if axis == 1:
        s_lo, s_0, s_hi = score[rows, below, i_w], score[rows, i_m, i_w], score[rows, above, i_w]
    else:
        s_lo, s_0, s_hi = score[rows, i_m, below], score[rows, i_m, i_w], score[rows, i_m, above]
    curvature = s_lo - 2 * s_0 + s_hi
    ok = interior & (curvature < 0)
    offset = np.where(ok, 0.5 * (s_lo - s_hi) / np.where(ok, curvature, -1.0), 0.0)
    return np.clip(offset, -0.5, 0.5)
