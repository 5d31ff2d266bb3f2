"""ontogeny: train many seeds as one ensemble, record dense histories, find what the loss curve hides."""

__version__ = "0.1.0"

from .exceptions import OntogenyError, ResumeError, SpecError, StoreError
from .spec import (
    MLPModel,
    ModularTask,
    MultitaskParityTask,
    Optim,
    Record,
    SparseParityTask,
    Spec,
    TransformerModel,
    load_spec,
    recipe_names,
)
from .store import Run, open_run as open
from .train.run import run
from . import analysis  # noqa: E402  (og.analysis.analyze, og.analysis.TransitionDetector, ...)

__all__ = [
    "MLPModel",
    "ModularTask",
    "MultitaskParityTask",
    "OntogenyError",
    "Optim",
    "Record",
    "ResumeError",
    "Run",
    "SparseParityTask",
    "Spec",
    "SpecError",
    "StoreError",
    "TransformerModel",
    "analysis",
    "load_spec",
    "open",
    "recipe_names",
    "run",
]
