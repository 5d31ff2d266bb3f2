"""Sharpness over training: the top eigenvalue of each member's training-loss Hessian at saved checkpoints.

Power iteration on Hessian-vector products (double backward through the ensemble's summed loss). The summed loss
has a block-diagonal Hessian, one block per member, so one product serves every member at once; each member's
vector is normalized on its own. Cohen et al. 2021 ("Gradient descent on neural networks typically occurs at the
edge of stability") compare this sharpness with 2 / lr under SGD: full-batch gradient descent drives it up to that
value and keeps it there. Written by hand: PyHessian and friends take one model, not an ensemble's blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from ..models import make_model
from ..record import probes
from ..store import Run
from ..tasks import make_task
from ..train.members import ensembles, expand
from ..train.optim import lr_factor


def top_eigenvalues(member_losses: Callable[[], torch.Tensor], params: list[torch.Tensor], *, iterations: int = 100,
                    tol: float = 1e-3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The top (most positive) Hessian eigenvalue of each member's loss, by power iteration.

    `member_losses()` returns the losses [M] (member m's loss depends on slice m of every parameter [M, ...]).
    Power iteration finds the eigenvalue of largest magnitude; where that is negative or does not settle, a second
    pass on H + |lambda|max I finds the top one. Returns (eigenvalues [M] float64, converged [M] bool: the last
    vector is an eigenvector to `tol`, |H v - lambda v| <= tol |lambda|, so lambda is off by ~tol^2 |lambda|).
    """
    loss = member_losses().sum()
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def hessian_times(vectors):
        return torch.autograd.grad(grads, params, grad_outputs=vectors, retain_graph=True)  # H v, block by block

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
    batch (for full-batch tasks, the whole training set): columns member, step, sharpness, lr (with its schedule),
    edge (2 / lr for SGD, else NaN), converged."""
    spec, checkpoints = run.spec, run.checkpoints()
    if steps is not None:
        checkpoints = checkpoints[checkpoints.step.isin(steps)]
    rows = []
    for group in ensembles(expand(spec)):
        task = make_task([m.spec.task for m in group], [m.data_seed for m in group], spec.record.max_probe_examples)
        model = make_model(spec.model, task, [m.init_seed for m in group], [m.spec.model.init_scale for m in group])
        saved = checkpoints[checkpoints.member.isin([m.member for m in group])]
        for step, files in saved.groupby("step"):
            if len(files) < len(group):  # a member without weights here (diverged or still being written)
                continue
            paths = files.set_index("member").path
            load_member_weights(model, [run.path / paths[m.member] for m in group])
            batch = task.batch(int(step))
            params = list(model.parameters())

            def member_losses():
                loss, _ = probes.example_losses(task.loss, model(batch.x), batch.y, with_correct=False)
                return probes.masked_mean(loss, batch.weight)  # [M]

            with _twice_differentiable_attention():
                values, converged = top_eigenvalues(member_losses, params, iterations=iterations, tol=tol,
                                                    seed=random_state)
            for m, value, settled in zip(group, values.tolist(), converged.tolist()):
                lr = m.spec.optim.lr * lr_factor(m.spec.optim, int(step), spec.steps)
                rows.append({"member": m.member, "step": int(step), "sharpness": value, "lr": lr,
                             "edge": 2 / lr if m.spec.optim.name == "sgd" and lr > 0 else np.nan,
                             "converged": settled})
    return pd.DataFrame(rows, columns=["member", "step", "sharpness", "lr", "edge", "converged"])


def load_member_weights(model: torch.nn.Module, paths: list) -> None:
    """Stack each member's saved weights (one safetensors file per member) into the ensemble's parameters."""
    saved = [load_file(str(path)) for path in paths]
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.stack([weights[name] for weights in saved]))


def _twice_differentiable_attention():
    """The fused attention kernels have no double backward; the math one does (same results to float tolerance)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)
