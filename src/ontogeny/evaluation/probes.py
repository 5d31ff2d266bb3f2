"""Probes: pure functions from a model (and data) to per-member measurements, `[M]` or `[M, N]` tensors."""

from __future__ import annotations

import torch
from torch import nn


def example_losses(kind: str, logits: torch.Tensor, y: torch.Tensor,
                   with_correct: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-example loss and correctness: logits [M, B, C], y [M, B] or [B] -> (loss [M, B], correct [M, B]);
    correct is None without `with_correct` (training steps between checkpoints skip the argmax).
    Per-position logits [M, B, T, C] with y [M, B, T] or [B, T] are flattened to B*T examples; a target of
    `IGNORE` (-100) has loss 0 and is never correct."""
    logits = logits.float()  # losses in float32 when the model ran in bfloat16
    if logits.dim() == 4:
        logits, y = logits.flatten(1, 2), y.flatten(-2)  # [M, B*T, C], [M, B*T] or [B*T]
    members, batch, classes = logits.shape
    y = y.expand(members, batch)
    if kind == "hinge":  # Barak et al. 2022: labels +-1, one output
        out = logits[..., 0]  # [M, B]
        return torch.relu(1 - y * out), torch.sign(out) == y if with_correct else None
    loss = nn.functional.cross_entropy(logits.reshape(-1, classes), y.reshape(-1), reduction="none")
    return loss.view(members, batch), logits.argmax(-1) == y if with_correct else None


@torch.no_grad()
def weight_norms(model: nn.Module) -> dict[str, torch.Tensor]:
    """L2 norm of every parameter per member, {name: [M]}, plus 'total' over all of them."""
    norms = {name: p.detach().flatten(1).norm(dim=1) for name, p in model.named_parameters()}
    norms["total"] = torch.stack([n.square() for n in norms.values()]).sum(0).sqrt()
    return norms


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over examples of values [M, N] where mask [M, N] (or everywhere) -> [M] (NaN where empty)."""
    if mask is None:
        return values.float().mean(1)
    mask = mask.to(values.device)
    return (values.float() * mask).sum(1) / mask.sum(1)
