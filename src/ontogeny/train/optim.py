"""Optimizers whose hyperparameters are per member (`[M]`-shaped), plus per-member clipping and lr schedules.

Written by hand because torch.optim takes one learning rate per parameter group, not one per slice of a
tensor. The update follows torch.optim.AdamW / SGD line for line (tests/test_optim.py holds it to them).
"""

from __future__ import annotations

import itertools
import math

import torch

from ..spec import OptimSpec


def _per_member(values, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32, device=like.device)


class EnsembleOptimizer:
    """AdamW or SGD over ensemble parameters `[M, ...]` with `lr`, `weight_decay` of shape [M].

    The parameters and the optimizer's state live in buffers [M, P] (each parameter a view of its own columns). On a
    GPU (`fused`) the gradients are gathered into one [M, P] tensor per step, so that clipping and an update are a
    handful of operations over every weight at once instead of ~15 per parameter tensor: what bounds a small model's
    step there is how many operations it launches (a 6-layer transformer has 77 parameter tensors). On a CPU, where
    gathering costs a pass over memory that launches do not repay (parity: 1.91 against 1.56 ms per step), the same
    operations run on each parameter's columns. Elementwise, the update is the same either way.
    """

    def __init__(self, params: list[torch.Tensor], spec: OptimSpec, *, lr: list[float], weight_decay: list[float],
                 fused: bool | None = None):
        self.params, self.spec = list(params), spec
        self.n_members = self.params[0].shape[0]
        self.sizes = [p[0].numel() for p in self.params]
        self.columns = [slice(end - size, end) for size, end in zip(self.sizes, itertools.accumulate(self.sizes))]
        self.flat = torch.cat([p.detach().reshape(self.n_members, -1) for p in self.params], 1)  # [M, P]
        for param, columns in zip(self.params, self.columns):
            param.data = self.flat[:, columns].view(param.shape)  # the parameter now lives in its columns of `flat`
        self.fused = self.flat.device.type != "cpu" if fused is None else fused
        self.lr = _per_member(lr, self.flat)  # [M]
        self.weight_decay = _per_member(weight_decay, self.flat)  # [M]
        self.decays = any(w > 0 for w in weight_decay)  # skip the decay terms when all are 0 (a hot path)
        self.steps = 0
        self.count: torch.Tensor | None = None  # the step count on the device, for a replayed CUDA graph (graphs.py)
        self.state: dict[str, torch.Tensor] = {}  # each [M, P]: exp_avg, exp_avg_sq (AdamW) or momentum_buffer
        self.grad: torch.Tensor | None = None  # [M, P], gathered by `gather_grads`

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None
        self.grad = None

    @torch.no_grad()
    def gather_grads(self) -> torch.Tensor:
        """The parameters' gradients as one [M, P] tensor (zeros for a parameter without one), gathered once."""
        if self.grad is None:
            self.grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(self.n_members, -1)
                                   for p in self.params], 1)
        return self.grad

    def _grads(self) -> list[tuple[slice, torch.Tensor]]:
        """(columns, gradient [M, n]) to update: all columns at once (fused), else each parameter that has one."""
        if self.fused:
            return [(slice(None), self.gather_grads())]
        return [(columns, p.grad.reshape(self.n_members, -1)) for p, columns in zip(self.params, self.columns)
                if p.grad is not None]

    @torch.no_grad()
    def grad_norms(self) -> torch.Tensor:
        """Per-member global gradient norm over all parameters -> [M]."""
        return torch.stack([grad.square().sum(1) for _, grad in self._grads()]).sum(0).sqrt()

    @torch.no_grad()
    def clip(self, max_norm: torch.Tensor, norms: torch.Tensor) -> None:
        """Scale each member's gradient to at most `max_norm[m]` (0: no clipping), as torch.nn.utils.clip_grad_norm_."""
        scale = torch.where(max_norm > 0, (max_norm / (norms + 1e-6)).clamp(max=1.0), torch.ones_like(norms))  # [M]
        for _, grad in self._grads():
            grad.mul_(scale[:, None])

    @torch.no_grad()
    def step(self, lr_factor: float | torch.Tensor = 1.0, active: torch.Tensor | None = None) -> None:
        """Apply one update with learning rate `lr * lr_factor` (a number, or a 0-d tensor on the device); members
        where `active` is False stay frozen."""
        if all(p.grad is None for p in self.params):
            return
        self.steps += 1
        if self.count is not None:
            self.count += 1
        if not self.state:
            names = ("exp_avg", "exp_avg_sq") if self.spec.name == "adamw" else ("momentum_buffer",) * bool(
                self.spec.momentum)
            self.state = {name: torch.zeros_like(self.flat) for name in names}  # zeros: the same as torch's start
        lr = (self.lr * lr_factor)[:, None]  # [M, 1]
        keep = active[:, None] if active is not None else None  # [M, 1]
        if self.fused and any(p.grad is None for p in self.params):  # a parameter without a gradient keeps its weights
            missing = torch.cat([torch.full((size,), p.grad is None, device=self.flat.device)
                                 for p, size in zip(self.params, self.sizes)])  # [P]
            keep = ~missing[None] if keep is None else keep & ~missing[None]
        for columns, grad in self._grads():
            param, state = self.flat[:, columns], {name: value[:, columns] for name, value in self.state.items()}
            if keep is not None:
                mask = keep if keep.shape[1] == 1 else keep[:, columns]
                grad = torch.where(mask, grad, torch.zeros_like(grad))
                before = param.clone()
            if self.spec.name == "adamw":
                self._adamw(param, grad, state, lr)
            else:
                self._sgd(param, grad, state, lr)
            if keep is not None:  # a frozen member's weights keep their exact old values (NaN-safe)
                param.copy_(torch.where(mask, param, before))

    def _adamw(self, param, grad, state, lr):
        beta1, beta2 = self.spec.betas
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        if self.decays:
            param.mul_(1 - lr * self.weight_decay[:, None])  # decoupled weight decay (Loshchilov & Hutter)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if self.count is None:
            bias_correction1 = 1 - beta1**self.steps
            bias_correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        else:  # read on the device (float64, as Python's): a graph's replays count there
            bias_correction1 = 1 - beta1**self.count
            bias_correction2_sqrt = (1 - beta2**self.count).sqrt()
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.spec.eps)
        param.addcmul_(torch.div(exp_avg, denom, out=denom), lr / bias_correction1, value=-1)

    def _sgd(self, param, grad, state, lr):
        if self.decays:
            grad = torch.addcmul(grad, param, self.weight_decay[:, None])  # torch.optim.SGD's coupled L2 decay
        if self.spec.momentum:  # from a zero buffer, the first step's buffer is the gradient, as torch.optim's
            grad = state["momentum_buffer"].mul_(self.spec.momentum).add_(grad)
        param.addcmul_(grad, lr, value=-1)  # in place: no temporary the size of the weights

    def preconditioner(self) -> list[torch.Tensor] | None:
        """AdamW's diagonal preconditioner now, sqrt(v_hat) + eps per parameter (what its next update divides by,
        bias correction included); None for SGD or before the first step."""
        if self.spec.name != "adamw" or not self.steps or "exp_avg_sq" not in self.state:
            return None
        correction = math.sqrt(1 - self.spec.betas[1] ** self.steps)
        flat = (self.state["exp_avg_sq"].sqrt() / correction).add_(self.spec.eps)
        return self._per_parameter(flat)

    def _per_parameter(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """[M, P] -> one tensor per parameter, shaped like it."""
        return [flat[:, columns].reshape(p.shape) for p, columns in zip(self.params, self.columns)]

    def state_dict(self) -> dict:
        """As saved before the flat buffer (a list of per-parameter dicts), so runs resume across versions."""
        per_parameter = {key: self._per_parameter(value) for key, value in self.state.items()}
        return {"steps": self.steps,
                "state": [{key: values[i].clone() for key, values in per_parameter.items()}
                          for i in range(len(self.params))]}

    def load_state_dict(self, saved: dict) -> None:
        self.steps = saved["steps"]
        keys = {key for entry in saved["state"] for key in entry}
        self.state = {key: torch.cat([entry[key].to(self.flat.device).reshape(self.n_members, -1)
                                      if key in entry else torch.zeros((self.n_members, size), device=self.flat.device)
                                      for entry, size in zip(saved["state"], self.sizes)], 1) for key in keys}
