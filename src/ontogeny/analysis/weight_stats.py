"""Hu et al. 2023's weight statistics ("Latent state models of training dynamics"): the features their training maps
are fitted on, per member at each checkpoint with saved weights.

Over a member's K weight matrices (every parameter that is a matrix for each member: embeddings, projections,
unembedding) and its biases (vectors, LayerNorm gains left out): the mean over matrices of the L1 norm, the L2
(Frobenius) norm and their ratio (sparsity: lower is sparser); the mean, median and variance (no Bessel correction)
of all weights together, and of all biases; the mean over matrices of the trace (the sum of the diagonal of a
non-square matrix), of the spectral norm and of trace / spectral norm; the mean and variance of the singular values
of all matrices together. As listed in the metrics table of their package (visualizing-training); its two modular-
addition-only metrics (gradient symmetricity, distance irrelevance) are left out. Written here: a few reductions
over torch's batched SVD.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

STATISTICS = ("weights/l1", "weights/l2", "weights/l1_over_l2", "weights/mean", "weights/median", "weights/variance",
              "biases/mean", "biases/median", "biases/variance", "weights/trace", "weights/spectral_norm",
              "weights/trace_over_spectral_norm", "weights/singular_mean", "weights/singular_variance")


def weight_statistics(model: nn.Module) -> pd.DataFrame:
    """STATISTICS (columns) of each member (rows 0..M-1) of an ensemble whose parameters are [M, ...]."""
    with torch.no_grad():
        params = {name: p.detach() for name, p in model.named_parameters()}
        matrices = [p.double() for p in params.values() if p.dim() == 3]  # each [M, a, b]
        biases = [p.double() for name, p in params.items() if p.dim() == 2 and not name.endswith("gain")]
        if not matrices:
            raise ValueError("the model has no weight matrices to describe")
        l1 = torch.stack([m.abs().sum(dim=(1, 2)) for m in matrices])  # [K, M]
        l2 = torch.stack([m.square().sum(dim=(1, 2)).sqrt() for m in matrices])
        singular = [torch.linalg.svdvals(m) for m in matrices]  # each [M, min(a, b)], descending
        spectral = torch.stack([s[:, 0] for s in singular])  # [K, M]
        trace = torch.stack([m.diagonal(dim1=1, dim2=2).sum(dim=1) for m in matrices])
        weights = torch.cat([m.flatten(1) for m in matrices], dim=1)  # [M, all weights]
        pooled = torch.cat(singular, dim=1)  # [M, all singular values]
        columns = {"weights/l1": l1.mean(0), "weights/l2": l2.mean(0), "weights/l1_over_l2": (l1 / l2).mean(0),
                   **_moments("weights", weights),
                   **(_moments("biases", torch.cat(biases, dim=1)) if biases else {}),
                   "weights/trace": trace.mean(0), "weights/spectral_norm": spectral.mean(0),
                   "weights/trace_over_spectral_norm": (trace / spectral).mean(0),
                   "weights/singular_mean": pooled.mean(1), "weights/singular_variance": pooled.var(1, correction=0)}
    return pd.DataFrame({name: columns[name].numpy() for name in STATISTICS if name in columns})


def _moments(kind: str, values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean, median (the lower middle value for an even count, as torch) and variance of values [M, N] per row."""
    return {f"{kind}/mean": values.mean(1), f"{kind}/median": values.median(1).values,
            f"{kind}/variance": values.var(1, correction=0)}


def run_weight_statistics(run) -> pd.DataFrame:
    """(member, step, name, value) rows of STATISTICS for every member at every step with saved weights."""
    from ..rebuild import member_models

    frames = []
    for ensemble, step in member_models(run):
        wide = weight_statistics(ensemble.model)
        wide.insert(0, "member", ensemble.ids)
        frames.append(wide.melt(id_vars="member", var_name="name").assign(step=step))
    if not frames:
        return pd.DataFrame(columns=["member", "step", "name", "value"])
    return pd.concat(frames, ignore_index=True)[["member", "step", "name", "value"]]
