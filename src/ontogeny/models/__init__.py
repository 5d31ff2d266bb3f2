"""Ensemble-native models: parameters carry a leading member axis [M, ...].

Each model module defines its spec (a `spec.ModelSpec`), registers it in `spec.MODELS` and builds its module.
"""

from __future__ import annotations

from torch import nn

from ..spec import ModelSpec
from .mlp import EnsembleMLP, MLPSpec
from .transformer import EnsembleTransformer, TransformerSpec


def make_model(spec: ModelSpec, task, init_seeds: list[int], init_scales: list[float] | None = None) -> nn.Module:
    """Build the ensemble model of `spec` shaped for `task` (a `tasks.Task`), one member per init seed."""
    return spec.build(task, init_seeds, init_scales)


__all__ = ["EnsembleMLP", "EnsembleTransformer", "MLPSpec", "TransformerSpec", "make_model"]
