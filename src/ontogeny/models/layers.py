"""Building blocks shared by the ensemble-native models.

Every parameter carries a leading member axis `[M, ...]`. Member m's initial values are drawn from its own
generator (`seeds.generator("init", init_seed)`), one parameter after another in a fixed order, so they depend
only on its init seed, never on its position in the ensemble or the ensemble's size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..seeds import generator


def init_generators(init_seeds: list[int]) -> list[torch.Generator]:
    """Return one init generator per member."""
    return [generator("init", seed) for seed in init_seeds]


def member_normal(generators: list[torch.Generator], shape: tuple[int, ...], std: torch.Tensor | float) -> nn.Parameter:
    """Return a parameter `[M, *shape]` with member m drawn from N(0, std[m]^2) using `generators[m]`."""
    draws = torch.stack([torch.randn(shape, generator=g) for g in generators])  # [M, *shape]
    std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, *([1] * len(shape)))
    return nn.Parameter(draws * std)


def member_constant(n_members: int, shape: tuple[int, ...], value: float = 0.0) -> nn.Parameter:
    """Return a parameter `[M, *shape]` filled with `value` (biases, LayerNorm gains)."""
    return nn.Parameter(torch.full((n_members, *shape), float(value)))


def fan_in_std(fan_in: int, init_scales: torch.Tensor) -> torch.Tensor:
    """Per-member std `init_scale / sqrt(fan_in)`, shape [M]."""
    return init_scales / math.sqrt(fan_in)


class _SharedInputMatmul(torch.autograd.Function):
    """x [B, n] shared by every member @ w [M, n, k] -> [M, B, k], as a bmm over a stride-0 view of x.

    By hand only for the weight gradient: autograd's bmm backward multiplies by the transposed stride-0 view, which
    MKL runs about 1.5x slower than by a contiguous x^T expanded (measured at 512 members, benchmarks/README.md).
    """

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return torch.bmm(x.expand(w.shape[0], *x.shape), w)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        x, w = x.to(grad.dtype), w.to(grad.dtype)  # under autocast the forward ran in bfloat16: so does this
        x_t = x.t().contiguous()  # [n, B]
        grad_w = torch.bmm(x_t.expand(w.shape[0], *x_t.shape), grad) if ctx.needs_input_grad[1] else None
        grad_x = torch.bmm(grad, w.transpose(1, 2)).sum(0) if ctx.needs_input_grad[0] else None
        return grad_x, grad_w


def shared_input_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [B, n] (the same batch for every member) @ w [M, n, k] -> [M, B, k]."""
    return _SharedInputMatmul.apply(x, w)


class _MemberDot(torch.autograd.Function):
    """h [M, B, k] . w [M, k] -> [M, B]: a one-output layer as a product-sum (a width-1 bmm is ~3x slower on a CPU),
    optionally after a ReLU applied to h in place.

    By hand for the backward: autograd's would write h * grad in full before summing it (a bmm reads h once), and
    with the ReLU inside, the gradient it writes is masked in place instead of by a second full-size tensor.
    """

    @staticmethod
    def forward(ctx, h, w, relu):
        if relu:
            ctx.mark_dirty(h)
            h = torch.relu_(h)
        ctx.relu = relu
        ctx.set_materialize_grads(False)  # h's own gradient is almost never used: do not write a zero-filled one
        w = w.to(h.dtype)  # h is bfloat16 under autocast (a matmul's result); the weights are float32
        ctx.save_for_backward(h, w)
        return h, torch.linalg.vecdot(h, w[:, None])

    @staticmethod
    def backward(ctx, grad_h_out, grad):  # grads of the outputs (h, [M, B]); h's is None unless something read h
        h, w = ctx.saved_tensors
        grad_h = grad[..., None] * w[:, None] if grad is not None and ctx.needs_input_grad[0] else None  # [M, B, k]
        if grad_h_out is not None:  # in a double backward, the weight gradient's use of h sends one here
            grad_h = grad_h_out if grad_h is None else grad_h + grad_h_out
        if ctx.relu and grad_h is not None:  # relu(z) > 0 exactly where z > 0
            if torch.is_grad_enabled():  # a double backward (Hessian-vector products) cannot use out= ops
                grad_h = torch.ops.aten.threshold_backward(grad_h, h, 0)
            else:
                torch.ops.aten.threshold_backward.grad_input(grad_h, h, 0, grad_input=grad_h)
        grad_w = torch.bmm(grad[:, None], h)[:, 0] if grad is not None and ctx.needs_input_grad[1] else None
        return grad_h, grad_w, None


def member_dot(h: torch.Tensor, w: torch.Tensor, *, relu: bool = False) -> torch.Tensor:
    """Each member's features [M, B, k] dotted with its own vector [M, k] -> [M, B]; with `relu`, relu(h) (h is
    overwritten, so it must be a fresh result no one else reads)."""
    return _MemberDot.apply(h, w, relu)[1]


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return torch.relu(x)
    if name == "gelu":
        return nn.functional.gelu(x)
    if name == "square":  # Gromov 2023: x^2 makes modular addition solvable by a two-layer net in closed form
        return x * x
    raise ValueError(f"unknown activation {name!r}")


class _EmbeddingSum(torch.autograd.Function):
    """Rows of table [R, d] summed over each bag of indices [N, P] -> [N, d] (embedding_bag, mode "sum").

    By hand for the backward: one `index_add_` per bag position, about 3x faster on a CPU than embedding_bag's own
    backward (which sorts the indices) and than autograd's for indexing (an accumulating `index_put_`); each row of
    the gradient still adds its terms in index order, so a member's gradient does not depend on the ensemble's size.
    """

    @staticmethod
    def forward(ctx, table, bags):
        ctx.save_for_backward(bags)
        ctx.rows = table.shape[0]
        return nn.functional.embedding_bag(bags, table, mode="sum")

    @staticmethod
    def backward(ctx, grad):  # grad [N, d]
        (bags,) = ctx.saved_tensors
        grad_table = grad.new_zeros(ctx.rows, grad.shape[1])
        for position in range(bags.shape[1]):
            grad_table.index_add_(0, bags[:, position], grad)
        return grad_table, None


def member_lookup(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Each member's rows of its own table, summed over the last axis of `rows`: table [M, R, d], rows [B, P] (the
    same for every member) or [M, B, P] int64 -> [M, B, d]."""
    n_members, n_rows, d = table.shape
    offsets = torch.arange(n_members, device=rows.device).view(-1, 1, 1) * n_rows  # into the flattened table
    bags = (rows.expand(n_members, *rows.shape[-2:]) + offsets).flatten(0, 1)  # [M * B, P]
    return _EmbeddingSum.apply(table.reshape(n_members * n_rows, d), bags).view(n_members, -1, d)


def embed_tokens(table: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Look up per-member embeddings: table [M, V, d], tokens [B, T] (shared) or [M, B, T] -> [M, B, T, d]."""
    *_, batch, positions = tokens.shape
    return member_lookup(table, tokens.flatten(-2)[..., None]).view(table.shape[0], batch, positions, -1)
