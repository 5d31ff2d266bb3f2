"""Ensemble-native models: parameters carry a leading member axis [M, ...]."""

from __future__ import annotations

from torch import nn

from ..spec import MLPModel, TransformerModel
from .mlp import EnsembleMLP


def make_model(spec: MLPModel | TransformerModel, task, init_seeds: list[int],
               init_scales: list[float] | None = None) -> nn.Module:
    """Build the ensemble model of `spec` shaped for `task` (a `tasks.Task`), one member per init seed."""
    if isinstance(spec, MLPModel):
        return EnsembleMLP(spec, n_outputs=task.n_outputs, init_seeds=init_seeds, vocab_size=task.vocab_size,
                           n_positions=task.n_positions, n_inputs=task.n_inputs, init_scales=init_scales)
    from .transformer import EnsembleTransformer

    return EnsembleTransformer(spec, vocab_size=task.vocab_size, n_positions=task.n_positions,
                               n_outputs=task.n_outputs, init_seeds=init_seeds, init_scales=init_scales)


__all__ = ["EnsembleMLP", "make_model"]
