"""Sparse autoencoders and transcoders on a run's models, several seeds each, trained as one ensemble."""

from ..analysis.sae import agreement_summary
from .export import to_sae_lens
from .run import train_run_saes

__all__ = ["agreement_summary", "to_sae_lens", "train_run_saes"]
