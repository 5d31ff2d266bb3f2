"""Cross-seed agreement of SAE dictionaries: match two decoders' directions one to one and count the close pairs.

Two SAEs trained on the same activations from different seeds learn overlapping but not identical dictionaries
(Paulo & Belrose 2025, "Sparse autoencoders trained on the same data learn different features"). Their released
code (SrGonao/sae_overlap) aligns the encoder rows and the decoder rows one to one, each by its own Hungarian
assignment on signed cosines, and counts a latent as shared when both of its matched cosines exceed 0.7
(`shared_both_share`); `shared_share` is the decoder directions alone, which is what a dictionary is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def _unit_rows(directions: Tensor, name: str) -> np.ndarray:
    if directions.dim() != 2:
        raise ValueError(f"{name} must be a matrix of directions [W, d], got shape {list(directions.shape)}")
    rows = directions.detach().double().cpu()
    return (rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-12)).numpy()  # a zero row matches at cosine 0


def matching(a: Tensor, b: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one-to-one matching of a's rows [W, d] to b's rows [W', d] that maximizes the total cosine (Hungarian
    algorithm, scipy's linear_sum_assignment). Signs count: a decoder direction and its negative are opposite
    features (a latent's activation is nonnegative), so they match at cosine -1, not 1.
    Returns (rows of a, rows of b, their cosines), each [min(W, W')], ordered by a's row."""
    unit_a, unit_b = _unit_rows(a, "a"), _unit_rows(b, "b")
    if unit_a.shape[1] != unit_b.shape[1]:
        raise ValueError(f"directions must live in the same space: d = {unit_a.shape[1]} vs {unit_b.shape[1]}")
    cosines = unit_a @ unit_b.T  # [W, W']
    rows, cols = linear_sum_assignment(cosines, maximize=True)
    return rows, cols, cosines[rows, cols]


def match(a: Tensor, b: Tensor) -> Tensor:
    """Cosines [min(W, W')] of the one-to-one matching of decoder directions a [W, d] and b [W', d] that maximizes
    the total cosine (signed: see `matching`), ordered by a's row."""
    return torch.from_numpy(matching(a, b)[2])


def shared_share(cosines: Tensor | np.ndarray, threshold: float = 0.7) -> float:
    """Share of matched pairs whose cosine is at least `threshold`."""
    values = np.asarray(cosines, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no matched pairs: both dictionaries need at least one direction")
    return float((values >= threshold).mean())


def shared_both_share(encoders: tuple[Tensor, Tensor], decoders: tuple[Tensor, Tensor],
                      threshold: float = 0.7) -> float:
    """Paulo & Belrose's criterion: the share of a's latents whose encoder row and decoder row are each matched (two
    separate one-to-one assignments, see `matching`) at a cosine above `threshold`. encoders: (a [W, d_in], b
    [W', d_in]), the latents' encoder vectors; decoders: (a [W, d_out], b [W', d_out])."""
    by_encoder, by_decoder = matching(*encoders), matching(*decoders)
    if not np.array_equal(by_encoder[0], by_decoder[0]):
        raise ValueError("encoders and decoders must hold the same latents (one row each, the same widths)")
    return float(((by_encoder[2] > threshold) & (by_decoder[2] > threshold)).mean())


def agreement_curve(cosines: Tensor | np.ndarray, thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """`shared_share` at each threshold [T] (non-increasing in the threshold)."""
    return np.array([shared_share(cosines, t) for t in thresholds])


def pairwise_shared(decoders: Tensor, threshold: float = 0.7) -> np.ndarray:
    """`shared_share` of every pair of seeds' decoders [S, W, d] -> a symmetric [S, S] matrix, 1 on the diagonal."""
    n_seeds = decoders.shape[0]
    shares = np.eye(n_seeds)
    for i in range(n_seeds):
        for j in range(i + 1, n_seeds):
            shares[i, j] = shares[j, i] = shared_share(match(decoders[i], decoders[j]), threshold)
    return shares
