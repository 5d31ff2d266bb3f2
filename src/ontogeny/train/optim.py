"""Optimizers whose hyperparameters are per member (`[M]`-shaped), plus per-member clipping and lr schedules.

Written by hand because torch.optim takes one learning rate per parameter group, not one per slice of a
tensor. The update follows torch.optim.AdamW / SGD line for line (tests/test_optim.py holds it to them).
"""

from __future__ import annotations

import math

import torch

from ..spec import OptimSpec


def _per_member(values, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32, device=like.device)


def _view(vector: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """[M] -> [M, 1, ..., 1] broadcastable against `param`."""
    return vector.view(-1, *([1] * (param.dim() - 1)))


class EnsembleOptimizer:
    """AdamW or SGD over ensemble parameters `[M, ...]` with `lr`, `weight_decay` of shape [M]."""

    def __init__(self, params: list[torch.Tensor], spec: OptimSpec, *, lr: list[float], weight_decay: list[float]):
        self.params, self.spec = list(params), spec
        self.lr = _per_member(lr, self.params[0])  # [M]
        self.weight_decay = _per_member(weight_decay, self.params[0])  # [M]
        self.decays = any(w > 0 for w in weight_decay)  # skip the decay terms when all are 0 (a hot path)
        self.steps = 0
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.params]

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self, lr_factor: float = 1.0, active: torch.Tensor | None = None) -> None:
        """Apply one update with learning rate `lr * lr_factor`; members where `active` is False stay frozen."""
        self.steps += 1
        lr = self.lr * lr_factor  # [M]
        for param, state in zip(self.params, self.state):
            if param.grad is None:
                continue
            grad = param.grad
            if active is not None:
                grad = torch.where(_view(active, grad), grad, torch.zeros_like(grad))
                before = param.detach().clone()
            if self.spec.name == "adamw":
                self._adamw(param, grad, state, lr)
            else:
                self._sgd(param, grad, state, lr)
            if active is not None:  # a frozen member's slice keeps its exact old value (NaN-safe)
                param.copy_(torch.where(_view(active, param), param, before))

    def _adamw(self, param, grad, state, lr):
        beta1, beta2 = self.spec.betas
        if not state:
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        if self.decays:
            param.mul_(1 - _view(lr * self.weight_decay, param))  # decoupled weight decay (Loshchilov & Hutter)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.spec.eps)
        param.addcmul_(torch.div(exp_avg, denom, out=denom), _view(lr / bias_correction1, param), value=-1)

    def _sgd(self, param, grad, state, lr):
        if self.decays:
            grad = torch.addcmul(grad, param, _view(self.weight_decay, param))  # torch.optim.SGD's coupled L2 decay
        if self.spec.momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.clone()
            else:
                state["momentum_buffer"].mul_(self.spec.momentum).add_(grad)
            grad = state["momentum_buffer"]
        param.addcmul_(grad, _view(lr, param), value=-1)  # in place: no temporary the size of the weights

    def preconditioner(self) -> list[torch.Tensor] | None:
        """AdamW's diagonal preconditioner now, sqrt(v_hat) + eps per parameter (what its next update divides by,
        bias correction included); None for SGD or before the first step."""
        if self.spec.name != "adamw" or not self.steps or any("exp_avg_sq" not in state for state in self.state):
            return None
        correction = math.sqrt(1 - self.spec.betas[1] ** self.steps)
        return [(state["exp_avg_sq"].sqrt() / correction).add_(self.spec.eps) for state in self.state]

    def state_dict(self) -> dict:
        return {"steps": self.steps, "state": self.state}

    def load_state_dict(self, saved: dict) -> None:
        self.steps = saved["steps"]
        self.state = [{k: v.to(p.device) for k, v in s.items()} for s, p in zip(saved["state"], self.params)]


@torch.no_grad()
def grad_norms(params: list[torch.Tensor]) -> torch.Tensor:
    """Per-member global gradient norm over all parameters -> [M]."""
    squares = [p.grad.pow(2).flatten(1).sum(1) for p in params if p.grad is not None]
    return torch.stack(squares).sum(0).sqrt()


@torch.no_grad()
def clip_grads(params: list[torch.Tensor], max_norm: torch.Tensor, norms: torch.Tensor) -> None:
    """Scale each member's gradients to at most `max_norm[m]` (0: no clipping), as torch.nn.utils.clip_grad_norm_."""
    scale = torch.where(max_norm > 0, (max_norm / (norms + 1e-6)).clamp(max=1.0), torch.ones_like(norms))  # [M]
    for param in params:
        if param.grad is not None:
            param.grad.mul_(_view(scale, param.grad))
