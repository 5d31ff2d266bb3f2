"""ontogeny: train many seeds as one ensemble, record dense histories, find what the loss curve hides."""

__version__ = "0.1.0"

import importlib

from .exceptions import OntogenyError, ResumeError, SpecError, StoreError  # noqa: F401 (in __all__ below)

# Everything else loads on first use (PEP 562), so `ontogeny --help` does not wait for torch: {name: (module, attr)}
_LAZY = {
    "Optim": (".spec", "Optim"), "Record": (".spec", "Record"), "Spec": (".spec", "Spec"),
    "load_spec": (".spec", "load_spec"), "recipe_names": (".spec", "recipe_names"),
    "ModularTask": (".tasks", "ModularTask"), "MultitaskParityTask": (".tasks", "MultitaskParityTask"),
    "SparseParityTask": (".tasks", "SparseParityTask"),
    "MLPModel": (".models", "MLPModel"), "TransformerModel": (".models", "TransformerModel"),
    "Run": (".store", "Run"), "open": (".store", "open_run"),
    "log_spaced": (".evaluation.schedule", "log_spaced"),
    "ProbeSet": (".probe_sets", "ProbeSet"), "Recorder": (".recorder", "Recorder"),
    "ingest": (".suites", "ingest"), "run": (".train.run", "run"), "train_saes": (".sae", "train_run_saes"),
    "analysis": (".analysis", None),  # og.analysis.analyze, og.analysis.TransitionDetector, ...
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ontogeny' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module, __name__)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = sorted(["OntogenyError", "ResumeError", "SpecError", "StoreError", *_LAZY])
