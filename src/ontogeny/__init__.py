"""ontogeny: train many seeds as one ensemble, record dense histories, find what the loss curve hides."""

__version__ = "0.1.0"

from .exceptions import OntogenyError, ResumeError, SpecError, StoreError
from .spec import Optim, Record, Spec, load_spec, recipe_names
from .tasks import ModularTask, MultitaskParityTask, SparseParityTask
from .models import MLPModel, TransformerModel
from .store import Run, open_run as open
from .record.schedule import log_spaced
from .recorder import ProbeSet, Recorder
from .ingest import ingest
from .train.run import run
from . import analysis  # noqa: E402  (og.analysis.analyze, og.analysis.TransitionDetector, ...)

__all__ = [
    "MLPModel",
    "ModularTask",
    "MultitaskParityTask",
    "OntogenyError",
    "Optim",
    "ProbeSet",
    "Record",
    "Recorder",
    "ResumeError",
    "Run",
    "SparseParityTask",
    "Spec",
    "SpecError",
    "StoreError",
    "TransformerModel",
    "analysis",
    "ingest",
    "load_spec",
    "log_spaced",
    "open",
    "recipe_names",
    "run",
]
