"""Small helpers shared by the analysis modules: the log-step axis, input checks, a robust noise scale."""

from __future__ import annotations

import functools

import numpy as np

# Normal-consistency factor of the median absolute deviation: MAD * 1.4826 estimates sigma (Hampel 1974).
MAD_TO_SIGMA = 1.482602218505602


def log_step(steps: np.ndarray) -> np.ndarray:
    """log10(1 + step): a log axis on which the step-0 checkpoint (the initial model) is still defined."""
    return np.log10(1.0 + np.asarray(steps, dtype=float))


def step_from_log(x: np.ndarray) -> np.ndarray:
    """Inverse of `log_step`."""
    return np.power(10.0, x) - 1.0


def check_steps(steps, *, min_length: int = 2) -> np.ndarray:
    """Validate checkpoint steps [S]: 1-D, finite, non-negative, strictly increasing; return them as float."""
    steps = np.asarray(steps, dtype=float)
    if steps.ndim != 1 or len(steps) < min_length:
        raise ValueError(f"steps must be 1-D with at least {min_length} checkpoints, got shape {steps.shape}")
    if not np.all(np.isfinite(steps)) or steps[0] < 0 or np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be finite, non-negative and strictly increasing")
    return steps


def check_curves(values, n_steps: int, *, name: str = "values") -> np.ndarray:
    """Validate curves: [S] or [N, S] finite values -> float array [N, S]."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2 or values.shape[1] != n_steps:
        raise ValueError(f"{name} must have shape [S] or [N, S] with S={n_steps}, got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds NaN or inf; drop diverged members or examples first")
    return values


def difference_sigma(values: np.ndarray) -> np.ndarray:
    """Robust noise scale per curve from first differences, [N, S] -> [N].

    For white noise of scale sigma, consecutive differences have scale sigma * sqrt(2); their MAD ignores the
    few large differences of a transition (Rousseeuw & Croux 1993; the usual change-point practice, e.g. the
    `sd` estimate of R's changepoint package).
    """
    diffs = np.diff(values, axis=-1)
    centred = diffs - np.median(diffs, axis=-1, keepdims=True)
    return MAD_TO_SIGMA * np.median(np.abs(centred), axis=-1) / np.sqrt(2.0)


# Savitzky-Golay smoother for the noise's autocorrelation: local quadratics over 17 checkpoints follow the slow
# parts of a curve, not AR(1) noise of correlation length 1-2 checkpoints.
SMOOTH_WINDOW, SMOOTH_ORDER = 17, 2
_CALIBRATION_LENGTH = 200


def long_run_sigma(values: np.ndarray, *, max_rho: float = 0.8, changes=None) -> tuple[np.ndarray, np.ndarray]:
    """Noise scale for comparing fits of curves whose checkpoints are correlated, [N, S] -> (sigma [N], rho [N]).

    With noise of variance s^2 and lag-1 correlation rho (AR(1)), a fit's residual sum of squares scales with the
    long-run variance s^2 (1 + rho) / (1 - rho), not with s^2 (the long-run-variance correction of change-point
    tests, e.g. Beran 1994), so that correlated wobbles on a plateau are not mistaken for changes. rho: the lag-1
    autocorrelation of the residuals from a Savitzky-Golay smoother, over the calm stretches only (where the
    smoother's slope is within 3 MADs of typical, so that no transition leaks in) and with residuals winsorized at
    3 MADs, mapped back through the smoother's known effect on AR(1) noise (it absorbs part of the correlation);
    clipped to [0, max_rho]. s is `difference_sigma` / sqrt(1 - rho). Too short a curve is taken as uncorrelated.
    `changes` (one list of checkpoint indices per curve: change points found so far) leaves their surroundings
    out too, for a short curve whose transitions fill so much of it that its slopes' MAD is theirs.
    """
    from scipy.ndimage import minimum_filter1d
    from scipy.signal import savgol_coeffs, savgol_filter

    values = np.atleast_2d(values)
    n = values.shape[-1]
    rho = np.zeros(len(values))
    if n >= 2 * SMOOTH_WINDOW:
        residual = values - savgol_filter(values, SMOOTH_WINDOW, SMOOTH_ORDER, axis=-1)
        slope = savgol_filter(values, SMOOTH_WINDOW, SMOOTH_ORDER, deriv=1, axis=-1)
        typical = slope - np.median(slope, axis=-1, keepdims=True)
        # 3 MADs of the slope, unless transitions fill so much of the curve that its MAD is theirs: then 3 sds of
        # the slope that noise alone gives at the largest correlation allowed
        gain = np.sqrt(np.sum(savgol_coeffs(SMOOTH_WINDOW, SMOOTH_ORDER, deriv=1) ** 2))
        noise_only = gain * difference_sigma(values) * np.sqrt((1 + max_rho) / (1 - max_rho) ** 2)
        calm = np.abs(typical) <= 3 * np.minimum(_mad_scale(slope), noise_only)[:, None]
        for i, found in enumerate(changes or []):
            calm[i, np.asarray(found, dtype=int)] = False
        # a residual is calm only if its whole window is: a step within reach bends the smoother (a misfit that
        # reads as correlated noise on the shoulders of a transition)
        calm = minimum_filter1d(calm, SMOOTH_WINDOW, axis=-1, mode="nearest")
        pairs = calm[:, 1:] & calm[:, :-1]
        bound = 3 * _mad_scale(residual)[:, None]
        residual = np.clip(residual, -bound, bound)
        rhos, correlations = _smoother_calibration()
        for i in range(len(values)):
            a, b = residual[i, 1:][pairs[i]], residual[i, :-1][pairs[i]]
            if len(a) > 20 and a.std() > 0 and b.std() > 0:
                rho[i] = np.interp(np.corrcoef(a, b)[0, 1], correlations, rhos)
    rho = np.clip(rho, 0.0, max_rho)
    sigma = difference_sigma(values) / np.sqrt(1.0 - rho) * np.sqrt((1.0 + rho) / (1.0 - rho))
    return sigma, rho


@functools.cache
def _smoother_calibration() -> tuple[np.ndarray, np.ndarray]:
    """(rho grid, the lag-1 correlation of Savitzky-Golay residuals of AR(1) noise with that rho), computed from
    the smoother's matrix: residual covariance (I - H) Sigma (I - H)^T."""
    from scipy.signal import savgol_filter

    n = _CALIBRATION_LENGTH
    residual_operator = np.eye(n) - savgol_filter(np.eye(n), SMOOTH_WINDOW, SMOOTH_ORDER, axis=0)
    lags = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    rhos = np.linspace(0.0, 0.95, 96)
    correlations = []
    for rho in rhos:
        covariance = residual_operator @ rho**lags @ residual_operator.T
        off, diagonal = np.trace(covariance[1:, :-1]), np.trace(covariance)
        correlations.append(off / diagonal)
    return rhos, np.array(correlations)


def _mad_scale(values: np.ndarray) -> np.ndarray:
    centred = values - np.median(values, axis=-1, keepdims=True)
    return MAD_TO_SIGMA * np.median(np.abs(centred), axis=-1)


def cannot_rebuild(run, step_name: str, *, minimum: int = 2) -> str | None:
    """Why a step that rebuilds the models from saved weights cannot run on `run`, as one summary line (None if it
    can): not trained from a spec, or weights saved at fewer than `minimum` steps (naming the setting to change)."""
    if not run.has_spec:
        return (f"{step_name}: skipped (a run made by {run.producer.get('kind', '?')}: it needs the spec of an "
                "`ontogeny run` to rebuild the models)")
    saved = run.checkpoints().step.nunique()
    if saved < minimum:
        return (f"{step_name}: skipped (weights saved at {saved} step(s), {minimum} needed: train with "
                f"record.weights_every set, e.g. --set record.weights_every={max(run.spec.steps // 10, 1)})")
    return None


def t_interval(values, ci: float) -> tuple[float, float]:
    """mean +- t quantile x standard error over the finite values (one per seed): valid at few seeds when they are
    near normal, unlike a bootstrap percentile interval, which never reaches past the seeds' own range."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return np.nan, np.nan
    from scipy import stats

    half = stats.t.ppf((1 + ci) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)
