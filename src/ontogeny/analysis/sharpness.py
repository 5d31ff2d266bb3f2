"""Sharpness over training: the top eigenvalue of each member's training-loss Hessian at saved checkpoints.

Power iteration on Hessian-vector products (double backward through the ensemble's summed loss). The summed loss
has a block-diagonal Hessian, one block per member, so one product serves every member at once; each member's
vector is normalized on its own. Cohen et al. 2021 ("Gradient descent on neural networks typically occurs at the
edge of stability") compare this sharpness with 2 / lr under SGD: full-batch gradient descent drives it up to that
value and keeps it there. For Adam, Cohen et al. 2022 ("Adaptive gradient methods at the edge of stability") use
the preconditioned sharpness, the top eigenvalue of P^-1 H with Adam's P = sqrt(v_hat) + eps, which settles at
(2 + 2 beta1) / ((1 - beta1) lr); P is saved with the weights. Written by hand: PyHessian and friends take one
model, not an ensemble's blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from ..rebuild import run_ensembles
from ..evaluation import probes
from ..store import Run


def top_eigenvalues(member_losses: Callable[[], torch.Tensor], params: list[torch.Tensor], *, iterations: int = 100,
                    tol: float = 1e-3, seed: int = 0,
                    scale: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The top (most positive) Hessian eigenvalue of each member's loss, by power iteration; with `scale` (one
    tensor per parameter, D), of D H D instead: D = P^(-1/2) gives the eigenvalues of P^(-1) H.

    `member_losses()` returns the losses [M] (member m's loss depends on slice m of every parameter [M, ...]).
    Power iteration finds the eigenvalue of largest magnitude; where that is negative or does not settle, a second
    pass on H + |lambda|max I finds the top one. Returns (eigenvalues [M] float64, converged [M] bool: the last
    vector is an eigenvector to `tol`, |H v - lambda v| <= tol |lambda|, so lambda is off by ~tol^2 |lambda|).
    """
    loss = member_losses().sum()
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def hessian_times(vectors):
        if scale is not None:
            vectors = [d * v for d, v in zip(scale, vectors)]
        products = torch.autograd.grad(grads, params, grad_outputs=vectors, retain_graph=True)  # H v, per block
        return products if scale is None else [d * p for d, p in zip(scale, products)]

    largest, magnitude, converged = _power_iteration(hessian_times, params, None, iterations, tol, seed)
    redo = ~converged | (largest < 0)  # a negative or unsettled estimate: ReLU nets have +-lambda pairs
    if bool(redo.any()):  # H + |lambda|max I has the same top eigenvector, now also the largest in magnitude
        shifted, _, settled = _power_iteration(hessian_times, params, -magnitude, iterations, tol, seed + 1)
        largest = torch.where(redo, shifted - magnitude, largest)
        converged = torch.where(redo, settled, converged)
    return largest, converged


def _power_iteration(hessian_times, params, shift, iterations, tol, seed):
    """Power iteration on each member's block of (H - shift I): the Rayleigh quotient [M] (float64), the magnitude
    |(H - shift) v| of the last iterate [M] (the largest |eigenvalue| even where +-pairs keep the quotient from
    settling) and whether v is an eigenvector to `tol`: |(H - shift) v - quotient v| <= tol |quotient| [M]."""
    gen = torch.Generator().manual_seed(seed)
    vectors = _normalized([torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params])
    estimate = torch.full((params[0].shape[0],), float("nan"), dtype=torch.float64)
    converged = torch.zeros(params[0].shape[0], dtype=torch.bool)
    for _ in range(iterations):
        products = [p.detach() for p in hessian_times(vectors)]
        if shift is not None:
            products = [p - _per_member(shift.to(p.dtype), p) * v for p, v in zip(products, vectors)]
        rayleigh = _member_dot(vectors, products)  # v.(H - shift) v with |v| = 1 per member
        # an eigenvector once (H - shift) v = lambda v: a settled quotient alone is not enough (with +-lambda pairs
        # the quotient of a mix of the two stays put)
        residual = [p - _per_member(rayleigh, p) * v for p, v in zip(products, vectors)]
        converged = (_member_dot(residual, residual).sqrt() <= tol * rayleigh.abs()).cpu()
        estimate = rayleigh.double().cpu()
        if bool(converged.all()):
            break
        vectors = _normalized(products)
    magnitude = _member_dot(products, products).sqrt().double().cpu()
    return estimate, magnitude, converged


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device).view(-1, *([1] * (like.dim() - 1)))


def _member_dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).flatten(1).sum(1) for x, y in zip(a, b))  # [M]


def _normalized(vectors: list[torch.Tensor]) -> list[torch.Tensor]:
    norms = _member_dot(vectors, vectors).sqrt().clamp_min(1e-30)  # [M]
    return [v / _per_member(norms, v) for v in vectors]


def run_sharpness(run: Run, *, steps: list[int] | None = None, iterations: int = 200, tol: float = 1e-3,
                  random_state: int = 0) -> pd.DataFrame:
    """Sharpness of every member at every checkpoint with saved weights (or at `steps`), on that step's training
    batch (for full-batch tasks, the whole training set): columns member, step, sharpness, preconditioned_sharpness
    (AdamW: of P^-1 H with P = sqrt(v_hat) + eps, saved with the weights; NaN at step 0 and for SGD), lr (with its
    schedule), edge, converged. `edge` is where each optimizer's sharpness settles (Cohen et al. 2021 and 2022):
    (2 + 2 momentum) / lr for SGD against `sharpness`, (2 + 2 beta1) / ((1 - beta1) lr) for AdamW against
    `preconditioned_sharpness`."""
    rows = []
    for ensemble in run_ensembles(run):
        task, model, group = ensemble.task, ensemble.model, ensemble.members
        for step in ensemble.saved_steps():
            if steps is not None and step not in steps:
                continue
            preconditioner = ensemble.load(step)
            batch = task.batch(int(step))
            params = list(model.parameters())

            def member_losses():
                loss, _ = probes.example_losses(task.loss, model(batch.x), batch.y, with_correct=False)
                return probes.masked_mean(loss, batch.weight)  # [M]

            estimates = {}
            with _twice_differentiable_attention():
                estimates["sharpness"] = top_eigenvalues(member_losses, params, iterations=iterations, tol=tol,
                                                         seed=random_state)
                if preconditioner is not None:
                    estimates["preconditioned_sharpness"] = top_eigenvalues(
                        member_losses, params, iterations=iterations, tol=tol, seed=random_state,
                        scale=[p.rsqrt() for p in preconditioner])
            for index, m in enumerate(group):
                optim = m.spec.optim
                lr = optim.lr * optim.lr_factor(int(step), run.spec.steps)
                if optim.name == "sgd":
                    edge = (2 + 2 * optim.momentum) / lr if lr > 0 else np.nan
                else:
                    edge = (2 + 2 * optim.betas[0]) / ((1 - optim.betas[0]) * lr) if lr > 0 else np.nan
                row = {"member": m.member, "step": int(step), "preconditioned_sharpness": np.nan, "lr": lr,
                       "edge": edge}
                for name, (values, converged) in estimates.items():
                    row[name] = values[index].item()
                    row["converged"] = bool(converged[index]) and row.get("converged", True)
                rows.append(row)
    return pd.DataFrame(rows, columns=["member", "step", "sharpness", "preconditioned_sharpness", "lr", "edge",
                                       "converged"])


def _twice_differentiable_attention():
    """The fused attention kernels have no double backward; the math one does (same results to float tolerance)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)
