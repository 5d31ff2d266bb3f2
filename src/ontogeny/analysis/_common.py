"""Small helpers shared by the analysis modules: the log-step axis, input checks, a robust noise scale."""

from __future__ import annotations

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
